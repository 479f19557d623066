"""Transform quantization (Young et al.): `dct` and `klt`.

    dct:bits=3             block DCT over 16 consecutive weights of a row, water level
                           set so the symbols' order-0 entropy is 3 bits/weight
    klt:block=8,theta=1e-6 PCA basis of the layer's 8-weight vectors, water level given

Reverse water-filling (kernels/transform.py) sets one step for every coded coefficient
group and drops the groups whose variance is below the water level. `bits` is the
target coded rate (ideal order-0 entropy of the symbols, before the coder's tables);
`theta` gives the water level directly. Coded groups whose Gaussian rates round to the
same whole number of bits share one symbol stream (`symbols.0`, `symbols.1`, ...) of the
spec's coder, so groups of different variance get their own statistics without paying a
table for each.

Side info: the step and the coded groups of each stream in the header; for klt the
b x b basis as float32 (1 KB at b = 16).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from zoocodec.codecs import CoderSpec
from zoocodec.codecs.ans import Ans
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels import transform as K
from zoocodec.methods.arrays import from_float64, read_array
from zoocodec.methods.base import MethodSpec, Quantized, TensorData, nested_coder, register
from zoocodec.methods.dither import matrix_view
from zoocodec.registry import interval, ints, positive


@dataclass(frozen=True)
class _Transform(MethodSpec):
    """Shared by dct and klt; only the basis differs."""

    stores_basis: ClassVar[bool] = False
    upgrades = {1: nested_coder}
    ranges = {"bits": interval(0, 16, "(]"), "theta": positive(), "block": ints(2, 64)}

    bits: float | None = None
    theta: float | None = None
    block: int = 16
    coder: CoderSpec = Ans()

    def __post_init__(self):
        super().__post_init__()
        if self.bits is None and self.theta is None:
            object.__setattr__(self, "bits", 4.0)

    def check(self) -> None:
        if self.bits is not None and self.theta is not None:
            raise SpecError(f"{self.name}: give either bits or theta, not both")

    def basis(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def quantize(self, t: TensorData, xp=np) -> Quantized:
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
        symbols = {f"symbols.{i}": coef[:, groups] for i, groups in enumerate(streams)}
        arrays = {"basis": basis.astype("<f4").tobytes()} if self.stores_basis else {}
        recon = K.from_blocks(K.reconstruct(coef[:, active], active, step, basis, np), rows, cols, np)
        side = {"step": step, "streams": streams}
        return Quantized(symbols, side, arrays, from_float64(recon.reshape(shape), t.dtype))

    def dequantize(self, q, shape, dtype):
        rows, cols = matrix_view(tuple(shape), per_row=True)
        b = self.block
        step, streams = q.side.get("step"), q.side.get("streams")
        if not isinstance(step, float) or not (math.isfinite(step) and step > 0):
            raise ContainerError(f"{self.name}: bad step {step!r}")
        groups = [g for s in streams for g in s] if isinstance(streams, list) and all(
            isinstance(s, list) and s for s in streams) else None
        if (
            groups is None
            or not all(isinstance(g, int) and 0 <= g < b for g in groups)
            or len(set(groups)) != len(groups)
        ):
            raise ContainerError(f"{self.name}: bad coded groups {streams!r}")
        vectors = rows * (-(-cols // b))
        if self.stores_basis:
            basis = read_array(q.arrays, "basis", "<f4", b * b, self.name).reshape(b, b)
        else:
            basis = K.dct_matrix(b)
        if sorted(q.symbols) != sorted(f"symbols.{i}" for i in range(len(streams))):
            raise ContainerError(f"{self.name}: {len(q.symbols)} symbol streams for {len(streams)} coded groups")
        coef = np.zeros((vectors, b), dtype=np.int64)
        for i, members in enumerate(streams):
            s = q.symbols[f"symbols.{i}"]
            if s.size != vectors * len(members):
                raise ContainerError(
                    f"{self.name}: stream {i} holds {s.size} symbols, expected {vectors * len(members)}"
                )
            coef[:, members] = s.reshape(vectors, len(members))
        active = np.zeros(b, dtype=bool)
        active[groups] = True
        recon = K.from_blocks(K.reconstruct(coef[:, active], active, step, basis, np), rows, cols, np)
        return from_float64(recon.reshape(shape), dtype)


@register
@dataclass(frozen=True)
class DCT(_Transform):
    name = "dct"
    version = 2

    def basis(self, x):
        return K.dct_matrix(self.block)


@register
@dataclass(frozen=True)
class KLT(_Transform):
    name = "klt"
    version = 2
    examples = ("klt:theta=1e-5,block=8",)
    stores_basis = True

    def basis(self, x):
        return K.klt_matrix(x, np).astype(np.float32).astype(np.float64)
