"""Array and number helpers the methods share: float64 views of native tensors (bfloat16 as
uint16 bits), block-wise streaming inside a tensor, error statistics, and reading stored side
arrays. No method logic: methods/base.py is the protocol that uses them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from zoocodec.codecs import native
from zoocodec.errors import ContainerError

if TYPE_CHECKING:
    from zoocodec.methods.base import TensorData

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


def as_float64(a, dtype: str, xp=np):
    """Native values (bfloat16 as uint16 bits) -> float64, in namespace `xp`."""
    a = xp.asarray(a)
    if dtype == "bfloat16":
        bits = a.astype(xp.uint32)
        bits <<= 16
        return bits.view(xp.float32).astype(xp.float64)
    return a.astype(xp.float64)


# ---- streaming inside a tensor ----------------------------------------------------------
BLOCK_BYTES = 8 << 20  # float64 bytes of one block: the temporaries of a step stay a few times this


def row_blocks(rows: int, cols: int, itemsize: int = 8, limit: int | None = None, whole: bool = False):
    """(row slice, column slice) blocks covering a rows x cols matrix in row-major order, each
    at most `limit` bytes at `itemsize`: whole rows where one fits, else pieces of one row
    (`whole`: always whole rows, for decisions that run along a row). Quantizers whose
    decisions are per row (or per weight) run block by block, so their float64 temporaries
    are bounded however large the tensor."""
    per = max((limit or BLOCK_BYTES) // max(itemsize, 1), 1)
    if cols <= per or whole:
        step = max(per // max(cols, 1), 1)
        for r in range(0, rows, step):
            yield slice(r, min(r + step, rows)), slice(0, cols)
        return
    for r in range(rows):
        for c in range(0, cols, per):
            yield slice(r, r + 1), slice(c, min(c + per, cols))


def pairwise_sum(n: int, leaf, limit: int | None = None) -> tuple[float, ...]:
    """Sums over [0, n) of leaf(lo, hi) -> a tuple of sums of [lo, hi), split exactly as
    NumPy's pairwise summation splits a contiguous float64 array, so each equals np.sum (and
    np.mean * n) of its whole array bit for bit while no more than `limit` values exist at once."""
    limit = limit or BLOCK_BYTES // 8
    if n <= limit:
        return tuple(float(x) for x in leaf(0, n))
    half = n // 2
    half -= half % 8
    left = pairwise_sum(half, leaf, limit)
    right = pairwise_sum(n - half, lambda lo, hi: leaf(lo + half, hi + half), limit)
    return tuple(a + b for a, b in zip(left, right, strict=True))


@dataclass(frozen=True)
class ErrorStats:
    """Error of a reconstruction: mean squared error, largest |error|, mean signal power."""

    mse: float = 0.0
    max_err: float = 0.0
    power: float = 0.0

    @property
    def sqnr_db(self) -> float:
        if self.mse == 0:
            return math.inf
        return 10 * math.log10(self.power / self.mse) if self.power > 0 else -math.inf


def error_stats(t: TensorData, recon: np.ndarray) -> ErrorStats:
    """ErrorStats of `recon` (native dtype) against `t`, block by block in float64; the same
    floats as np.mean / np.max over whole float64 copies (pairwise_sum)."""
    n = t.array.size
    if not n:
        return ErrorStats()
    w, r = t.array.reshape(-1), np.asarray(recon).reshape(-1)
    if t.dtype in NATIVE_KINDS and r.dtype == w.dtype:  # the same sums, in C++ threads, without float64 copies
        bits = bits_of(w)
        err2, power, top = native.engine().error_stats(bits, bits_of(r), NATIVE_KINDS[t.dtype])
        return ErrorStats(float(np.float64(err2) / n), top, float(np.float64(power) / n))
    top = [0.0]

    def sums(lo, hi):
        x = as_float64(w[lo:hi], t.dtype)
        e = x - as_float64(r[lo:hi], t.dtype)
        top[0] = max(top[0], float(np.max(np.abs(e))))
        return np.sum(e**2), np.sum(x * x)

    err2, power = pairwise_sum(n, sums)
    return ErrorStats(float(np.float64(err2) / n), top[0], float(np.float64(power) / n))


NATIVE_KINDS = {"float32": 0, "bfloat16": 1}  # the dtypes the native quantizers take (codecs/native/quantize.h)


def bits_of(a: np.ndarray) -> np.ndarray:
    """A float32 / bfloat16 (uint16) array's bits, flat and contiguous, for the native engine."""
    a = np.ascontiguousarray(a).reshape(-1)
    return a.view(np.uint32) if a.dtype.itemsize == 4 else a.view(np.uint16)


def all_finite(t: TensorData) -> bool:
    """No NaN or Inf (checked block by block; integer tensors are always finite)."""
    if not t.is_float:
        return True
    if t.dtype in NATIVE_KINDS:  # on the bits, in C++: no float64 blocks
        return native.engine().all_finite(bits_of(t.array))
    w = t.array.reshape(-1)
    step = BLOCK_BYTES // 8
    return all(bool(np.isfinite(as_float64(w[i : i + step], t.dtype)).all()) for i in range(0, w.size, step))


def from_float64(values: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values -> the native array of `dtype` (bfloat16 as rounded uint16 bits)."""
    if dtype == "bfloat16":
        f32 = values.astype(np.float32).view(np.uint32)
        rounded = f32 + np.uint32(0x7FFF) + ((f32 >> np.uint32(16)) & np.uint32(1))  # nearest-even
        return (rounded >> np.uint32(16)).astype(np.uint16)
    return values.astype(dtype)


def read_array(arrays: dict, name: str, dtype: str, count: int, what: str) -> np.ndarray:
    """A stored side array as float64 (or its dtype), checked to hold `count` finite values."""
    if name not in arrays:
        raise ContainerError(f"{what}: {name} are missing")
    raw = arrays[name]
    if len(raw) != count * np.dtype(dtype).itemsize:
        raise ContainerError(f"{what}: {name} hold {len(raw)} bytes, expected {count} values")
    a = np.frombuffer(raw, dtype=dtype)
    if a.dtype.kind == "f":
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ContainerError(f"{what}: {name} are not finite")
    return a
