"""Transform quantization (Young et al.): `dct` and `klt`.

    dct:bits=3             block DCT over 16 consecutive weights of a row, water level
                           set so the symbols' order-0 entropy is 3 bits/weight
    klt:block=8,theta=1e-6 PCA basis of the layer's 8-weight vectors, water level given

Reverse water-filling (kernels/transform.py) sets one step for every coded coefficient
group and drops the groups whose variance is below the water level. `bits` is the
target coded rate (ideal order-0 entropy of the symbols, before the coder's tables);
`theta` gives the water level directly. Coded groups whose Gaussian rates round to the
same whole number of bits share one stream of the spec's coder, so groups of different
variance get their own statistics without paying a table for each.

Side info: the step and the coded groups of each stream in the header; for klt the
b x b basis as float32 (1 KB at b = 16).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from zoocodec.codecs import symbol_coder
from zoocodec.codecs.wire import Reader, put_uvarint
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels import transform as K
from zoocodec.methods.base import Encoded, MethodSpec, TensorData, from_float64, register
from zoocodec.methods.dither import matrix_view


def pack_streams(streams: list[bytes]) -> bytes:
    """Several coded streams in one payload: their count and lengths as varints, then the bytes."""
    out = bytearray()
    put_uvarint(out, len(streams))
    for s in streams:
        put_uvarint(out, len(s))
    return bytes(out) + b"".join(streams)


def unpack_streams(data, count: int, what: str) -> list[memoryview]:
    r = Reader(data, what)
    if r.uvarint(limit=1 << 20) != count:
        raise r.fail(f"expected {count} streams")
    lengths = [r.uvarint(limit=len(r.data)) for _ in range(count)]
    streams = [r.take(n) for n in lengths]
    r.done()
    return streams


@dataclass(frozen=True)
class _Transform(MethodSpec):
    """Shared by dct and klt; only the basis differs."""

    stores_basis: ClassVar[bool] = False

    bits: float | None = None
    theta: float | None = None
    block: int = 16
    coder: str = "ans"

    def __post_init__(self):
        if self.bits is None and self.theta is None:
            object.__setattr__(self, "bits", 4.0)

    def validate(self) -> None:
        if self.bits is not None and self.theta is not None:
            raise SpecError(f"{self.name}: give either bits or theta, not both")
        if self.bits is not None and not (math.isfinite(self.bits) and 0 < self.bits <= 16):
            raise SpecError(f"{self.name}: bits must be in (0, 16], got {self.bits}")
        if self.theta is not None and not (math.isfinite(self.theta) and self.theta > 0):
            raise SpecError(f"{self.name}: theta must be a positive number, got {self.theta}")
        if not 2 <= self.block <= 64:
            raise SpecError(f"{self.name}: block must be 2..64, got {self.block}")
        symbol_coder(self.coder)

    def basis(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def encode(self, t: TensorData) -> Encoded:
        shape = t.array.shape
        rows, cols = matrix_view(shape, per_row=True)
        x = K.to_blocks(t.float64().reshape(rows, cols), self.block, np)
        basis = self.basis(x)
        y = x @ basis.T
        variances = np.mean(y**2, axis=0) if y.shape[0] else np.zeros(self.block)
        theta = self.theta if self.theta is not None else K.fit_theta(y, variances, self.bits, np)
        active, rate = K.allocate(variances, theta)
        step = float(np.float32(math.sqrt(12 * theta)))
        coef = np.zeros(y.shape, dtype=np.int64)
        coef[:, active] = K.quantize(y, active, step, np)
        streams = K.streams(active, rate)
        encode = symbol_coder(self.coder)[0]
        segments = {"symbols": pack_streams([encode(coef[:, groups]) for groups in streams])}
        if self.stores_basis:
            segments["basis"] = basis.astype("<f4").tobytes()
        recon = K.from_blocks(K.reconstruct(coef[:, active], active, step, basis, np), rows, cols, np)
        side = {"step": step, "streams": streams}
        return Encoded(side, segments, from_float64(recon.reshape(shape), t.dtype))

    def decode(self, side, segments, shape, dtype):
        rows, cols = matrix_view(tuple(shape), per_row=True)
        b = self.block
        step, streams = side.get("step"), side.get("streams")
        if not isinstance(step, float) or not (math.isfinite(step) and step > 0):
            raise ContainerError(f"{self.name}: bad step {step!r}")
        groups = [g for s in streams for g in s] if isinstance(streams, list) and all(
            isinstance(s, list) and s for s in streams) else None
        if groups is None or not all(isinstance(g, int) and 0 <= g < b for g in groups) or len(set(groups)) != len(groups):
            raise ContainerError(f"{self.name}: bad coded groups {streams!r}")
        vectors = rows * (-(-cols // b))
        if self.stores_basis:
            raw = segments["basis"]
            if len(raw) != 4 * b * b:
                raise ContainerError(f"{self.name}: basis holds {len(raw)} bytes, expected {4 * b * b}")
            basis = np.frombuffer(raw, dtype="<f4").astype(np.float64).reshape(b, b)
            if not np.isfinite(basis).all():
                raise ContainerError(f"{self.name}: basis is not finite")
        else:
            basis = K.dct_matrix(b)
        decode = symbol_coder(self.coder)[1]
        payloads = unpack_streams(segments["symbols"], len(streams), f"{self.name} symbols")
        coef = np.zeros((vectors, b), dtype=np.int64)
        for members, data in zip(streams, payloads):
            coef[:, members] = decode(data, vectors * len(members)).reshape(vectors, len(members))
        active = np.zeros(b, dtype=bool)
        active[groups] = True
        recon = K.from_blocks(K.reconstruct(coef[:, active], active, step, basis, np), rows, cols, np)
        return from_float64(recon.reshape(shape), dtype)


@register
@dataclass(frozen=True)
class DCT(_Transform):
    name = "dct"
    version = 1

    def basis(self, x):
        return K.dct_matrix(self.block)


@register
@dataclass(frozen=True)
class KLT(_Transform):
    name = "klt"
    version = 1
    stores_basis = True

    def basis(self, x):
        return K.klt_matrix(x, np).astype(np.float32).astype(np.float64)
