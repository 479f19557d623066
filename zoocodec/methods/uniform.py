"""Uniform scalar quantization with nearest rounding.

Three ways to set the step:
- `step=S`: one absolute step; give every tensor the same S for one step for the whole
  model, which under entropy coding is the MSE-optimal allocation;
- `bits=B` (2..16): symmetric min-max per output channel, what int8/int4 users expect;
- `bits=B, per_tensor=true`: min-max over the whole tensor (fragile below 8 bits: one
  outlier stretches the range);
- `bits=B, group=G`: one step per G consecutive weights of each row (along the input
  dimension; the last group of a row is shorter when G does not divide it), symmetric
  min-max; with `zero=true` each group also gets an offset, its minimum, and B-bit levels
  0..2^B-1 between its minimum and maximum (GGUF Q4_1, HQQ). With `step=S` every group
  keeps the one step S and `zero=true` adds the offsets. The side values are rounded to
  the float16 grid (float32 where a value is outside float16's range) and coded by the
  float coder as their own streams (`group_steps`, `group_zeros`), so they count in the
  size; the GPU decoder takes them (zoocodec.plan.Grouped), the CPU's dequantize() here.
  With `side=M` (bits and zero=true) the side values keep only the precision they need: each
  group's step rounded to M mantissa bits, its centre (zero point + (2^B-1)/2 steps) to a grid
  of step/2^(M-2), written as integer codes under ans (`group_step_codes`, `group_centres`);
  the decoder rebuilds the same float64 steps and zero points from them. On smollm2's Q4_1
  groups M=5 saves 0.25 of 0.60 bits/weight for a weight error of 0.2% of d^2
  (bench/bench_group_side_lossy.py).

The symbols go to the spec's coder: `ans` (default), `ctx`, or video
(`uniform:bits=8,coder=video-hevc`, lossy with `coder=video-h264(crf=18)`: the
reconstruction is then what the video decodes to, and side["coded"] reports the
largest symbol error, so |w - w_hat| <= (max_symbol_error + 1/2) * step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import CoderSpec, native
from zoocodec.codecs.ans import Ans
from zoocodec.codecs.lossless import Float
from zoocodec.errors import ContainerError, SpecError, ZoocodecError
from zoocodec.kernels import uniform as K
from zoocodec.kernels.backend import array_namespace, stack_rows, to_numpy
from zoocodec.methods.arrays import (
    BLOCK_BYTES,
    NATIVE_KINDS,
    ErrorStats,
    all_finite,
    as_float64,
    bits_of,
    from_float64,
    read_array,
    row_blocks,
)
from zoocodec.methods.base import (
    STEP_OR_BITS,
    MethodSpec,
    Quantized,
    TensorData,
    check_step_or_bits,
    default_bits,
    nested_coder,
    register,
)
from zoocodec.methods.lossless import native_dtype
from zoocodec.registry import ints


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


MIN_GROUP, MAX_GROUP = 4, 1 << 16  # weights per group of group-wise steps


@register
@dataclass(frozen=True)
class Uniform(MethodSpec):
    name = "uniform"
    version = 2
    upgrades = {1: nested_coder}
    ranges = {**STEP_OR_BITS, "group": ints(MIN_GROUP, MAX_GROUP, text=f"{MIN_GROUP}..{MAX_GROUP} weights"),
              "side": ints(3, 10, text="3..10 mantissa bits")}
    gpu = True
    steppable = True
    rounds_nearest = True
    shared_grid = True
    gpu_decode = True  # group-wise steps too (plan.Grouped)
    examples = ("uniform:bits=4,per_tensor=true", "uniform:step=0.004", "uniform:bits=6,coder=ctx",
                "uniform:bits=4,group=16,zero=true", "uniform:bits=4,group=32,zero=true,side=5")

    bits: int | None = None
    step: float | None = None
    per_tensor: bool = False
    group: int | None = None
    zero: bool = False
    coder: CoderSpec = Ans()
    side: int | None = None  # mantissa bits of the groups' steps (None: float16 steps and zero points)

    def __post_init__(self):
        super().__post_init__()
        default_bits(self)

    def check(self) -> None:
        check_step_or_bits(self)
        if self.group is not None and self.per_tensor:
            raise SpecError("uniform: group and per_tensor exclude each other")
        if self.zero and self.group is None:
            raise SpecError("uniform: zero points need a group (e.g. group=32,zero=true)")
        if self.side is not None and not (self.zero and self.step is None):
            raise SpecError("uniform: side=M needs bits, a group and zero points (bits=4,group=32,zero=true,side=5)")

    def to_dict(self):
        """Without group and zero when ungrouped, nor side when None: headers written before stay as they were."""
        d = super().to_dict()
        if self.group is None:
            del d["group"], d["zero"]
        if self.side is None:
            del d["side"]
        return d

    def __str__(self) -> str:
        text = super().__str__()
        return text if self.group is not None else text.replace(",zero=False", "")

    def coder_for(self, stream: str) -> CoderSpec:
        if stream in CODED_STREAMS:
            return Ans()
        return Float() if stream in GROUP_STREAMS else self.coder

    def steps_for(self, w, per_channel: bool | None = None) -> np.ndarray:
        """float64 steps (host), one per row of the quantization view, exactly representable in
        float32; `w` is a model's TensorData (read block by block) or an array of values."""
        if self.group is not None:
            raise SpecError(f"{self}: group-wise steps are not available inside this method")
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
        return self._quantize(t, xp, recon=True)

    def _quantize(self, t: TensorData, xp, recon: bool) -> Quantized:
        """Row blocks at a time: the float64 temporaries stay bounded, the symbols take the
        narrowest integer type their range needs, the reconstruction the tensor's own dtype.
        float32 and bfloat16 on the host take the native path; recon=False leaves the
        reconstruction out there (its statistics are kept)."""
        if self.group is not None:
            return self._quantize_groups(t, xp, recon)
        per_row = self.step is None and not self.per_tensor and t.array.ndim >= 2 and t.array.shape[0] > 1
        m = t.matrix(per_row=per_row)
        if xp is not np and t.dtype in NATIVE_KINDS and m.size:
            q = self._quantize_device(t, m, xp, recon)
            if q is not None:
                return q
        amax = absmax_rows(m, t.dtype) if m.size else np.zeros(1)
        steps = np.array([self.step], dtype=np.float64) if self.step is not None else (
            self._steps(amax) if m.size else np.ones(1))
        top = float(np.rint(np.max(amax / steps))) if m.size else 0.0  # the largest |symbol|
        symbols = np.empty(m.shape, dtype=narrowest(top))
        stats = None
        if xp is np and t.dtype in NATIVE_KINDS and symbols.dtype != np.int64 and m.size:
            # fused in C++ threads: the same IEEE operations per weight, so the same symbols,
            # reconstruction and statistics (np.sum's summation tree) as the blocks below
            out = np.empty(m.shape, dtype=t.array.dtype) if recon else None  # (fresh pages are costly)
            err2, power, max_err = native.engine().uniform_quantize(
                bits_of(m), NATIVE_KINDS[t.dtype], np.ascontiguousarray(steps), m.shape[1],
                symbols.reshape(-1), None if out is None else bits_of(out))
            stats = ErrorStats(float(np.float64(err2) / m.size), max_err, float(np.float64(power) / m.size))
        else:
            out = np.empty(m.shape, dtype=t.array.dtype)
            self._quantize_blocks(t, m, steps, symbols, out, xp)
        side, arrays = {}, {}
        store_steps(steps, side, arrays)
        return Quantized({"symbols": symbols.reshape(t.array.shape)}, side, arrays,
                         None if out is None else out.reshape(t.array.shape), stats)

    def _quantize_device(self, t: TensorData, m: np.ndarray, xp, recon: bool) -> Quantized | None:
        """The device-resident path (kernels/uniform.cu): the bits go to the GPU once; the row
        maxima, the symbols and the statistics are computed there, and only the maxima (one per
        row), the symbols and three sums come back; the CPU's symbols and statistics bit for bit.
        None when the symbols need int64 (the array path takes those)."""
        bits = xp.asarray(bits_of(m)).reshape(m.shape)
        mask = bits.dtype.type((1 << (8 * m.dtype.itemsize - 1)) - 1)  # |w| orders as its bits (absmax_rows)
        amax = as_float64(to_numpy(xp.max(bits & mask, axis=1)).view(m.dtype), t.dtype)
        steps = np.array([self.step], dtype=np.float64) if self.step is not None else self._steps(amax)
        top = float(np.rint(np.max(amax / steps)))
        dt = narrowest(top)
        if dt == np.int64:
            return None
        symbols, out, (err2, power, max_err) = K.quantize_device(bits.reshape(-1), t.dtype, steps, m.shape[1], dt,
                                                                 recon)
        stats = ErrorStats(float(np.float64(err2) / m.size), max_err, float(np.float64(power) / m.size))
        side, arrays = {}, {}
        store_steps(steps, side, arrays)
        if out is not None:
            out = out.view(t.array.dtype).reshape(t.array.shape)
        return Quantized({"symbols": symbols.reshape(t.array.shape)}, side, arrays, out, stats)

    def _quantize_blocks(self, t: TensorData, m: np.ndarray, steps: np.ndarray, symbols: np.ndarray,
                         recon: np.ndarray, xp) -> None:
        """The array path (NumPy or CuPy): row blocks in float64."""
        for r, c in row_blocks(*m.shape):
            s = xp.asarray(steps[r] if steps.shape[0] > 1 else steps)
            sym = K.quantize(
                as_float64(m[r, c], t.dtype, xp), s, xp
            )  # IEEE division and rint: the same symbols on any device
            symbols[r, c] = to_numpy(sym)
            recon[r, c] = from_float64(to_numpy(K.dequantize(sym, s, xp)), t.dtype)

    def _quantize_groups(self, t: TensorData, xp, recon: bool = True) -> Quantized:
        """Group-wise steps: the groups' ranges in one pass over row blocks, their side values
        on the host (small: one per group), then symbols and reconstruction block by block
        (float32 / bfloat16 on the host: both passes in C++, the same floats)."""
        m = t.matrix(per_row=True)
        rows, cols = m.shape
        g = self.group
        count = K.group_count(cols, g)
        fused = xp is np and t.dtype in NATIVE_KINDS and m.size > 0 and all_finite(t)
        lo, hi = np.empty((rows, count)), np.empty((rows, count))
        blocks = list(row_blocks(rows, cols, limit=_group_block(g)))
        if fused:
            native.engine().group_ranges(bits_of(m), NATIVE_KINDS[t.dtype], cols, g, lo.reshape(-1), hi.reshape(-1))
        else:
            for r, c in blocks:
                gs = slice(c.start // g, K.group_count(c.stop, g))
                lo[r, gs], hi[r, gs] = map(to_numpy, K.group_ranges(as_float64(m[r, c], t.dtype, xp), g, xp))
        if self.side is not None:
            steps, zeros, codes, centres = coded_side(lo, hi, self.bits, self.side)
        else:
            steps, zeros = group_side(lo, hi, self)
        base = zeros if zeros is not None else 0.0
        step = steps if steps is not None else self.step
        with np.errstate(invalid="ignore"):
            top = float(np.max(np.rint(np.maximum(np.abs(lo - base), np.abs(hi - base)) / step))) if lo.size else 0.0
        symbols = np.empty(m.shape, dtype=narrowest(top))
        stats = None
        if fused and symbols.dtype != np.int64:
            out = np.empty(m.shape, dtype=t.array.dtype) if recon else None
            err2, power, max_err = native.engine().uniform_groups(
                bits_of(m), NATIVE_KINDS[t.dtype], cols, g,
                np.array([self.step], dtype=np.float64) if steps is None else steps.reshape(-1),
                None if zeros is None else zeros.reshape(-1), symbols.reshape(-1),
                None if out is None else bits_of(out))
            stats = ErrorStats(float(np.float64(err2) / m.size), max_err, float(np.float64(power) / m.size))
        else:
            out = np.empty(m.shape, dtype=t.array.dtype)
            self._quantize_group_blocks(t, m, blocks, steps, zeros, symbols, out, xp)
        side = {"rows": rows, "groups": count}
        streams = {"symbols": symbols.reshape(t.array.shape)}
        if self.side is not None:
            streams["group_step_codes"], streams["group_centres"] = codes.ravel(), centres.ravel()
        else:
            if steps is None:
                side["step"] = float(self.step)
            else:
                streams["group_steps"] = steps.astype("<f4").view("<u4").ravel()
            if zeros is not None:
                streams["group_zeros"] = zeros.astype("<f4").view("<u4").ravel()
        return Quantized(streams, side, {}, None if out is None else out.reshape(t.array.shape), stats)

    def _quantize_group_blocks(self, t, m, blocks, steps, zeros, symbols, recon, xp) -> None:
        """The array path of group-wise steps (NumPy or CuPy): row blocks in float64."""
        g = self.group
        scalar = xp.asarray(np.array(self.step if steps is None else 1.0))
        for r, c in blocks:
            gs = slice(c.start // g, K.group_count(c.stop, g))
            s = xp.asarray(steps[r, gs]) if steps is not None else scalar
            z = xp.asarray(zeros[r, gs]) if zeros is not None else None
            sym = K.quantize_groups(as_float64(m[r, c], t.dtype, xp), s, z, g, xp)
            symbols[r, c] = to_numpy(sym)
            recon[r, c] = from_float64(to_numpy(K.dequantize_groups(sym, s, z, g, xp)), t.dtype)

    def symbol_dtype(self, stream, dtype):
        if stream in GROUP_STREAMS:
            return np.dtype("<u4")
        return None  # dequantize takes any integer type: the coder returns the narrowest

    def rows(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """(rows, row length) of the quantization view: one row per output channel, or one row."""
        numel = math.prod(shape)
        if self.step is None and not self.per_tensor and len(shape) >= 2:
            return shape[0], numel // shape[0]
        return 1, numel

    def batch_key(self, t: TensorData):
        """Tensors of one dtype whose rows have one length quantize as one stack of rows."""
        if self.group is not None:
            return None
        return (t.dtype, self.rows(t.array.shape)[1]) if t.array.size else None

    def quantize_many(self, ts: list[TensorData], xp=np, recon: bool = True) -> list[Quantized]:
        """One quantization of the stacked rows of every tensor: each row keeps its own step
        (its tensor's, or its channel's), so each tensor gets quantize()'s symbols and recon."""
        if len(ts) == 1 or xp is np or ts[0].dtype in NATIVE_KINDS:  # the fused paths, one tensor at a time
            return [self._quantize(t, xp, recon) for t in ts]
        shapes = [t.array.shape for t in ts]
        w = TensorData(
            "", ts[0].dtype, stack_rows([t.array.reshape(self.rows(s)) for t, s in zip(ts, shapes, strict=True)], xp)
        )
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
        if self.group is not None:
            return self._dequantize_groups(q, tuple(shape), dtype)
        steps = load_steps(q, shape, "uniform")
        symbols = q.symbols["symbols"]
        m = symbols.reshape(steps.shape[0], -1) if symbols.size else symbols.reshape(1, -1)
        out = np.empty(m.shape, dtype=native_dtype(dtype))
        for r, c in row_blocks(*m.shape):
            s = steps[r] if steps.shape[0] > 1 else steps
            out[r, c] = from_float64(K.dequantize(m[r, c], s, np), dtype)
        return out.reshape(symbols.shape)

    def fused(self, side, arrays, shape, dtype):
        """symbols * step (zoocodec.plan.Affine); with group-wise steps, zoocodec.plan.Grouped, whose
        side streams decode (by this method's coders, checked as dequantize checks them) only when a
        decoder takes it."""
        from zoocodec.plan import Affine, Grouped

        if self.group is None:
            return Affine("symbols", load_steps(Quantized({}, side, arrays), shape, "uniform").astype(np.float64))
        try:
            rows, cols, count = self._group_shape(side, tuple(shape))
        except ContainerError:
            return None  # (dequantize names it)
        sides = self._side_streams()
        shapes = side.get("symbols", {})

        def decoded() -> Quantized:
            streams = {}
            for name in sides:
                if shapes.get(name) != [rows * count]:
                    raise ContainerError(f"uniform: {name} missing or not {rows} x {count} values")
                coder = self.coder_for(name)
                streams[name] = coder.decode(arrays[name], (rows * count,), self._decoded_dtype(name, dtype, coder),
                                             self.trellis(name, (rows * count,)))
            return Quantized(streams, side, {})

        def values():
            steps, step, zeros = self._group_values(decoded(), rows, count)
            return (np.array([step]) if steps is None else steps.reshape(-1)), \
                (None if zeros is None else zeros.reshape(-1))

        def codes():
            q = decoded()
            return (*(_group_codes(q, name, rows, count, narrow=True) for name in CODED_STREAMS), self.side, self.bits,
                    MAX_EXPONENT)

        return Grouped("symbols", self.group, rows, cols, values, sides, None if self.side is None else codes)

    def _side_streams(self) -> tuple[str, ...]:
        if self.side is not None:
            return CODED_STREAMS
        return (*(("group_steps",) if self.step is None else ()), *(("group_zeros",) if self.zero else ()))

    def _group_shape(self, side: dict, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(rows, cols, groups per row) of a grouped tensor, checked against its side info."""
        numel = math.prod(shape)
        rows = shape[0] if len(shape) >= 2 and shape[0] else 1
        cols = numel // rows
        count = K.group_count(cols, self.group)
        if side.get("rows") != rows or side.get("groups") != count:
            raise ContainerError(f"uniform: side info is invalid for shape {shape}: {side}")
        return rows, cols, count

    def _group_values(self, q: Quantized, rows: int, count: int):
        """(steps (rows, groups) or None, the one step or None, zeros or None), each checked."""
        if self.side is not None:
            codes, centres = (_group_codes(q, name, rows, count) for name in CODED_STREAMS)
            steps, zeros, ok = native.engine().side_values(codes.ravel(), centres.ravel(), self.side, self.bits,
                                                            MAX_EXPONENT)
            if not ok:
                raise ContainerError("uniform: group step codes or centres give steps or zero points out of range")
            return steps.reshape(rows, count), None, zeros.reshape(rows, count)
        steps = _group_values(q, "group_steps", rows, count) if self.step is None else None
        step = None
        if steps is None:
            step = q.side.get("step")
            if not isinstance(step, float) or not (math.isfinite(step) and step > 0):
                raise ContainerError(f"uniform: side info is invalid: {q.side}")
        elif not (steps > 0).all():
            raise ContainerError("uniform: group steps must be positive")
        return steps, step, _group_values(q, "group_zeros", rows, count) if self.zero else None

    def _dequantize_groups(self, q: Quantized, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """Every side value checked against the shape before use: a file is hostile."""
        numel = math.prod(shape)
        rows, cols, count = self._group_shape(q.side, shape)
        symbols = q.symbols.get("symbols")
        if symbols is None or symbols.size != numel:
            raise ContainerError(f"uniform: symbols do not fit shape {shape}")
        steps, step, zeros = self._group_values(q, rows, count)
        m = symbols.reshape(rows, cols)
        out = np.empty(m.shape, dtype=native_dtype(dtype))
        from zoocodec.plan import KINDS

        if dtype in KINDS and m.size:  # (natively, rounded as NumPy rounds the float64 values below)
            values = np.array([step], np.float64) if steps is None else np.ascontiguousarray(steps, np.float64)
            if not native.engine().group_dequantize(
                    np.ascontiguousarray(m, np.int64), values,
                    None if zeros is None else np.ascontiguousarray(zeros, np.float64), self.group, KINDS[dtype],
                    out.reshape(-1)):
                raise FloatingPointError("a group's values are outside the dtype's range")
            return out.reshape(shape)
        scalar = np.array(step if steps is None else 1.0)
        for r, c in row_blocks(rows, cols, limit=_group_block(self.group)):
            gs = slice(c.start // self.group, K.group_count(c.stop, self.group))
            s = steps[r, gs] if steps is not None else scalar
            out[r, c] = from_float64(K.dequantize_groups(m[r, c], s, None if zeros is None else zeros[r, gs],
                                                         self.group, np), dtype)
        return out.reshape(shape)


GROUP_STREAMS = ("group_steps", "group_zeros")
CODED_STREAMS = ("group_step_codes", "group_centres")  # side=M: the integer codes of the steps and the centres
MAX_EXPONENT = 1100  # of a step code: beyond float64's exponents either way


def _group_block(group: int) -> int:
    """Block bytes (float64) that cut a long row only at group boundaries."""
    return max(BLOCK_BYTES // 8 // group, 1) * group * 8


def _group_values(q: Quantized, name: str, rows: int, count: int) -> np.ndarray:
    """A decoded side stream (float32 bits) as float64 (rows, groups), checked finite."""
    bits = q.symbols.get(name)
    if bits is None or bits.size != rows * count or bits.dtype.itemsize != 4:
        raise ContainerError(f"uniform: {name} missing or not {rows} x {count} values")
    values = np.ascontiguousarray(bits).view("<f4").astype(np.float64).reshape(rows, count)
    if not np.isfinite(values).all():
        raise ContainerError(f"uniform: {name} are not finite")
    return values


def _group_codes(q: Quantized, name: str, rows: int, count: int, narrow: bool = False) -> np.ndarray:
    """A decoded code stream (side=M) as int64 (rows, groups), checked (`narrow`: flat, as the signed type
    it was decoded to, which the CPU's pass reads)."""
    codes = q.symbols.get(name)
    if codes is None or codes.size != rows * count or codes.dtype.kind not in "iu":
        raise ContainerError(f"uniform: {name} missing or not {rows} x {count} integers")
    if narrow and codes.dtype.kind == "i":
        return np.ascontiguousarray(codes).reshape(-1)
    return codes.astype(np.int64).reshape(-1 if narrow else (rows, count))


def group_side(lo: np.ndarray, hi: np.ndarray, spec: Uniform) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(steps, zeros) of groups with ranges lo..hi (float64, on the float16 grid, else float32;
    None where the spec has none). Offsets round down, so symbols start at 0; steps round to
    the nearest value unless that puts a group's extreme beyond the bit width's levels, then up:
    symbols stay in 0..2^B-1 (zero=true) or -(2^(B-1)-1)..2^(B-1)-1, and weights already on a
    float16 grid (a dequantized Q4_1 file) are reproduced. With side=M: coded_side's."""
    if spec.side is not None:
        return coded_side(lo, hi, spec.bits, spec.side)[:2]
    for dt in (np.float16, np.float32):
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            zeros = _on_grid(lo, dt, down=True) if spec.zero else None
            steps = None
            if spec.step is None:
                span = hi - zeros if spec.zero else np.maximum(-lo, hi)
                levels = (1 << spec.bits) - 1 if spec.zero else (1 << (spec.bits - 1)) - 1
                steps = _on_grid(span / levels, dt)
                up = np.rint(span / steps) > levels
                steps[up] = np.nextafter(steps[up].astype(dt), dt(np.inf)).astype(np.float64)
                steps[span == 0] = 1.0
        if all(a is None or np.isfinite(a).all() for a in (steps, zeros)) and (steps is None or (steps > 0).all()):
            return steps, zeros
    raise ZoocodecError("uniform: group-wise steps need weights within float32's range")


def _on_grid(x: np.ndarray, dt, down: bool = False) -> np.ndarray:
    """x rounded to the nearest value of float type `dt` (down: the largest not above x), as float64."""
    y = x.astype(dt)
    if down:
        over = y.astype(np.float64) > x
        y[over] = np.nextafter(y[over], dt(-np.inf))
    return y.astype(np.float64)


def absmax_rows(m: np.ndarray, dtype: str) -> np.ndarray:
    """max |w| of each row of the native matrix `m` as float64, block by block, on the bits:
    with the sign bit cleared, a float's bits order as its magnitude (NaN above Inf, as np.max
    propagates it), so no float64 copy is made."""
    width = m.dtype.itemsize
    if dtype in NATIVE_KINDS and m.flags.c_contiguous and m.size:
        top = np.empty(m.shape[0], dtype=f"<u{width}")
        native.engine().absmax_rows(bits_of(m), m.shape[1], top)
        return as_float64(top.view(m.dtype), dtype)
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


def side_step(codes: np.ndarray, mant: int) -> np.ndarray:
    """float64 steps of step codes n: (2^mant + n mod 2^mant) * 2^(n // 2^mant - mant), a float
    with mant bits of mantissa (exponents past +-4096 give 0 or inf); the codes order as the steps.
    Native (quantize.cpp), as the decoder's side_values computes them."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    return native.engine().side_steps(codes.ravel(), mant).reshape(codes.shape)


def side_zero(centres: np.ndarray, steps: np.ndarray, bits: int, frac: int) -> np.ndarray:
    """float64 zero points of centre codes c: the group's centre, zero + (2^bits - 1)/2 steps,
    on a grid of step / 2^frac (frac >= 1: the zero point lies on that grid too)."""
    centres = np.ascontiguousarray(centres, dtype=np.int64)
    steps = np.ascontiguousarray(np.broadcast_to(steps, centres.shape), dtype=np.float64)
    return native.engine().side_zeros(centres.ravel(), steps.ravel(), bits, frac).reshape(centres.shape)


def coded_side(lo: np.ndarray, hi: np.ndarray, bits: int, mant: int, frac: int | None = None):
    """(steps, zeros, step codes, centre codes) of min-max groups with ranges lo..hi at the
    precision their side values need: the step rounded to `mant` mantissa bits, the group's
    centre to a grid of step / 2^frac (frac None: mant - 2, where the two errors are about
    equal at 4 bits: a step error e moves a weight by up to 7.5 e steps). A step grows by one
    code where that would put an extreme beyond the levels 0..2^bits-1."""
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ZoocodecError("uniform: group-wise steps need finite weights")
    frac = mant - 2 if frac is None else frac
    levels = (1 << bits) - 1
    centre = (lo + hi) / 2
    span = hi - lo
    # at least 2^-40 of the centre: the centre codes stay within 2^(48+frac) (a group of one value lies half a
    # level from its centre, so its step is that, far below its float's spacing)
    d = np.maximum(span / levels, np.abs(centre) * 2.0**-40)
    d[d == 0] = 2.0**-200
    e = np.floor(np.log2(d))
    codes = (e * (1 << mant) + np.rint((d / np.exp2(e) - 1) * (1 << mant))).astype(np.int64)
    while True:
        steps = side_step(codes, mant)
        centres = np.rint(centre / steps * (1 << frac)).astype(np.int64)
        zeros = side_zero(centres, steps, bits, frac)
        out = (np.rint((hi - zeros) / steps) > levels) | (np.rint((lo - zeros) / steps) < 0)
        if not out.any():
            return steps, zeros, codes, centres
        codes[out] += 1
