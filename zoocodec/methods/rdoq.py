"""RDOQ: uniform levels chosen by rate-distortion cost instead of nearest rounding.

For a step, each weight takes the level among floor, ceil and 0 (in step units) that
minimises (x - level)^2 + lam * bits(level), with bits from the rate table of the entropy
model the chosen coder fits (codecs/base.py: order-0 for `ans`, per-row/column contexts
for `ctx`). The model is refitted to the new symbols and the choice repeated `iters` times. The decoder is plain dequantization (symbol * step), so
lam=0 is exactly uniform rounding.

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
from zoocodec.kernels import rdoq as R
from zoocodec.kernels import uniform as K
from zoocodec.methods.base import (MethodSpec, Quantized, TensorData, check_step_or_bits, default_bits, from_float64,
                                   read_array, register)


@register
@dataclass(frozen=True)
class RDOQ(MethodSpec):
    name = "rdoq"
    version = 2

    step: float | None = None
    bits: int | None = None
    lam: float = 0.15
    iters: int = 2
    coder: CoderSpec = Ctx()
    group_steps: tuple[float, ...] | None = None

    gpu = True  # the decisions run in xp; the entropy model is fitted on the host

    def __post_init__(self):
        super().__post_init__()
        default_bits(self)
        if self.group_steps is not None:  # a JSON list from the header
            object.__setattr__(self, "group_steps", tuple(self.group_steps))

    def validate(self) -> None:
        check_step_or_bits(self)
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise SpecError(f"rdoq: lam must be a non-negative number, got {self.lam}")
        if not 0 <= self.iters <= 10:
            raise SpecError(f"rdoq: iters must be 0..10, got {self.iters}")
        if self.group_steps is not None:
            if self.step is None or not self.group_steps or not all(
                    isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in self.group_steps):
                raise SpecError("rdoq: group_steps must be positive numbers, with step set")
        self.coder.validate()

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
        w2 = matrix_view(w)
        steps = self.row_steps(w2)
        x = xp.asarray(w2) / xp.asarray(steps)[:, None]
        q = self._first(x, xp)
        model = None
        trellis = self.trellis("symbols", w2.shape)
        for _ in range(self.iters if self.lam > 0 and q.size else 0):
            qh = _host(q)
            model = self.coder.model(qh, trellis) if model is None else model.refit(qh)
            q = self._decide(x, model.rates(qh), xp)
        return _host(q), steps

    def _first(self, x, xp):
        return xp.rint(x).astype(xp.int64)

    def _decide(self, x, table, xp):
        return R.decide(x, xp.asarray(table.ctx), table.origin, xp.asarray(table.stateless), self.lam, xp)

    def levels(self, q: np.ndarray) -> np.ndarray:
        """Reconstruction in step units of the symbol matrix."""
        return q.astype(np.float64)

    def quantize(self, t: TensorData, xp=np) -> Quantized:
        w = t.float64()
        q, steps = self.levels_for(w, xp)
        recon = from_float64((self.levels(q) * steps[:, None]).reshape(w.shape), t.dtype)
        arrays = {"steps": steps.astype("<f4").tobytes()} if self.bits is not None else {}
        return Quantized({"symbols": q.reshape(w.shape)}, {}, arrays, recon)

    def dequantize(self, q, shape, dtype):
        levels = matrix_view(q.symbols["symbols"])
        if self.bits is not None:
            steps = read_array(q.arrays, "steps", "<f4", levels.shape[0], "rdoq")
            if not (steps > 0).all():
                raise ContainerError(f"rdoq: bad steps for shape {tuple(shape)}")
        else:
            try:
                steps = self.row_steps(levels)
            except SpecError as e:
                raise ContainerError(str(e)) from None
        return from_float64((self.levels(levels) * steps[:, None]).reshape(shape), dtype)


@register
@dataclass(frozen=True)
class DQ(RDOQ):
    """Dependent (trellis-coded) quantization, as NNCodec and VVC do it.

    Two quantizers with levels 2k*step and (2k - sgn k)*step, switched by a 4-state
    machine driven by each level's parity along a row (along a column when the matrix is
    wider than tall: fewer sequential steps); a Viterbi search per row picks
    the levels that minimise D + lam*R under the coder's model (kernels/rdoq.py). The
    decoder walks the same state machine. On minilm it needs about 0.15 bits/weight less
    than plain rounding at equal SQNR.
    """

    name = "dq"
    version = 2

    def trellis(self, stream, shape):
        """The state machine walks each row of the 2-D view (axis 1), or each column when wider than tall."""
        return 0 if _flip(view_shape(tuple(shape))) else 1

    def _first(self, x, xp):
        flip = _flip(x.shape)
        x = x.T if flip else x
        levels = R.dq_trellis(x, xp.zeros(x.shape, dtype=xp.int64), 0, xp.zeros((1, 1, 1)), 0.0, xp)
        return levels.T if flip else levels

    def _decide(self, x, table, xp):
        ctx, bits = xp.asarray(table.ctx), xp.asarray(table.bits)
        if _flip(x.shape):
            return R.dq_trellis(x.T, ctx.T, table.origin, bits, self.lam, xp).T
        return R.dq_trellis(x, ctx, table.origin, bits, self.lam, xp)

    def levels(self, q: np.ndarray) -> np.ndarray:
        return R.dq_dequantize(q.T, np).T if _flip(q.shape) else R.dq_dequantize(q, np)


def _flip(shape: tuple[int, int]) -> bool:
    """Walk the trellis along the shorter side (fewer sequential steps, wider vector ops)."""
    return shape[1] > shape[0]


def _host(a) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.get()
