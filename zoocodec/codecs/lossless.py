"""Bit-exact coders of raw values: `float` (byte planes), `zstd`, `raw`.

They take arrays of any integer dtype (the lossless method hands over a tensor's bits as
unsigned integers of its width) and give back the same dtype, byte for byte.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import zstandard

from zoocodec.budget import unzstd
from zoocodec.codecs import floatplanes
from zoocodec.codecs.base import CoderSpec, register_coder
from zoocodec.errors import ContainerError
from zoocodec.registry import ints, one_of


def _le(dtype) -> np.dtype:
    return np.dtype(dtype).newbyteorder("<")


def _le_bytes(symbols) -> bytes:
    a = np.ascontiguousarray(symbols)
    return a.astype(_le(a.dtype), copy=False).tobytes()


@register_coder
@dataclass(frozen=True)
class Zstd(CoderSpec):
    """zstd of the little-endian bytes."""

    name = "zstd"
    version = 1

    alphabet = "bits"
    ranges = {"level": ints(1, 22)}
    examples = ("zstd(level=1)",)

    level: int = 19

    def encode(self, symbols, trellis=None) -> bytes:
        return zstandard.ZstdCompressor(level=self.level).compress(_le_bytes(symbols))

    def decode(self, data, shape, dtype=np.int64, trellis=None) -> np.ndarray:
        raw = unzstd(data, math.prod(shape) * np.dtype(dtype).itemsize, "corrupt zstd payload")
        return _exact(raw, shape, dtype)


@register_coder
@dataclass(frozen=True)
class Raw(CoderSpec):
    """The little-endian bytes as they are."""

    name = "raw"
    version = 1
    alphabet = "bits"

    def encode(self, symbols, trellis=None) -> bytes:
        return _le_bytes(symbols)

    def decode(self, data, shape, dtype=np.int64, trellis=None) -> np.ndarray:
        return _exact(data, shape, dtype)


def _planes_rans(params: dict) -> dict:
    """Version 1 coded its entropy-coded planes with rANS only."""
    return {**params, "planes": "rans"}


@register_coder
@dataclass(frozen=True)
class Float(CoderSpec):
    """2- and 4-byte values (fp16/bf16/fp32 bits) as byte planes (codecs/floatplanes.py); other widths zstd-19.
    `planes`: the order-0 coder of the planes worth entropy coding (the exponents): `huffman`
    (about 3 symbols a table lookup; where its stream is within 2% of rANS's, else rANS) or
    `rans` (smallest; the GPU decoder decodes rANS planes itself, Huffman planes on the host)."""

    name = "float"
    version = 2
    alphabet = "bits"
    gpu_decode = True
    ranges = {"planes": one_of("huffman", "rans")}
    upgrades = {1: _planes_rans}
    examples = ("float(planes=rans)",)

    planes: str = "huffman"

    def encode(self, symbols, trellis=None) -> bytes:
        a = np.ascontiguousarray(symbols)
        if a.dtype.itemsize in (2, 4):
            return floatplanes.encode(a.astype(_le(a.dtype), copy=False), huffman=self.planes == "huffman")
        return Zstd().encode(a)

    def decode(self, data, shape, dtype=np.int64, trellis=None) -> np.ndarray:
        if np.dtype(dtype).itemsize in (2, 4):
            return floatplanes.decode(data, math.prod(shape), _le(dtype)).reshape(shape).astype(dtype, copy=False)
        return Zstd().decode(data, shape, dtype)

    def for_gpu(self) -> Float:
        """rANS planes: up to 2% smaller than Huffman's, and eight GPU threads decode a substream of
        them where huff_bytes gives a Huffman substream one."""
        return replace(self, planes="rans")


def _exact(data, shape, dtype) -> np.ndarray:
    n = math.prod(shape) * np.dtype(dtype).itemsize
    if len(data) != n:
        raise ContainerError(f"lossless payload holds {len(data)} bytes, expected {n}")
    return np.frombuffer(data, dtype=_le(dtype)).astype(dtype).reshape(shape)
