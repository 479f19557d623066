"""Bit-exact storage: the tensor's bits, coded by a bit-exact coder.

`lossless` (coder `float`: fp32/fp16/bf16 byte planes, other widths zstd-19),
`lossless:coder=zstd(level=9)`, `lossless:coder=raw`. The one symbol stream `data` is
the tensor's bits as unsigned integers of its width.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import CoderSpec
from zoocodec.codecs.lossless import Float
from zoocodec.errors import ContainerError, SpecError
from zoocodec.methods.base import MethodSpec, Quantized, TensorData, register

NATIVE = {
    "float32": "<f4", "float16": "<f2", "bfloat16": "<u2", "float64": "<f8",
    "int8": "i1", "uint8": "u1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "bool": "?",
}


def native_dtype(dtype: str) -> np.dtype:
    if dtype not in NATIVE:
        raise ContainerError(f"unsupported tensor dtype {dtype!r}")
    return np.dtype(NATIVE[dtype])


def bits_dtype(dtype: str) -> np.dtype:
    """The unsigned integer type of the same width as `dtype`."""
    return np.dtype(f"<u{native_dtype(dtype).itemsize}")


@register
@dataclass(frozen=True)
class Lossless(MethodSpec):
    name = "lossless"
    version = 2
    lossless = True
    gpu_decode = True

    coder: CoderSpec = Float()

    @staticmethod
    def _from_v1(params: dict) -> dict:
        """Version 1 named its coder (float, zstd, raw) and zstd's level apart."""
        coder, level = params.pop("coder", "float"), params.pop("level", 19)
        params["coder"] = {"coder": coder, "version": 1, **({"level": level} if coder == "zstd" else {})}
        return params

    upgrades = {1: _from_v1}
    examples = ("lossless:coder=zstd(level=3)", "lossless:coder=raw")

    def check(self) -> None:
        if self.coder.lossy:
            raise SpecError(f"lossless: coder {self.coder} is lossy")

    def symbol_dtype(self, stream, dtype):
        return bits_dtype(dtype)

    def quantize(self, t: TensorData, xp=np) -> Quantized:
        a = t.array if t.array.flags.c_contiguous else t.array.copy()  # (ascontiguousarray makes 0-D 1-D)
        return Quantized({"data": a.view(bits_dtype(t.dtype))}, {}, {}, a)

    def fused(self, side, arrays, shape, dtype):
        """Float planes decode on the GPU too (zoocodec.plan.Planes)."""
        from zoocodec.plan import Planes

        return Planes("data") if isinstance(self.coder, Float) and dtype in ("float32", "float16", "bfloat16") else None

    def dequantize(self, q, shape, dtype):
        data = q.symbols["data"]
        if data.shape != tuple(shape):
            raise ContainerError(f"lossless: {data.shape} values for shape {tuple(shape)}")
        return data.astype(bits_dtype(dtype), copy=False).view(native_dtype(dtype))
