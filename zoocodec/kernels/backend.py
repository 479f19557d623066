"""Array namespaces: NumPy always, CuPy only for a CUDA device (zoocodec/device.py decides)."""
from __future__ import annotations

import types

import numpy as np


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    from zoocodec.device import gpu_count  # noqa: PLC0415

    return gpu_count() > 0


def get_xp(device: str = "cpu") -> types.ModuleType:
    """The namespace for a device name (cpu, gpu, cuda:N, auto); DeviceError for a missing GPU."""
    from zoocodec.device import resolve  # noqa: PLC0415

    return resolve(device).xp


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
