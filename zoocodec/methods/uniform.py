"""Uniform scalar quantization with nearest rounding, entropy-coded symbols.

Three ways to set the step:
- `step=S`: one absolute step; give every tensor the same S for one step for the whole
  model, which under entropy coding is the MSE-optimal allocation;
- `bits=B` (2..16): symmetric min-max per output channel, what int8/int4 users expect;
- `bits=B, per_tensor=true`: min-max over the whole tensor (fragile below 8 bits: one
  outlier stretches the range).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import symbol_coder
from zoocodec.errors import ContainerError
from zoocodec.kernels import uniform as K
from zoocodec.methods.base import Encoded, MethodSpec, TensorData, check_step_or_bits, default_bits, from_float64, register


@register
@dataclass(frozen=True)
class Uniform(MethodSpec):
    name = "uniform"
    version = 1

    bits: int | None = None
    step: float | None = None
    per_tensor: bool = False
    coder: str = "ans"

    def __post_init__(self):
        default_bits(self)

    def validate(self) -> None:
        check_step_or_bits(self)
        symbol_coder(self.coder)

    def steps_for(self, w: np.ndarray) -> np.ndarray:
        """float64 steps, one per row of the quantization view, exactly representable in float32."""
        if self.step is not None:
            return np.array([self.step], dtype=np.float64)
        steps = K.absmax_steps(w, self.bits, per_channel=not self.per_tensor, xp=np)
        steps = steps.astype(np.float32).astype(np.float64)
        return np.where(steps > 0, steps, 1.0)

    def encode(self, t: TensorData) -> Encoded:
        w = t.float64()
        steps = self.steps_for(w)
        symbols = K.quantize(w, steps, np)
        recon = from_float64(K.dequantize(symbols, steps, np), t.dtype)
        segments = {"symbols": symbol_coder(self.coder)[0](symbols)}
        side = {"rows": int(steps.shape[0])}
        if steps.shape[0] > 1:
            segments["steps"] = steps.astype("<f4").tobytes()
        else:
            side["step"] = float(steps[0])
        return Encoded(side, segments, recon)

    def decode(self, side, segments, shape, dtype):
        count = int(np.prod(shape))
        symbols = symbol_coder(self.coder)[1](segments["symbols"], count).reshape(shape)
        rows = side.get("rows")
        if "steps" in segments:
            steps = np.frombuffer(segments["steps"], dtype="<f4").astype(np.float64)
            if steps.shape[0] != rows or not shape or (count and rows != shape[0]):
                raise ContainerError(f"uniform steps: {steps.shape[0]} for shape {tuple(shape)}")
        else:
            step = side.get("step")
            if rows != 1 or not isinstance(step, float) or not step > 0:
                raise ContainerError(f"uniform side info is invalid: {side}")
            steps = np.array([step])
        return from_float64(K.dequantize(symbols, steps, np), dtype)
