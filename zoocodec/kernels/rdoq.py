"""Rate-distortion optimised rounding: per value, the level among floor, ceil and 0 that
minimises (x - level)^2 + lam * bits(level | context).

x is the weight in units of the step, so distortion is in step^2 units and `lam` is
dimensionless (the high-rate slope of an entropy-coded uniform quantizer is
2 ln2 / 12 = 0.116 step^2 per bit). The rate is a table bits[context, level - origin]
fitted to the current symbols; the caller iterates fit -> decide. Every value is
decided independently, so the pass is one vectorised expression (chunked to bound
memory). Candidates are tried in the order nearest, other neighbour, zero, and the
first of equal costs wins, so CPU and GPU agree wherever the float costs agree.
"""
from __future__ import annotations

CHUNK = 1 << 22


def decide(x, ctx, origin: int, bits, lam: float, xp):
    """New int64 symbols for `x` (any shape; `ctx` the same shape, int) under the rate table.

    Levels outside the table cost its most expensive entry in that context plus one bit.
    """
    flat, cflat = x.reshape(-1), ctx.reshape(-1)
    out = xp.empty(flat.shape, dtype=xp.int64)
    size = bits.shape[1]
    worst = bits.max(axis=1) + 1.0
    for start in range(0, flat.size, CHUNK):
        v = flat[start : start + CHUNK].astype(xp.float64)
        c = cflat[start : start + CHUNK]
        near = xp.rint(v)
        other = xp.where(near > v, near - 1, near + 1)
        best, best_cost = near, _cost(v, near, c, origin, bits, worst, size, lam, xp)
        for cand in (other, xp.zeros_like(v)):
            cost = _cost(v, cand, c, origin, bits, worst, size, lam, xp)
            better = cost < best_cost
            best = xp.where(better, cand, best)
            best_cost = xp.where(better, cost, best_cost)
        out[start : start + CHUNK] = best.astype(xp.int64)
    return out.reshape(x.shape)


def _cost(v, level, ctx, origin: int, bits, worst, size: int, lam: float, xp):
    idx = level.astype(xp.int64) - origin
    inside = (idx >= 0) & (idx < size)
    rate = xp.where(inside, bits[ctx, xp.clip(idx, 0, size - 1)], worst[ctx])
    d = v - level
    return d * d + lam * rate


# ---- dependent quantization (trellis-coded, as in VVC and NNCodec) ------------------------
# Two quantizers share the step d: Q0 reconstructs 2k*d, Q1 (2k - sgn k)*d. A 4-state
# machine walks each row; states 0 and 1 use Q0, states 2 and 3 use Q1, and the parity of
# the level picks the next state. The union of the two level sets is spaced d, but each
# quantizer alone is spaced 2d, so a level costs the bits of a 2d quantizer while the
# trellis finds reconstructions close to d-spaced ones: a packing gain no per-value
# rounding has.
NEXT_STATE = ((0, 2), (2, 0), (1, 3), (3, 1))  # [state][parity of the level]


def dq_dequantize(k, xp):
    """Reconstruction in step units of level matrix `k` (rows are independent walks)."""
    state = xp.zeros(k.shape[0], dtype=xp.int64)
    out = xp.empty(k.shape, dtype=xp.float64)
    table = xp.asarray(NEXT_STATE, dtype=xp.int64)
    for j in range(k.shape[1]):
        kj = k[:, j]
        out[:, j] = xp.where(state < 2, 2 * kj, 2 * kj - xp.sign(kj)).astype(xp.float64)
        state = table[state, kj & 1]
    return out


def _dq_options(a, sign, ctx, origin: int, bits, worst, size: int, lam: float, quantizer: int, xp):
    """For one column and one quantizer: per parity p, the best (cost, signed level)."""
    if quantizer == 0:  # levels recon 2m: nearest pair around a/2
        m = xp.floor(a / 2)
        pair = ((m, 2 * m), (m + 1, 2 * m + 2))
    else:  # recon 2m - 1 for m > 0: nearest pair of odd values around a
        m = xp.floor((a + 1) / 2)
        pair = ((m, xp.maximum(2 * m - 1, 0)), (m + 1, 2 * m + 1))
    zero = xp.zeros_like(a)
    best = [None, None]
    for mag, recon in (*pair, (zero, zero)):
        level = sign * mag
        idx = level.astype(xp.int64) - origin
        inside = (idx >= 0) & (idx < size)
        rate = xp.where(inside, bits[ctx, xp.clip(idx, 0, size - 1)], worst[ctx])
        d = a - recon
        cost = d * d + lam * rate
        parity = mag.astype(xp.int64) & 1
        for p in (0, 1):
            c = xp.where(parity == p, cost, xp.inf)
            if best[p] is None:
                best[p] = (c, level)
            else:
                better = c < best[p][0]
                best[p] = (xp.where(better, c, best[p][0]), xp.where(better, level, best[p][1]))
    return best


def dq_trellis(x, ctx, origin: int, bits, lam: float, xp):
    """Viterbi over each row (vectorised across rows): int64 levels minimising
    sum (x - recon)^2 + lam * bits(level | context[, state]), x in step units (rows x cols).

    bits is [context, level - origin] or [context, states, level - origin] with states 1,
    or 4 when the entropy model prices a level by the state it is coded in.
    """
    rows, cols = x.shape
    if bits.ndim == 2:
        bits = bits[:, None, :]
    stateful = bits.shape[1] == 4
    size = bits.shape[2]
    cost = xp.full((rows, 4), xp.inf)
    cost[:, 0] = 0.0
    choice = xp.zeros((cols, rows, 4), dtype=xp.bool_)  # which of the two predecessors won
    # predecessors of each next state: (state, parity) pairs, in NEXT_STATE's order
    preds = [[(s, p) for s in range(4) for p in (0, 1) if NEXT_STATE[s][p] == t] for t in range(4)]
    # option sets: one per quantizer, or one per state when rates depend on the state
    sets = [(s >> 1, s) for s in range(4)] if stateful else [(0, 0), (1, 0)]
    tables = [(bits[:, k, :], bits[:, k, :].max(axis=1) + 1.0) for _, k in sets]
    option = (lambda s: s) if stateful else (lambda s: s >> 1)

    def options(j):
        v = x[:, j].astype(xp.float64)
        a, sign = xp.abs(v), xp.where(v < 0, -1.0, 1.0)
        return [_dq_options(a, sign, ctx[:, j], origin, b, worst, size, lam, q, xp)
                for (q, _), (b, worst) in zip(sets, tables, strict=True)]

    kept = xp.empty((cols, 2 * len(sets), rows), dtype=xp.int32)  # the level of each (option set, parity)
    for j in range(cols):
        opts = options(j)
        for o in range(len(sets)):
            for p in (0, 1):
                kept[j, 2 * o + p] = opts[o][p][1]
        new = xp.empty_like(cost)
        for t in range(4):
            (s0, p0), (s1, p1) = preds[t]
            c0 = cost[:, s0] + opts[option(s0)][p0][0]
            c1 = cost[:, s1] + opts[option(s1)][p1][0]
            choice[j, :, t] = c1 < c0
            new[:, t] = xp.minimum(c0, c1)
        cost = new
    levels = xp.empty((rows, cols), dtype=xp.int64)
    state = xp.argmin(cost, axis=1)
    rows_idx = xp.arange(rows)
    pred_state = xp.asarray([[s for s, _ in preds[t]] for t in range(4)], dtype=xp.int64)
    pred_parity = xp.asarray([[p for _, p in preds[t]] for t in range(4)], dtype=xp.int64)
    for j in range(cols - 1, -1, -1):
        second = choice[j, rows_idx, state].astype(xp.int64)
        prev, parity = pred_state[state, second], pred_parity[state, second]
        levels[:, j] = kept[j, 2 * (prev if stateful else prev >> 1) + parity, rows_idx]
        state = prev
    return levels
