"""Where the work runs: `cpu`, `gpu` (the first visible CUDA device), `cuda:N`, or `auto`.

Every verb takes a device (compress, decompress/load, evaluate, the CLI's --device, a
sweep's `device:` key). A quantizer gets arrays of the device's namespace `xp` (NumPy on
the CPU, CuPy on a CUDA device); coders and containers stay on the host. Asking for a
GPU that is not there raises DeviceError (one line, exit 2 from the CLI): zoocodec never
runs on the CPU in place of a GPU that was asked for. Only `auto` falls back, and the
device it resolved to is what results record (`Device.label`: `cpu`, or the CUDA
index and the device's name, e.g. `cuda:0 NVIDIA H200`).

Indices are the process's own: under Ray, or with CUDA_VISIBLE_DEVICES set, `cuda:0` is
the first device the process sees; the label then also names the physical one
(`cuda:0 NVIDIA H200 (CUDA_VISIBLE_DEVICES=3)`).
"""
from __future__ import annotations

import functools
import os
import re
import types
from dataclasses import dataclass

import numpy as np

from zoocodec.errors import ZoocodecError

CHOICES = "cpu, gpu, cuda:N or auto"


class DeviceError(ZoocodecError):
    """A device that is not there, or not a device name at all."""


@dataclass(frozen=True)
class Device:
    """A resolved device: `kind` "cpu" or "cuda", and the CUDA index (None on the CPU)."""

    kind: str
    index: int | None = None

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"

    @property
    def xp(self) -> types.ModuleType:
        """The array namespace of this device (CuPy imported only for a CUDA device)."""
        if not self.is_gpu:
            return np
        import cupy  # GPU only

        return cupy

    @property
    def torch(self) -> str:
        """The torch device string."""
        return "cpu" if not self.is_gpu else f"cuda:{self.index}"

    @property
    def label(self) -> str:
        """What ran, for reports and Parquet rows."""
        if not self.is_gpu:
            return "cpu"
        text = f"cuda:{self.index} {_name(self.index)}"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return f"{text} (CUDA_VISIBLE_DEVICES={visible})" if visible else text

    def activate(self):
        """A context in which CuPy allocates and launches on this device (nothing on the CPU)."""
        if not self.is_gpu:
            import contextlib

            return contextlib.nullcontext()
        return self.xp.cuda.Device(self.index)

    def __str__(self) -> str:
        return self.torch


CPU = Device("cpu")


def name(device) -> str:
    """A device name checked for its form only (a sweep driver need not hold the GPU): cpu, auto,
    gpu, cuda, cuda:N, gpu:N, lower case."""
    text = "cpu" if device is None else str(device).strip().lower()
    if text in ("cpu", "auto") or re.fullmatch(r"(?:gpu|cuda)(?::\d+)?", text):
        return text
    raise DeviceError(f"unknown device {device!r} (expected {CHOICES})")


def resolve(device: str | Device | None = "cpu") -> Device:
    """A device name -> Device; raises DeviceError for a GPU that is not visible here."""
    if isinstance(device, Device):
        return device
    text = name(device)
    if text == "cpu":
        return CPU
    if text == "auto":
        return Device("cuda", 0) if gpu_count() else CPU
    m = re.fullmatch(r"(?:gpu|cuda)(?::(\d+))?", text)
    index = int(m.group(1) or 0)
    count = gpu_count()
    if count == 0:
        raise DeviceError(f"device {text!r} asked for, but no CUDA GPU is usable here ({why_no_gpu()}); "
                          f"use --device cpu or auto")
    if index >= count:
        raise DeviceError(f"device {text!r} asked for, but only {count} CUDA GPU(s) are visible (cuda:0..{count - 1})")
    return Device("cuda", index)


@functools.cache
def _probe() -> tuple[int, str]:
    """(number of CUDA devices CuPy sees, why none when 0)."""
    try:
        import cupy  # optional, GPU only
    except ImportError:
        return 0, "CuPy is not installed: pip install zoocodec[gpu]"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:  # no driver, or CUDA_VISIBLE_DEVICES hides every device  # noqa: BLE001
        return 0, f"CUDA: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
    return count, "" if count else "CUDA sees no device"


def gpu_count() -> int:
    return _probe()[0]


def why_no_gpu() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return _probe()[1] + (f"; CUDA_VISIBLE_DEVICES={visible}" if visible is not None else "")


@functools.cache
def _name(index: int) -> str:
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(index)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)

