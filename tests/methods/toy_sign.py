"""A toy method, `sign`, in one file and nowhere else: importing it registers it, and the
conformance suite and `zoocodec methods` then cover it (tests/methods/test_registry.py
shows it; it is no method to use: one bit and a half per weight for a poor reconstruction).

Each weight becomes -s, 0 or +s, with s the tensor's mean |w|; weights with |w| <= dead * s
become 0."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import CoderSpec
from zoocodec.codecs.ans import Ans
from zoocodec.errors import ContainerError
from zoocodec.methods.arrays import from_float64
from zoocodec.methods.base import MethodSpec, Quantized, TensorData, register
from zoocodec.registry import interval


@register
@dataclass(frozen=True)
class Sign(MethodSpec):
    name = "sign"
    version = 1
    ranges = {"dead": interval(0, 1)}
    examples = ("sign:dead=0.5,coder=ctx",)

    dead: float = 0.0
    coder: CoderSpec = Ans()

    def quantize(self, t: TensorData, xp=np) -> Quantized:
        w = t.float64()
        s = float(np.float32(np.mean(np.abs(w)))) if w.size else 0.0
        signs = np.where(np.abs(w) <= self.dead * s, 0, np.sign(w)).astype(np.int8)
        return Quantized({"signs": signs}, {"scale": s}, {}, from_float64(signs * s, t.dtype))

    def dequantize(self, q, shape, dtype):
        s, signs = q.side.get("scale"), q.symbols["signs"]
        if not isinstance(s, float) or not math.isfinite(s) or s < 0:
            raise ContainerError(f"sign: bad scale {s!r}")
        if signs.shape != tuple(shape) or (signs.size and (signs.min() < -1 or signs.max() > 1)):
            raise ContainerError(f"sign: signs of shape {signs.shape} for {tuple(shape)}, or not -1, 0, 1")
        return from_float64(signs.astype(np.float64) * s, dtype)
