"""Pick the array namespace: NumPy always, CuPy only when asked for and importable."""
from __future__ import annotations

import functools
import types

import numpy as np


@functools.cache
def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy  # noqa: PLC0415  (optional, GPU only)

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or a CUDA driver/runtime error
        return False


def get_xp(device: str = "cpu") -> types.ModuleType:
    """The namespace for `device`: "cpu" -> numpy, "gpu"/"cuda" -> cupy, "auto" -> best."""
    if device == "auto":
        device = "gpu" if gpu_available() else "cpu"
    if device == "cpu":
        return np
    if device in ("gpu", "cuda"):
        if not gpu_available():
            from zoocodec.errors import ZoocodecError

            raise ZoocodecError("device 'gpu' asked for, but CuPy or a CUDA GPU is not available")
        import cupy  # noqa: PLC0415

        return cupy
    from zoocodec.errors import ZoocodecError

    raise ZoocodecError(f"unknown device {device!r} (expected cpu, gpu or auto)")


def array_namespace(x) -> types.ModuleType:
    """The namespace an array belongs to."""
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        import cupy  # noqa: PLC0415

        return cupy
    return np


def to_numpy(x) -> np.ndarray:
    """A host copy of any backend's array (no copy for NumPy input)."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get"):
        return x.get()
    return np.asarray(x)
