"""Dithered (randomized) lattice quantization, Choi et al. 2018: `dither`.

    dither:step=0.002                 scalar, one step, |error| <= step/2
    dither:bits=6,lattice=e8,seed=3   per-row min-max step, E8 lattice vectors of 8 weights

The seed is part of the spec, so it is stored in the file; the decoder regenerates the
same dither (kernels/dither.py) and subtracts it. The lattice points are coded as
integer streams by the spec's coder (order-0 ANS: universal for the i.i.d. symbols that
dithering produces).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import CoderSpec
from zoocodec.codecs.ans import Ans
from zoocodec.errors import ContainerError
from zoocodec.kernels import dither as K, uniform as U
from zoocodec.methods.arrays import from_float64, read_array
from zoocodec.methods.base import (
    STEP_OR_BITS,
    MethodSpec,
    Quantized,
    TensorData,
    check_step_or_bits,
    default_bits,
    nested_coder,
    register,
)
from zoocodec.registry import ints, one_of

STREAMS = ("head", "tail", "coset")


def matrix_view(shape: tuple[int, ...], per_row: bool) -> tuple[int, int]:
    """(rows, cols) of the 2-D view: one row per output channel, or one row for everything."""
    n = int(np.prod(shape))
    rows = shape[0] if (per_row and len(shape) >= 2 and n) else 1
    return rows, n // rows


@register
@dataclass(frozen=True)
class Dither(MethodSpec):
    name = "dither"
    version = 2
    upgrades = {1: nested_coder}
    ranges = {**STEP_OR_BITS, "lattice": one_of(*K.LATTICES), "seed": ints(0, 2**63 - 1, text="0..2**63-1")}
    steppable = True
    examples = ("dither:bits=6,lattice=e8,seed=3", "dither:step=0.01,lattice=d4")

    step: float | None = None
    bits: int | None = None
    lattice: str = "scalar"
    seed: int = 0
    coder: CoderSpec = Ans()

    def __post_init__(self):
        super().__post_init__()
        default_bits(self)

    def check(self) -> None:
        check_step_or_bits(self)

    def _steps(self, w2: np.ndarray) -> np.ndarray:
        if self.step is not None:
            return np.full(w2.shape[0], self.step, dtype=np.float64)
        steps = U.absmax_steps(w2, self.bits, per_channel=True, xp=np).astype(np.float32).astype(np.float64)
        return np.where(steps > 0, steps, 1.0)

    def _counts(self, rows: int, cols: int) -> dict[str, int]:
        n = K.LATTICES[self.lattice]
        vectors = rows * (K.padded_cols(cols, self.lattice) // n)
        if n == 1:
            return {"head": vectors, "tail": 0, "coset": 0}
        return {"head": vectors * (n - 1), "tail": vectors, "coset": vectors if self.lattice == "e8" else 0}

    def quantize(self, t: TensorData, xp=np) -> Quantized:
        shape = t.array.shape
        rows, cols = matrix_view(shape, per_row=self.bits is not None)
        w2 = t.float64().reshape(rows, cols)
        steps = self._steps(w2)
        v, u = K.quantize(w2, steps, self.lattice, self.seed, np)
        recon = from_float64(K.dequantize(v, u, steps, cols, self.lattice, np).reshape(shape), t.dtype)
        streams = dict(zip(STREAMS, K.to_symbols(v, self.lattice, np), strict=True))
        symbols = {k: s for k, s in streams.items() if self._counts(rows, cols)[k]}
        arrays = {"steps": steps.astype("<f4").tobytes()} if self.step is None else {}
        return Quantized(symbols, {"rows": rows}, arrays, recon)

    def dequantize(self, q, shape, dtype):
        rows, cols = matrix_view(tuple(shape), per_row=self.bits is not None)
        if q.side.get("rows") != rows:
            raise ContainerError(f"dither side info {q.side} does not match shape {tuple(shape)}")
        if self.step is None:
            steps = read_array(q.arrays, "steps", "<f4", rows, "dither")
            if not (steps > 0).all():
                raise ContainerError(f"dither: bad steps for shape {tuple(shape)}")
        else:
            steps = np.full(rows, self.step, dtype=np.float64)
        counts = self._counts(rows, cols)
        streams = [q.symbols[k].ravel() if counts[k] else np.zeros(0, np.int64) for k in STREAMS]
        if any(s.size != counts[k] for k, s in zip(STREAMS, streams, strict=True)):
            raise ContainerError(f"dither: stream sizes do not match shape {tuple(shape)}")
        if self.lattice == "e8" and streams[2].size and (streams[2].min() < 0 or streams[2].max() > 1):
            raise ContainerError("dither: E8 coset flags must be 0 or 1")
        n = K.LATTICES[self.lattice]
        vshape = (rows, K.padded_cols(cols, self.lattice) // n, n)
        v = K.from_symbols(*streams, vshape, self.lattice, np)
        u = K.dither(self.seed, rows * vshape[1], self.lattice, np).reshape(vshape)
        return from_float64(K.dequantize(v, u, steps, cols, self.lattice, np).reshape(shape), dtype)
