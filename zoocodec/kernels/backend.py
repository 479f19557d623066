"""Array namespaces: NumPy always, CuPy only for a CUDA device (zoocodec/device.py decides)."""
from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    from zoocodec.device import gpu_count

    return gpu_count() > 0


def get_xp(device: str = "cpu") -> types.ModuleType:
    """The namespace for a device name (cpu, gpu, cuda:N, auto); DeviceError for a missing GPU."""
    from zoocodec.device import resolve

    return resolve(device).xp


def array_namespace(x) -> types.ModuleType:
    """The namespace an array belongs to."""
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        import cupy

        return cupy
    return np


def on_device(x) -> bool:
    """Is `x` a CuPy array (without importing CuPy)?"""
    return type(x).__module__.split(".")[0] == "cupy"


def to_numpy(x) -> np.ndarray:
    """A host copy of any backend's array (no copy for NumPy input)."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get"):
        return x.get()
    return np.asarray(x)


def stack_rows(arrays: list[np.ndarray], xp) -> object:
    """Host arrays (2-D, equal row length, one dtype) stacked along rows, in namespace `xp`.

    On CuPy the rows are gathered into one pinned host buffer and copied to the device in
    one transfer on the current stream (waited for before the buffer is released)."""
    if xp is np:
        return np.concatenate(arrays, axis=0) if len(arrays) > 1 else arrays[0]
    import cupyx  # GPU only

    rows = sum(a.shape[0] for a in arrays)
    staged = cupyx.empty_pinned((rows, arrays[0].shape[1]), dtype=arrays[0].dtype)
    np.concatenate(arrays, axis=0, out=staged)
    out = xp.empty(staged.shape, dtype=staged.dtype)
    stream = xp.cuda.get_current_stream()
    out.set(staged, stream=stream)
    stream.synchronize()
    return out


_LOCAL_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_]+\.cuh)"$', re.M)


def cuda_source(name: str) -> str:
    """The CUDA source kernels/`name` with its local `#include "x.cuh"` lines replaced by those
    headers' text: NVRTC compiles it with no include path, and CuPy's kernel cache, keyed by the
    text, sees a change to a header too."""
    here = Path(__file__).parent
    return _LOCAL_INCLUDE.sub(lambda m: (here / m.group(1)).read_text(), (here / name).read_text())
