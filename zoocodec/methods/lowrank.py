"""Low-rank approximation by truncated SVD (Gong et al.'s baseline): `lowrank`.

    lowrank:rank=32           keep 32 singular values, factors stored as fp16
    lowrank:energy=0.9,bits=8 smallest rank holding 90% of sum(s^2), factors quantized to
                              8 bits (one min-max step per rank component) and ANS-coded

The tensor's 2-D view is (shape[0], rest). The factors A = U sqrt(S), B = sqrt(S) V^T
are stored; the decoder returns A B, so the reconstruction is exactly what the factors
give (the encoder computes it the same way).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import CoderSpec
from zoocodec.codecs.ans import Ans
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels import lowrank as K, uniform as U
from zoocodec.methods.arrays import from_float64, read_array
from zoocodec.methods.base import MethodSpec, Quantized, TensorData, nested_coder, register
from zoocodec.methods.dither import matrix_view
from zoocodec.registry import interval, ints


@register
@dataclass(frozen=True)
class LowRank(MethodSpec):
    name = "lowrank"
    version = 2
    upgrades = {1: nested_coder}
    ranges = {"rank": ints(0), "energy": interval(0, 1, "(]"), "bits": ints(2, 16)}
    examples = ("lowrank:rank=3,bits=8",)

    rank: int | None = None
    energy: float | None = None
    bits: int | None = None
    coder: CoderSpec = Ans()

    def __post_init__(self):
        super().__post_init__()
        if self.rank is None and self.energy is None:
            object.__setattr__(self, "energy", 0.9)

    def check(self) -> None:
        if self.rank is not None and self.energy is not None:
            raise SpecError("lowrank: give either rank or energy, not both")

    def _store(self, q: Quantized, key: str, m: np.ndarray) -> np.ndarray:
        """One factor, rank components as rows, into `q`; returns the values the decoder will see."""
        if self.bits is None:
            half = m.astype("<f2")
            q.arrays[key] = half.tobytes()
            return half.astype(np.float64)
        steps = U.absmax_steps(m, self.bits, per_channel=True, xp=np).astype(np.float32).astype(np.float64)
        steps = np.where(steps > 0, steps, 1.0)
        q.symbols[key] = U.quantize(m, steps, np)
        q.arrays[key + ".steps"] = steps.astype("<f4").tobytes()
        return U.dequantize(q.symbols[key], steps, np)

    def _load(self, q: Quantized, key: str, shape: tuple[int, int]) -> np.ndarray:
        count = shape[0] * shape[1]
        if self.bits is None:
            return read_array(q.arrays, key, "<f2", count, f"lowrank factor {key}").reshape(shape)
        symbols = q.symbols.get(key)
        if symbols is None or symbols.shape != shape:
            raise ContainerError(f"lowrank factor {key}: expected {shape[0]} x {shape[1]} symbols")
        steps = read_array(q.arrays, key + ".steps", "<f4", shape[0], f"lowrank factor {key}")
        if not (steps > 0).all():
            raise ContainerError(f"lowrank factor {key}: bad steps")
        return U.dequantize(symbols, steps, np)

    def quantize(self, t: TensorData, xp=np) -> Quantized:
        shape = t.array.shape
        rows, cols = matrix_view(shape, per_row=True)
        if rows * cols:
            a, b, r = K.factors(t.float64().reshape(rows, cols), self.rank, self.energy, np)
        else:
            a, b, r = np.zeros((rows, 0)), np.zeros((0, cols)), 0
        q = Quantized({}, {"rank": r})
        if r == 0:  # nothing to store: the reconstruction is all zeros
            q.recon = from_float64(np.zeros(shape), t.dtype)
            return q
        a_hat = self._store(q, "a", np.ascontiguousarray(a.T))
        b_hat = self._store(q, "b", b)
        q.recon = from_float64((a_hat.T @ b_hat).reshape(shape), t.dtype)
        return q

    def dequantize(self, q, shape, dtype):
        rows, cols = matrix_view(tuple(shape), per_row=True)
        r = q.side.get("rank")
        if not isinstance(r, int) or not 0 <= r <= min(rows, cols):
            raise ContainerError(f"lowrank: bad rank {r!r} for shape {tuple(shape)}")
        if r == 0:
            return from_float64(np.zeros(shape), dtype)
        a = self._load(q, "a", (r, rows))
        b = self._load(q, "b", (r, cols))
        return from_float64((a.T @ b).reshape(shape), dtype)
