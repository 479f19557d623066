"""Error statistics of a reconstruction made on the device (stats.cu), as arrays.error_stats
gives them on the host: the weights and the reconstruction as float32 values there (every
float32 and bfloat16 weight is one), the reconstruction narrowed to the tensor's dtype; per
leaf of np.sum's tree the kernel sums as NumPy does, and the host adds the leaves up the tree
(kernels/uniform.py: tree_sums_device). Only a float per 16K weights comes back, and the
reconstruction's bits only when asked for. `error_stats_emulated` is the kernel's arithmetic in
NumPy, leaf by leaf: the test on a machine without a GPU."""
from __future__ import annotations

import functools

import numpy as np

from zoocodec.kernels.backend import cuda_source
from zoocodec.kernels.uniform import device_tree, tree_sums_device, tree_sums_emulated
from zoocodec.methods.arrays import ErrorStats

KERNELS = {"float32": "error_stats_f32", "bfloat16": "error_stats_bf16"}


def error_stats_device(x, r, dtype: str, recon: bool):
    """(ErrorStats, the reconstruction's bits in `dtype` on the device or None) of float32
    values `r` (flat, on the device) against the weights `x` (float32, flat, same order).
    NumPy arrays take error_stats_emulated (the same arithmetic)."""
    if isinstance(x, np.ndarray):
        stats, bits = error_stats_emulated(x, r, dtype)
        return stats, bits if recon else None
    import cupy  # GPU only

    n = int(x.size)
    start, count, _, _ = device_tree(n, cupy.cuda.Device().id)
    k = start.size
    out = (cupy.empty(n, dtype=cupy.uint32 if dtype == "float32" else cupy.uint16)) if recon else None
    err2, power, top = (cupy.empty(k, dtype=cupy.float64) for _ in range(3))
    if k:
        threads = 128
        _module().get_function(KERNELS[dtype])(
            ((k + threads - 1) // threads,), (threads,),
            (cupy.ascontiguousarray(x, dtype=cupy.float32), cupy.ascontiguousarray(r, dtype=cupy.float32),
             start, count, np.uint64(k), out if out is not None else 0, err2, power, top))
    return _stats(n, *tree_sums_device([err2, power], n), float(top.max()) if k else 0.0), out


def error_stats_emulated(x: np.ndarray, r: np.ndarray, dtype: str) -> tuple[ErrorStats, np.ndarray]:
    """error_stats_device's arithmetic in NumPy (float32 inputs on the host)."""
    x64 = x.astype(np.float64)
    b = r.astype(np.float32).view(np.uint32)
    if dtype == "float32":
        bits, back = b, r.astype(np.float64)
    else:
        bits = ((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
        back = (bits.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
    e = x64 - back
    stats = _stats(x.size, *tree_sums_emulated([e * e, x64 * x64], x.size), float(np.abs(e).max()) if x.size else 0.0)
    return stats, bits


def _stats(n: int, err2: float, power: float, top: float) -> ErrorStats:
    if not n:
        return ErrorStats()
    return ErrorStats(float(np.float64(err2) / n), top, float(np.float64(power) / n))


@functools.cache
def _module():
    import cupy  # GPU only

    return cupy.RawModule(code=cuda_source("stats.cu"), options=("-std=c++17",))
