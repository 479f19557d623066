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
