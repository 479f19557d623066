"""Magnitude pruning before any quantizer (Han et al.; NCTM): `prune`.

    prune:sparsity=0.9,then=uniform:step=0.002
    prune:sparsity=0.5,per_row=true,then=uniform:bits=6;per_tensor=false

`then` names the inner method as spec text whose own parameters are separated by ';'
(',' already separates prune's parameters). The zero mask is one symbol stream of 0/1
(rows x cols), coded by the spec's `coder`, by default `flags` (codecs/flags.py: per-row
density classes, about sum over classes of n_c H(p_c)). The inner method quantizes only
the kept weights: a 1-D vector of them (global pruning), or a rows x k matrix (per_row,
the same count kept in every row, so per-channel steps still apply); its symbol streams
and arrays are stored under `then.NAME`. A pruned tensor therefore costs the mask plus
(1 - sparsity) of the weights' symbols, and the inner quantizer never spends symbols on
the pruned zeros.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import CoderSpec
from zoocodec.codecs.flags import Flags
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels import prune as K
from zoocodec.methods.base import MethodSpec, Quantized, TensorData, inner_method, nested_text, register, spec_from_dict
from zoocodec.methods.dither import matrix_view
from zoocodec.registry import METHOD_TEXT, interval

INNER = "then."


@register
@dataclass(frozen=True)
class Prune(MethodSpec):
    name = "prune"
    version = 2
    # version 1 coded the mask's row classes with its `coder` (ans); the mask coder is `flags` since
    upgrades = {1: lambda params: {**params, "coder": {"coder": "flags", "version": 1}}}
    ranges = {"sparsity": interval(0, 1), "then": METHOD_TEXT}
    examples = ("prune:sparsity=0.75,per_row=true,then=dq:bits=6", "prune:sparsity=0.9,then=lossless")

    sparsity: float = 0.5
    then: str = "uniform"
    per_row: bool = False
    coder: CoderSpec = Flags()

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "then", nested_text(self.inner))

    inner = property(inner_method)

    def coder_for(self, stream):
        return self.inner.coder_for(stream[len(INNER):]) if stream.startswith(INNER) else self.coder

    def trellis(self, stream, shape):
        return self.inner.trellis(stream[len(INNER):], shape) if stream.startswith(INNER) else None

    def symbol_dtype(self, stream, dtype):
        return self.inner.symbol_dtype(stream[len(INNER):], dtype) if stream.startswith(INNER) else np.dtype(np.int64)

    def _view(self, shape) -> tuple[int, int]:
        return matrix_view(tuple(shape), per_row=self.per_row)

    def _kept_shape(self, shape, kept: int) -> tuple[int, ...]:
        rows, cols = self._view(shape)
        return (rows, kept // rows) if self.per_row and rows > 1 else (kept,)

    def quantize(self, t: TensorData, xp=np) -> Quantized:
        shape = t.array.shape
        rows, cols = self._view(shape)
        if self.per_row:
            mask = K.row_mask(np.abs(t.float64()).reshape(rows, cols), self.sparsity, np).reshape(shape)
        else:
            mask = K.magnitude_mask(t.float64(), self.sparsity, np)
        kept = int(mask.sum())
        values = t.array[mask].reshape(self._kept_shape(shape, kept))
        inner = self.inner.quantize(TensorData(t.name, t.dtype, values), xp)
        recon = np.zeros_like(t.array)
        recon[mask] = inner.recon.ravel()
        symbols = {"mask": mask.reshape(matrix_view(shape, per_row=True)).astype(np.int64)}
        symbols.update({INNER + k: v for k, v in inner.symbols.items()})
        arrays = {INNER + k: v for k, v in inner.arrays.items()}
        side = {"kept": kept, "then": inner.side, "then_spec": self.inner.to_dict()}
        return Quantized(symbols, side, arrays, recon)

    def dequantize(self, q, shape, dtype):
        n = int(np.prod(shape))
        rows, cols = self._view(shape)
        kept = q.side.get("kept")
        if not isinstance(kept, int) or not 0 <= kept <= n or (self.per_row and rows and kept % rows):
            raise ContainerError(f"prune: bad kept count {kept!r} for shape {tuple(shape)}")
        try:
            inner = spec_from_dict(q.side.get("then_spec"))
        except SpecError as e:
            raise ContainerError(f"prune: inner spec: {e}") from None
        if inner != self.inner:
            raise ContainerError(f"prune: inner spec {inner} does not match the method's {self.inner}")
        mask = q.symbols["mask"].ravel()
        if mask.size != n or (mask.size and (mask.min() < 0 or mask.max() > 1)):
            raise ContainerError(f"prune: the mask holds {mask.size} flags for {n} weights")
        mask = mask.astype(bool)
        if int(mask.sum()) != kept:
            raise ContainerError(f"prune: mask keeps {int(mask.sum())} weights, side info says {kept}")
        if not isinstance(q.side.get("then"), dict):
            raise ContainerError("prune: inner side info is missing")
        part = Quantized({k[len(INNER):]: v for k, v in q.symbols.items() if k.startswith(INNER)}, q.side["then"],
                         {k[len(INNER):]: v for k, v in q.arrays.items() if k.startswith(INNER)})
        values = inner.dequantize(part, self._kept_shape(shape, kept), dtype)
        out = np.zeros(n, dtype=values.dtype)
        out[mask] = values.ravel()
        return out.reshape(shape)
