"""Magnitude pruning masks, and the pieces of their compact coding (packed bits, row classes).

The mask keeps the weights whose magnitude is above the `sparsity` quantile: globally
over the tensor, or per row (the same count kept in every row, so the kept weights form
a rows x k matrix and per-channel quantizers still see channels).
"""
from __future__ import annotations


def magnitude_mask(w, sparsity: float, xp):
    """Boolean mask of the kept weights: |w| above the k-th smallest, k = round(sparsity * n).

    Ties at the threshold are pruned too, so the result is a pure function of the values.
    """
    a = xp.abs(w.ravel())
    k = int(round(sparsity * a.size))
    if k == 0:
        return xp.ones(w.shape, dtype=bool)
    threshold = xp.partition(a, k - 1)[k - 1]
    return (a > threshold).reshape(w.shape)


def row_mask(w2, sparsity: float, xp):
    """Per row of a 2-D view: keep exactly the round((1 - sparsity) * cols) largest magnitudes.

    A stable sort on (magnitude, column) breaks ties by position, identically on every backend.
    """
    rows, cols = w2.shape
    keep = cols - int(round(sparsity * cols))
    order = xp.argsort(-xp.abs(w2), axis=1, kind="stable")[:, :keep]
    mask = xp.zeros((rows, cols), dtype=bool)
    mask[xp.arange(rows)[:, None], order] = True
    return mask


def pack(mask, xp):
    """Mask -> uint8 bytes, 8 flags each (row-major, big-endian bit order, zero-padded)."""
    return xp.packbits(mask.ravel().astype(xp.uint8))


def unpack(packed, count: int, xp):
    """uint8 bytes -> flat bool mask of `count` flags."""
    return xp.unpackbits(packed)[:count].astype(bool)


def row_classes(mask2, k: int, xp):
    """Rows ranked by their kept count and cut into k equal-size classes (0 = sparsest).

    Rows of one class share one coding probability; magnitude masks of real layers differ
    a lot between rows (input features of very different scale), so this saves 4-7% of
    the mask bits at 90% sparsity for about 3 bits per row of class indices.
    """
    rows = mask2.shape[0]
    order = xp.argsort(mask2.sum(axis=1), kind="stable")
    classes = xp.empty(rows, dtype=xp.int64)
    classes[order] = xp.arange(rows, dtype=xp.int64) * k // max(rows, 1)
    return classes


def byte_freqs(p128: int) -> list[int]:
    """Exact integer frequencies of the 256 bytes of 8 independent flags with P(1) = p128/128.

    Integers (at most 2**56) so encoder and decoder build the same model on every machine.
    """
    return [p128 ** bin(b).count("1") * (128 - p128) ** (8 - bin(b).count("1")) for b in range(256)]
