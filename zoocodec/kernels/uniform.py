"""Uniform scalar quantization: symbols = round(w / step), w_hat = symbols * step.

One step for the whole tensor (or model), or one step per output channel (axis 0).
Arithmetic is float64 so that |w - w_hat| <= step/2 holds up to one float64 ulp.
"""
from __future__ import annotations


def absmax_steps(w, bits: int, per_channel: bool, xp):
    """Symmetric min-max steps for `bits`-bit signed levels: absmax / (2**(bits-1) - 1).

    Per channel: one step per row of the 2-D view (out_channels x rest). Rows that are
    all zero get step 1 so they still quantize to 0; an empty tensor gets one step.
    """
    levels = (1 << (bits - 1)) - 1
    if w.size == 0:
        return xp.ones((1,), dtype=xp.float64)
    w2 = w.reshape(w.shape[0], -1) if (per_channel and w.ndim >= 2) else w.reshape(1, -1)
    amax = xp.max(xp.abs(w2), axis=1).astype(xp.float64)
    return xp.where(amax > 0, amax / levels, 1.0)


def quantize(w, steps, xp):
    """Nearest-level symbols (int64) for `w` given one step per row of its 2-D view."""
    rows = steps.shape[0]
    w2 = w.reshape(rows, -1).astype(xp.float64)
    return xp.rint(w2 / steps[:, None]).astype(xp.int64).reshape(w.shape)


def dequantize(symbols, steps, xp):
    """float64 reconstruction symbols * step (steps: one per row of the 2-D view)."""
    rows = steps.shape[0]
    s2 = symbols.reshape(rows, -1).astype(xp.float64)
    return (s2 * steps[:, None]).reshape(symbols.shape)


# ---- group-wise steps (and offsets) along a row ------------------------------------------
# A row of the 2-D view is cut into groups of `group` consecutive weights (the last one
# shorter when `group` does not divide the row). Side values come one per group,
# as arrays of shape (rows, groups).

def group_count(cols: int, group: int) -> int:
    return -(-cols // group)


def group_ranges(w2, group: int, xp):
    """(min, max) of every group of the float64 rows `w2`, each (rows, groups); the last,
    shorter group is padded with its own last value, which moves neither."""
    rows, cols = w2.shape
    pad = group_count(cols, group) * group - cols
    if pad:
        w2 = xp.concatenate([w2, xp.repeat(w2[:, -1:], pad, axis=1)], axis=1)
    g = w2.reshape(rows, -1, group)
    return g.min(axis=2), g.max(axis=2)


def expand(per_group, group: int, cols: int, xp):
    """(rows, groups) -> (rows, cols): each group's value over its weights."""
    return xp.repeat(per_group, group, axis=1)[:, :cols]


def quantize_groups(w2, steps, zeros, group: int, xp):
    """symbols = rint((w - zero) / step) per group (int64); `steps` (rows, groups) or a
    scalar array, `zeros` (rows, groups) or None."""
    cols = w2.shape[1]
    s = expand(steps, group, cols, xp) if steps.ndim == 2 else steps
    x = w2 - expand(zeros, group, cols, xp) if zeros is not None else w2
    return xp.rint(x / s).astype(xp.int64)


def dequantize_groups(s2, steps, zeros, group: int, xp):
    """float64 reconstruction symbols * step + zero per group (the inverse of quantize_groups)."""
    cols = s2.shape[1]
    s = expand(steps, group, cols, xp) if steps.ndim == 2 else steps
    r = s2.astype(xp.float64) * s
    return r + expand(zeros, group, cols, xp) if zeros is not None else r
