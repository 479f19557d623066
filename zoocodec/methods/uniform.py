"""Uniform scalar quantization with nearest rounding.

Three ways to set the step:
- `step=S`: one absolute step; give every tensor the same S for one step for the whole
  model, which under entropy coding is the MSE-optimal allocation;
- `bits=B` (2..16): symmetric min-max per output channel, what int8/int4 users expect;
- `bits=B, per_tensor=true`: min-max over the whole tensor (fragile below 8 bits: one
  outlier stretches the range).

The symbols go to the spec's coder: `ans` (default), `ctx`, or video
(`uniform:bits=8,coder=video-hevc`, lossy with `coder=video-h264(crf=18)`: the
reconstruction is then what the video decodes to, and side["coded"] reports the
largest symbol error, so |w - w_hat| <= (max_symbol_error + 1/2) * step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import CoderSpec
from zoocodec.codecs.ans import Ans
from zoocodec.errors import ContainerError
from zoocodec.kernels import uniform as K
from zoocodec.kernels.backend import array_namespace, stack_rows, to_numpy
from zoocodec.methods.base import (STEP_OR_BITS, MethodSpec, Quantized, TensorData, as_float64, check_step_or_bits,
                                   default_bits, from_float64, nested_coder, read_array, register, row_blocks)
from zoocodec.methods.lossless import native_dtype


def store_steps(steps: np.ndarray, side: dict, arrays: dict) -> None:
    """One step per row as float32 array `steps`, or a single one in the side info."""
    side["rows"] = int(steps.shape[0])
    if steps.shape[0] > 1:
        arrays["steps"] = steps.astype("<f4").tobytes()
    else:
        side["step"] = float(steps[0])


def load_steps(q: Quantized, shape: tuple[int, ...], what: str) -> np.ndarray:
    """The inverse of store_steps, validated against the tensor's shape."""
    rows = q.side.get("rows")
    if "steps" in q.arrays:
        if not isinstance(rows, int) or rows < 2 or not shape or rows != shape[0]:
            raise ContainerError(f"{what}: {rows!r} step rows for shape {tuple(shape)}")
        steps = read_array(q.arrays, "steps", "<f4", rows, what)
        if not (steps > 0).all():
            raise ContainerError(f"{what}: steps must be positive")
        return steps
    step = q.side.get("step")
    if rows != 1 or not isinstance(step, float) or not step > 0:
        raise ContainerError(f"{what}: side info is invalid: {q.side}")
    return np.array([step])


@register
@dataclass(frozen=True)
class Uniform(MethodSpec):
    name = "uniform"
    version = 2
    upgrades = {1: nested_coder}
    ranges = STEP_OR_BITS
    gpu = True
    steppable = True
    rounds_nearest = True
    examples = ("uniform:bits=4,per_tensor=true", "uniform:step=0.004", "uniform:bits=6,coder=ctx")

    bits: int | None = None
    step: float | None = None
    per_tensor: bool = False
    coder: CoderSpec = Ans()

    def __post_init__(self):
        super().__post_init__()
        default_bits(self)

    def check(self) -> None:
        check_step_or_bits(self)

    def steps_for(self, w, per_channel: bool | None = None) -> np.ndarray:
        """float64 steps (host), one per row of the quantization view, exactly representable in
        float32; `w` is a model's TensorData (read block by block) or an array of values."""
        if self.step is not None:
            return np.array([self.step], dtype=np.float64)
        per_channel = not self.per_tensor if per_channel is None else per_channel
        if isinstance(w, TensorData):
            return self._steps(absmax_rows(w.matrix(per_row=per_channel), w.dtype)) if w.array.size else np.ones(1)
        steps = to_numpy(K.absmax_steps(w, self.bits, per_channel=per_channel, xp=array_namespace(w)))
        steps = steps.astype(np.float32).astype(np.float64)
        return np.where(steps > 0, steps, 1.0)

    def _steps(self, amax: np.ndarray) -> np.ndarray:
        steps = (amax / ((1 << (self.bits - 1)) - 1)).astype(np.float32)
        return np.where(steps > 0, steps, 1.0).astype(np.float64)

    def quantize(self, t: TensorData, xp=np) -> Quantized:
        """Row blocks at a time: the float64 temporaries stay bounded, the symbols take the
        narrowest integer type their range needs, the reconstruction the tensor's own dtype."""
        per_row = self.step is None and not self.per_tensor and t.array.ndim >= 2 and t.array.shape[0] > 1
        m = t.matrix(per_row=per_row)
        amax = absmax_rows(m, t.dtype) if m.size else np.zeros(1)
        steps = np.array([self.step], dtype=np.float64) if self.step is not None else (
            self._steps(amax) if m.size else np.ones(1))
        top = float(np.rint(np.max(amax / steps))) if m.size else 0.0  # the largest |symbol|
        symbols = np.empty(m.shape, dtype=narrowest(top))
        recon = np.empty(m.shape, dtype=t.array.dtype)
        for r, c in row_blocks(*m.shape):
            s = xp.asarray(steps[r] if steps.shape[0] > 1 else steps)
            sym = K.quantize(as_float64(m[r, c], t.dtype, xp), s, xp)  # IEEE division and rint: the same symbols on any device
            symbols[r, c] = to_numpy(sym)
            recon[r, c] = from_float64(to_numpy(K.dequantize(sym, s, xp)), t.dtype)
        side, arrays = {}, {}
        store_steps(steps, side, arrays)
        return Quantized({"symbols": symbols.reshape(t.array.shape)}, side, arrays, recon.reshape(t.array.shape))

    def symbol_dtype(self, stream, dtype):
        return None  # dequantize takes any integer type: the coder returns the narrowest

    def rows(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """(rows, row length) of the quantization view: one row per output channel, or one row."""
        numel = math.prod(shape)
        if self.step is None and not self.per_tensor and len(shape) >= 2:
            return shape[0], numel // shape[0]
        return 1, numel

    def batch_key(self, t: TensorData):
        """Tensors of one dtype whose rows have one length quantize as one stack of rows."""
        return (t.dtype, self.rows(t.array.shape)[1]) if t.array.size else None

    def quantize_many(self, ts: list[TensorData], xp=np) -> list[Quantized]:
        """One quantization of the stacked rows of every tensor: each row keeps its own step
        (its tensor's, or its channel's), so each tensor gets quantize()'s symbols and recon."""
        if len(ts) == 1:
            return [self.quantize(ts[0], xp)]
        shapes = [t.array.shape for t in ts]
        w = TensorData("", ts[0].dtype, stack_rows([t.array.reshape(self.rows(s)) for t, s in zip(ts, shapes)], xp))
        w = w.float64(xp)
        steps = self.steps_for(w, per_channel=True)  # a row per channel, or per tensor: the rows above
        symbols = K.quantize(w, xp.asarray(steps), xp)
        recon = from_float64(K.dequantize(symbols, xp.asarray(steps), xp), ts[0].dtype)
        out, row = [], 0
        for s in shapes:
            n = self.rows(s)[0]
            side, arrays = {}, {}
            store_steps(steps[row : row + n] if steps.shape[0] > 1 else steps, side, arrays)
            out.append(Quantized({"symbols": symbols[row : row + n].reshape(s)}, side, arrays,
                                 recon[row : row + n].reshape(s)))
            row += n
        return out

    def dequantize(self, q, shape, dtype):
        steps = load_steps(q, shape, "uniform")
        symbols = q.symbols["symbols"]
        m = symbols.reshape(steps.shape[0], -1) if symbols.size else symbols.reshape(1, -1)
        out = np.empty(m.shape, dtype=native_dtype(dtype))
        for r, c in row_blocks(*m.shape):
            s = steps[r] if steps.shape[0] > 1 else steps
            out[r, c] = from_float64(K.dequantize(m[r, c], s, np), dtype)
        return out.reshape(symbols.shape)


    def fused(self, side, arrays, shape, dtype):
        """symbols * step of an ans stream (zoocodec.plan.Affine)."""
        from zoocodec.plan import Affine  # noqa: PLC0415

        if not isinstance(self.coder, Ans):
            return None
        return Affine("symbols", load_steps(Quantized({}, side, arrays), shape, "uniform").astype(np.float64))

def absmax_rows(m: np.ndarray, dtype: str) -> np.ndarray:
    """max |w| of each row of the native matrix `m` as float64, block by block, on the bits:
    with the sign bit cleared, a float's bits order as its magnitude (NaN above Inf, as np.max
    propagates it), so no float64 copy is made."""
    width = m.dtype.itemsize
    bits = m.view(f"<u{width}")
    mask = np.array((1 << (8 * width - 1)) - 1, dtype=bits.dtype)
    top = np.zeros(m.shape[0], dtype=bits.dtype)
    for r, c in row_blocks(*m.shape, itemsize=width):
        top[r] = np.maximum(top[r], np.max(bits[r, c] & mask, axis=1))
    return as_float64(top.view(m.dtype), dtype)


def narrowest(top: float) -> np.dtype:
    """The smallest signed integer type holding -top..top."""
    for dt in (np.int8, np.int16, np.int32):
        if top <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)
