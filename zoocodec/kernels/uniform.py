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
