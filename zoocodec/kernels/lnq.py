"""Local non-linear quantization (LNQ, MPEG NNR / NCTM 3.0): units, per-unit clustering, RD choice.

The input is a uniformly quantized integer matrix. It is cut into LNQ units: square
blocks (unit x unit, 8x8 by default) of a fully connected layer's 2-D matrix, or one
filter (one output channel) of a conv layer. Each unit gets its own k-means codebook of
a few levels (3: ternary), found for all units at once by the batched k-means of
kmeans.py (on a GPU, one warp per unit); centroids are rounded to integers, i.e. LNQ
picks a unit's few levels from the uniform grid. Per unit, a rate-distortion choice
(D + lambda * R) keeps either the uniform symbols or the LNQ indices and codebook.

Units are listed in "unit-major" order: all elements of unit 0 in raster order, then
unit 1, ...; the decoder rebuilds the same order from the shape alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoocodec.kernels import kmeans
from zoocodec.kernels.backend import array_namespace


@dataclass
class Layout:
    """Where each unit's elements lie in the flat tensor (row-major 2-D view R x C)."""

    order: np.ndarray   # unit-major position -> flat element index
    starts: np.ndarray  # first unit-major position of each unit
    sizes: np.ndarray   # elements per unit

    @property
    def count(self) -> int:
        return int(self.sizes.shape[0])

    def unit_of(self) -> np.ndarray:
        """Unit id of every unit-major position."""
        return np.repeat(np.arange(self.count), self.sizes)

    def groups(self):
        """(unit ids, positions (units, size)) per distinct unit size: batches of equal problems."""
        for size in np.unique(self.sizes):
            units = np.flatnonzero(self.sizes == size)
            yield units, self.starts[units][:, None] + np.arange(size)[None, :]


def view2d(shape: tuple[int, ...]) -> tuple[int, int, bool]:
    """(rows, cols, filters): conv weights (>= 3-D) are one unit per filter, others blocks."""
    if len(shape) >= 3:
        return shape[0], int(np.prod(shape[1:])), True
    if len(shape) == 2:
        return shape[0], shape[1], False
    return 1, int(np.prod(shape)), False


def layout(shape: tuple[int, ...], unit: int) -> Layout:
    rows, cols, filters = view2d(shape)
    if rows * cols == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Layout(empty, empty, empty)
    if filters:
        return Layout(np.arange(rows * cols), np.arange(rows) * cols, np.full(rows, cols))
    r = np.arange(rows)[:, None] // unit
    c = np.arange(cols)[None, :] // unit
    uid = (r * -(-cols // unit) + c).ravel()
    order = np.argsort(uid, kind="stable")
    sizes = np.bincount(uid)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return Layout(order, starts, sizes)


def cluster_units(values, k: int, iters: int = 10, seed: int = 0, cuda: bool | None = None):
    """Per-unit k-means of integer levels (B, n) -> (integer codebook (B, k) sorted, indices (B, n))."""
    xp = array_namespace(values)
    c, _ = kmeans.kmeans(values, k, iters=iters, seed=seed, cuda=cuda)
    c = xp.rint(c)  # rounding keeps the order, so midpoint assignment stays valid
    return c.astype(xp.int64), kmeans.assign_any(xp.asarray(values, dtype=xp.float32), c.astype(xp.float32), cuda)


def code_lengths(symbols: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """-log2 p(symbol) under an order-0 model fitted on `fit` (add-half smoothing over the joint alphabet)."""
    if symbols.size == 0:
        return np.zeros(0)
    lo = min(int(symbols.min()), int(fit.min()) if fit.size else 0)
    hi = max(int(symbols.max()), int(fit.max()) if fit.size else 0)
    counts = np.bincount(fit - lo, minlength=hi - lo + 1).astype(np.float64) + 0.5
    return -np.log2(counts / counts.sum())[symbols - lo]


def rd_choice(err_uni: np.ndarray, err_lnq: np.ndarray, q: np.ndarray, idx: np.ndarray, cb: np.ndarray,
              unit_of: np.ndarray, units: int, lam: float, passes: int = 2) -> np.ndarray:
    """Per unit True where LNQ costs less: sum of D + lam * R, R under each group's own model.

    err_*: squared errors per unit-major position in step units; q, idx: uniform symbols and
    LNQ indices per position; cb: the (units, k) codebooks. The first pass fits the models on
    every unit, later passes on the units each group holds.
    """
    d_uni = np.bincount(unit_of, weights=err_uni, minlength=units)
    d_lnq = np.bincount(unit_of, weights=err_lnq, minlength=units)
    choose = np.zeros(units, dtype=bool)
    in_all = np.ones(units, dtype=bool)
    for p in range(passes):
        fit = in_all if p == 0 else choose
        fit_elems = fit[unit_of]
        uni_fit = in_all if p == 0 else ~choose
        r_uni = np.bincount(unit_of, weights=code_lengths(q, q[uni_fit[unit_of]]), minlength=units)
        r_idx = np.bincount(unit_of, weights=code_lengths(idx, idx[fit_elems]), minlength=units)
        r_cb = code_lengths(cb.ravel(), cb[fit].ravel()).reshape(cb.shape).sum(axis=1)
        choose = d_lnq + lam * (r_idx + r_cb) < d_uni + lam * r_uni
        if not choose.any():
            break
    return choose
