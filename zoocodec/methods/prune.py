"""Magnitude pruning before any quantizer (Han et al.; NCTM): `prune`.

    prune:sparsity=0.9,then=uniform:step=0.002
    prune:sparsity=0.5,per_row=true,then=uniform:bits=6;per_tensor=false

`then` names the inner method as spec text whose own parameters are separated by ';'
(',' already separates prune's parameters). The zero mask is coded on its own, as packed
bits entropy-coded by the spec's coder (about 8 H(sparsity) bits per byte of 8 flags).
The inner method codes only the kept weights: a 1-D vector of them (global pruning), or a
rows x k matrix (per_row, the same count kept in every row, so per-channel steps still
apply). A pruned tensor therefore costs the mask plus (1 - sparsity) of the weights'
symbols, and the inner quantizer never spends symbols on the pruned zeros.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import symbol_coder
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels import prune as K
from zoocodec.methods.base import Encoded, MethodSpec, TensorData, parse_spec, register, spec_from_dict
from zoocodec.methods.dither import matrix_view


@register
@dataclass(frozen=True)
class Prune(MethodSpec):
    name = "prune"
    version = 1

    sparsity: float = 0.5
    then: str = "uniform"
    per_row: bool = False
    coder: str = "ans"

    def __post_init__(self):
        object.__setattr__(self, "then", str(self.inner).replace(",", ";"))

    @property
    def inner(self) -> MethodSpec:
        if not isinstance(self.then, str):
            raise SpecError(f"prune: then must be a method spec text, got {self.then!r}")
        spec = parse_spec(self.then.replace(";", ","))
        if isinstance(spec, Prune):
            raise SpecError("prune: the inner method cannot be prune again")
        return spec

    def validate(self) -> None:
        if not 0 <= self.sparsity <= 1:
            raise SpecError(f"prune: sparsity must be in [0, 1], got {self.sparsity}")
        symbol_coder(self.coder)

    def _view(self, shape) -> tuple[int, int]:
        return matrix_view(tuple(shape), per_row=self.per_row)

    def _kept_shape(self, shape, kept: int) -> tuple[int, ...]:
        rows, cols = self._view(shape)
        return (rows, kept // rows) if self.per_row and rows > 1 else (kept,)

    def encode(self, t: TensorData) -> Encoded:
        shape = t.array.shape
        rows, cols = self._view(shape)
        if self.per_row:
            mask = K.row_mask(np.abs(t.float64()).reshape(rows, cols), self.sparsity, np).reshape(shape)
        else:
            mask = K.magnitude_mask(t.float64(), self.sparsity, np)
        kept = int(mask.sum())
        values = t.array[mask].reshape(self._kept_shape(shape, kept))
        inner = self.inner.encode(TensorData(t.name, t.dtype, values))
        recon = np.zeros_like(t.array)
        recon[mask] = inner.recon.ravel()
        segments = {"mask": symbol_coder(self.coder)[0](K.pack(mask, np))}
        segments.update({"then." + k: v for k, v in inner.segments.items()})
        side = {"kept": kept, "then": inner.side, "then_spec": self.inner.to_dict()}
        return Encoded(side, segments, recon)

    def decode(self, side, segments, shape, dtype):
        n = int(np.prod(shape))
        rows, cols = self._view(shape)
        kept = side.get("kept")
        if not isinstance(kept, int) or not 0 <= kept <= n or (self.per_row and rows and kept % rows):
            raise ContainerError(f"prune: bad kept count {kept!r} for shape {tuple(shape)}")
        try:
            inner = spec_from_dict(side.get("then_spec"))
        except SpecError as e:
            raise ContainerError(f"prune: inner spec: {e}") from None
        if inner != self.inner:
            raise ContainerError(f"prune: inner spec {inner} does not match the method's {self.inner}")
        packed = symbol_coder(self.coder)[1](segments["mask"], -(-n // 8))
        if packed.size and (packed.min() < 0 or packed.max() > 255):
            raise ContainerError("prune: mask bytes out of range")
        mask = K.unpack(packed.astype(np.uint8), n, np)
        if int(mask.sum()) != kept:
            raise ContainerError(f"prune: mask keeps {int(mask.sum())} weights, side info says {kept}")
        inner_segments = {k[5:]: v for k, v in segments.items() if k.startswith("then.")}
        values = inner.decode(side.get("then"), inner_segments, self._kept_shape(shape, kept), dtype)
        out = np.zeros(n, dtype=values.dtype)
        out[mask] = values.ravel()
        return out.reshape(shape)
