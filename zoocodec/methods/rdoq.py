"""RDOQ: uniform levels chosen by rate-distortion cost instead of nearest rounding.

For a step, each weight takes the level among floor, ceil and 0 (in step units) that
minimises (x - level)^2 + lam * bits(level), with bits from the rate table of the entropy
model the chosen coder fits (codecs/base.py: order-0 for `ans`, per-row/column contexts
for `ctx`). The model is refitted to the new symbols and the choice repeated `iters` times.
The decoder is plain dequantization (symbol * step), so lam=0 is exactly uniform rounding.

Steps: `step=S` (one for the tensor), or `bits=B` (min-max per output channel, as in
uniform), or `group_steps` from bit allocation (one step per consecutive group of
rows; `step` then holds the smallest, for display).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import CoderSpec
from zoocodec.codecs.context import Ctx, matrix_view, view_shape
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels import rdoq as R, uniform as K
from zoocodec.kernels.backend import to_numpy
from zoocodec.methods.arrays import from_float64, read_array, row_blocks
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
from zoocodec.registry import Range, ints


@register
@dataclass(frozen=True)
class RDOQ(MethodSpec):
    name = "rdoq"
    version = 2
    upgrades = {1: nested_coder}
    ranges = {**STEP_OR_BITS, "lam": Range(0, text="a non-negative number"), "iters": ints(0, 10),
              "group_steps": Range(0, open_lo=True, each=True, text="positive numbers, one per row group")}
    steppable = True
    grouped_steps = True
    examples = ("rdoq:step=0.01,coder=ans,lam=0.3",)

    step: float | None = None
    bits: int | None = None
    lam: float = 0.15
    iters: int = 2
    coder: CoderSpec = Ctx()
    group_steps: tuple[float, ...] | None = None

    gpu = True  # the decisions run in xp; the entropy model is fitted on the host
    batch_on_cpu = True  # dq's trellis: a few operations per column, on every row of every tensor at once
    gpu_decode = True

    def __post_init__(self):
        super().__post_init__()
        default_bits(self)
        if self.group_steps is not None:  # a JSON list from the header
            object.__setattr__(self, "group_steps", tuple(self.group_steps))

    def check(self) -> None:
        check_step_or_bits(self)
        if self.group_steps is not None and self.step is None:
            raise SpecError(f"{self.name}: group_steps need step set (the smallest of them)")

    def row_steps(self, w2: np.ndarray) -> np.ndarray:
        """float64 step per row of the matrix view (or a single one), exact in float32."""
        rows = w2.shape[0]
        if self.group_steps is not None:
            if len(self.group_steps) > max(rows, 1):
                raise SpecError(f"rdoq: {len(self.group_steps)} group steps for {rows} rows")
            groups = (np.arange(rows) * len(self.group_steps)) // max(rows, 1)
            return np.asarray(self.group_steps, dtype=np.float64)[groups]
        if self.step is not None:
            return np.array([self.step], dtype=np.float64)
        if w2.size == 0:  # one step per row, as the decoder expects, even for (rows, 0)
            return np.ones(rows)
        steps = K.absmax_steps(w2, self.bits, per_channel=True, xp=np).astype(np.float32).astype(np.float64)
        return np.where(steps > 0, steps, 1.0)

    def levels_for(self, w: np.ndarray, xp=np) -> tuple[np.ndarray, np.ndarray]:
        """(int64 symbols in the matrix view, steps per row) for float64 weights `w`.

        Rates come only from the coder's entropy model: fitted to the rounded symbols,
        refitted to each new choice.
        """
        return self.levels_many([w], xp)[0]

    def levels_many(self, ws: list[np.ndarray], xp=np) -> list[tuple[np.ndarray, np.ndarray]]:
        """levels_for() of tensors of one shape in one pass: their matrices stacked along the
        axis the decisions run across (rows; for dq the columns when it walks columns), each
        tensor's contexts offset into one table of all their rate tables. Every decision reads
        the rates its own tensor's model gives (kernels/rdoq.py: rows are independent), so the
        levels are levels_for()'s."""
        w2s = [matrix_view(w) for w in ws]
        steps = [self.row_steps(w2) for w2 in w2s]
        flip = self._walk_columns(w2s[0].shape)
        xs = [xp.asarray(w2) / xp.asarray(s)[:, None] for w2, s in zip(w2s, steps, strict=True)]
        x = xp.concatenate([v.T if flip else v for v in xs]) if len(xs) > 1 else (xs[0].T if flip else xs[0])
        q = self._first(x, xp)
        models = [None] * len(ws)
        trellis = self.trellis("symbols", w2s[0].shape)
        for _ in range(self.iters if self.lam > 0 and q.size else 0):
            qs = _split(to_numpy(q), len(ws), flip)
            models = [
                self.coder.model(qh, trellis) if m is None else m.refit(qh) for m, qh in zip(models, qs, strict=True)
            ]
            merged = _merge([m.rates(qh) for m, qh in zip(models, qs, strict=True)], x, flip, xp)
            if merged is None:  # the tables' union would be too large: one tensor at a time
                return [r for w in ws for r in self.levels_many([w], xp)]
            q = self._decide(x, *merged, xp)
        return list(zip(_split(to_numpy(q), len(ws), flip), steps, strict=True))

    def _walk_columns(self, shape: tuple[int, int]) -> bool:
        """Whether decisions run along columns (the matrix is transposed for them)."""
        return False

    def _first(self, x, xp):
        return xp.rint(x).astype(xp.int64)

    def _decide(self, x, ctx, origin: int, bits, xp):
        """New levels for x (oriented), contexts ctx, rates bits[context, state, level - origin]."""
        return R.decide(x, ctx, origin, bits[:, 0, :], self.lam, xp)

    def levels(self, q: np.ndarray, by_column: bool = False) -> np.ndarray:
        """Reconstruction in step units of (a block of) the symbol matrix."""
        return q.astype(np.float64)

    def reconstruct_matrix(self, q: np.ndarray, steps: np.ndarray, dtype: str) -> np.ndarray:
        """levels * step of the symbol matrix `q` as the native array, a block of whole rows
        (whole columns where the dq state machine walks columns) at a time."""
        out = np.empty(q.shape, dtype=native_dtype(dtype))
        rows, cols = q.shape
        if self._walk_columns(q.shape):
            for c, _ in row_blocks(cols, rows, whole=True):
                out[:, c] = from_float64(self.levels(q[:, c], by_column=True) * steps[:, None], dtype)
            return out
        for r, _ in row_blocks(rows, cols, whole=True):
            s = steps[r] if steps.shape[0] > 1 else steps
            out[r] = from_float64(self.levels(q[r], by_column=False) * s[:, None], dtype)
        return out

    def quantize(self, t: TensorData, xp=np) -> Quantized:
        return self.quantize_many([t], xp)[0]

    def batch_key(self, t: TensorData):
        """Tensors of one shape decide (and walk their trellises) together."""
        return (tuple(t.array.shape),) if t.array.size else None

    def quantize_many(self, ts: list[TensorData], xp=np, recon: bool = True) -> list[Quantized]:
        ws = [t.float64() for t in ts]
        out = []
        for t, (q, steps) in zip(ts, self.levels_many(ws, xp), strict=True):
            recon = self.reconstruct_matrix(q, steps, t.dtype).reshape(t.array.shape)
            arrays = {"steps": steps.astype("<f4").tobytes()} if self.bits is not None else {}
            out.append(Quantized({"symbols": q.reshape(t.array.shape)}, {}, arrays, recon))
        del ws
        return out

    def symbol_dtype(self, stream, dtype):
        return None  # levels of any integer type

    def decoded_steps(self, arrays: dict, rows: int, shape) -> np.ndarray:
        """The steps a reader uses for a matrix view of `rows` rows (stored with bits=, else
        from the spec: `step` alone needs no weights)."""
        if self.bits is not None:
            steps = read_array(arrays, "steps", "<f4", rows, "rdoq")
            if not (steps > 0).all():
                raise ContainerError(f"rdoq: bad steps for shape {tuple(shape)}")
            return steps
        try:
            return self.row_steps(np.empty((rows, 0)))
        except SpecError as e:
            raise ContainerError(str(e)) from None

    def dequantize(self, q, shape, dtype):
        levels = matrix_view(q.symbols["symbols"])
        return self.reconstruct_matrix(levels, self.decoded_steps(q.arrays, levels.shape[0], shape), dtype).reshape(
            shape
        )

    def fused(self, side, arrays, shape, dtype):
        """Levels (the symbols themselves) times a step per row (zoocodec.plan.Affine); damaged steps
        are left to dequantize(), which names them."""
        from zoocodec.plan import Affine

        try:
            return Affine("symbols", self.decoded_steps(arrays, view_shape(tuple(shape))[0], shape).astype(np.float64))
        except ContainerError:
            return None


@register
@dataclass(frozen=True)
class DQ(RDOQ):
    """Dependent (trellis-coded) quantization, as NNCodec and VVC do it.

    Two quantizers with levels 2k*step and (2k - sgn k)*step, switched by a 4-state
    machine driven by each level's parity along a walk; a Viterbi search per walk picks
    the levels that minimise D + lam*R under the coder's model (kernels/rdoq.py). The
    decoder walks the same state machine. On minilm it needs about 0.15 bits/weight less
    than plain rounding at equal SQNR.

    A walk runs along `axis` of the 2-D view: 1, each row; 0, each column; unset, the shorter
    side (fewer sequential steps). Data-aware rounding takes column walks (lam=0, axis=0):
    each input column is then one walk, rounded whole before its error is fed to the next
    (tuning/calibrate.py gptq_walks).
    """

    name = "dq"
    version = 2
    ranges = {**RDOQ.ranges, "axis": ints(0, 1)}
    examples = ("dq:bits=6,coder=ans", "dq:step=0.01,coder=cabac", "dq:bits=5,axis=0,lam=0")
    gpu_decode = True  # plan.Trellis: the state walk as a scan on the GPU, walks side by side on the CPU pass

    axis: int | None = None

    def to_dict(self):
        """Without axis when unset: headers written before stay as they were."""
        d = super().to_dict()
        if self.axis is None:
            del d["axis"]
        return d

    def trellis(self, stream, shape):
        """The axis of the 2-D view the state machine walks along (the trellis axis of coders)."""
        return 0 if self._walk_columns(view_shape(tuple(shape))) else 1

    def _walk_columns(self, shape):
        return _flip(shape) if self.axis is None else self.axis == 0

    def _first(self, x, xp):
        return R.dq_trellis(x, xp.zeros(x.shape, dtype=xp.int64), 0, xp.zeros((1, 1, 1)), 0.0, xp)

    def _decide(self, x, ctx, origin, bits, xp):
        return R.dq_trellis(x, ctx, origin, bits, self.lam, xp)

    def fused(self, side, arrays, shape, dtype):
        """The levels, walked by the state machine (zoocodec.plan.Trellis: a level's value depends on
        the state before it); damaged steps are left to dequantize()."""
        from zoocodec.plan import Trellis

        rows, cols = view_shape(tuple(shape))
        try:
            steps = self.decoded_steps(arrays, rows, shape).astype(np.float64)
        except ContainerError:
            return None
        return Trellis("symbols", steps, rows, cols, self._walk_columns((rows, cols)))

    def levels(self, q: np.ndarray, by_column: bool | None = None) -> np.ndarray:
        """The state machine walks each row, or each column (`by_column`; default: the spec's walks)."""
        q = q.astype(np.int64, copy=False)  # (2k in a narrow type would wrap)
        return R.dq_dequantize(q, np, self._walk_columns(q.shape) if by_column is None else by_column)


def _flip(shape: tuple[int, int]) -> bool:
    """Walk the trellis along the shorter side (fewer sequential steps, wider vector ops)."""
    return shape[1] > shape[0]



def _split(q: np.ndarray, count: int, flip: bool) -> list[np.ndarray]:
    """The stacked (oriented) levels back into each tensor's matrix view."""
    parts = np.split(q, count) if count > 1 else [q]
    return [p.T if flip else p for p in parts]


TABLE_LIMIT = 64 << 20  # bytes of the merged rate table; beyond it the tensors decide one at a time


def _merge(tables, x, flip: bool, xp):
    """(ctx, origin, bits) of several tensors' rate tables as one: contexts offset per tensor,
    every table widened to one level range by its own out-of-table rate (its largest entry in
    that context and state plus one bit), so each level costs what its own table charges.
    The range covers every level a decision may try (|level| <= max |x| + 2), so no level
    falls outside it. None when the merged table would pass TABLE_LIMIT bytes."""
    if len(tables) == 1:
        t = tables[0]
        ctx = xp.asarray(t.ctx)
        return (ctx.T if flip else ctx), t.origin, xp.asarray(t.bits)
    reach = int(math.ceil(float(xp.abs(x).max()))) + 2 if x.size else 2
    lo = min(min(t.origin for t in tables), -reach)
    hi = max(max(t.origin + t.bits.shape[2] for t in tables), reach + 1)
    contexts, states = sum(t.bits.shape[0] for t in tables), tables[0].bits.shape[1]
    if contexts * states * (hi - lo) * 8 > TABLE_LIMIT or any(t.bits.shape[1] != states for t in tables):
        return None
    bits = np.empty((contexts, states, hi - lo))
    ctxs, offset = [], 0
    for t in tables:
        n, size = t.bits.shape[0], t.bits.shape[2]
        block = bits[offset : offset + n]
        block[...] = t.bits.max(axis=2, keepdims=True) + 1.0
        block[:, :, t.origin - lo : t.origin - lo + size] = t.bits
        c = np.asarray(t.ctx, dtype=np.int64) + offset
        ctxs.append(c.T if flip else c)
        offset += n
    return xp.asarray(np.concatenate(ctxs)), lo, xp.asarray(bits)
