"""Bit-exact coding: byte planes + ANS for floats, zstd for everything else."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zstandard

from zoocodec.codecs import floatplanes
from zoocodec.errors import ContainerError, SpecError
from zoocodec.methods.base import Encoded, MethodSpec, TensorData, register

CODERS = ("float", "zstd", "raw")


@register
@dataclass(frozen=True)
class Lossless(MethodSpec):
    name = "lossless"
    version = 1
    lossless = True

    coder: str = "float"
    level: int = 19

    def validate(self) -> None:
        if self.coder not in CODERS:
            raise SpecError(f"lossless: coder must be one of {', '.join(CODERS)}, got {self.coder!r}")
        if not 1 <= self.level <= 22:
            raise SpecError(f"lossless: zstd level must be 1..22, got {self.level}")

    def encode(self, t: TensorData) -> Encoded:
        a = np.ascontiguousarray(t.array)
        plane_codable = t.dtype in ("float32", "float16", "bfloat16")
        coder = "zstd" if self.coder == "float" and not plane_codable else self.coder
        if coder == "float":
            body = floatplanes.encode(a)
        elif coder == "zstd":
            body = zstandard.ZstdCompressor(level=self.level).compress(a.tobytes())
        else:
            body = a.tobytes()
        return Encoded({"coder": coder}, {"data": body}, a)

    def decode(self, side, segments, shape, dtype):
        native = native_dtype(dtype)
        count = int(np.prod(shape))
        coder = side.get("coder")
        data = segments["data"]
        if coder == "float":
            return floatplanes.decode(data, count, native).reshape(shape)
        if coder == "zstd":
            size = count * native.itemsize
            try:
                data = zstandard.ZstdDecompressor().decompress(bytes(data), max_output_size=size)
            except zstandard.ZstdError as e:
                raise ContainerError(f"corrupt zstd payload: {e}") from None
        elif coder != "raw":
            raise ContainerError(f"unknown lossless coder {coder!r}")
        if len(data) != count * native.itemsize:
            raise ContainerError(f"lossless payload holds {len(data)} bytes, expected {count * native.itemsize}")
        return np.frombuffer(data, dtype=native).reshape(shape).copy()


NATIVE = {
    "float32": "<f4", "float16": "<f2", "bfloat16": "<u2", "float64": "<f8",
    "int8": "i1", "uint8": "u1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "bool": "?",
}


def native_dtype(dtype: str) -> np.dtype:
    if dtype not in NATIVE:
        raise ContainerError(f"unsupported tensor dtype {dtype!r}")
    return np.dtype(NATIVE[dtype])
