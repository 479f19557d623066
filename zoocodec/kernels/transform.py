"""Transform quantization (Young et al.): decorrelate, then allocate bits by reverse water-filling.

A tensor's 2-D view (rows x cols) is cut into vectors of `block` consecutive weights
along each row (the last one edge-padded). A b x b orthonormal transform T maps each
vector x to coefficients y = T x; coefficient k of every vector forms group k.
- dct: T is the orthonormal DCT-II (fixed, nothing stored);
- klt: T holds the eigenvectors of the layer's b x b second-moment matrix (PCA), stored.

Reverse water-filling gives group k the distortion D_k = min(theta, var_k) at rate
R_k = max(0, log2(var_k / theta) / 2) (Gaussian RD function). With entropy-coded
uniform quantizers D = step^2 / 12, so every coded group shares one step sqrt(12 theta)
and the groups with var_k <= theta are dropped (zero bits, reconstructed as 0).
The Gaussian rate misses the real one (by +0.25 bit at high rate, more at low rate on
heavy-tailed weights), so a bit budget is met by searching theta on the measured
order-0 entropy of the symbols instead (fit_theta).
"""
from __future__ import annotations

import math

import numpy as np


def dct_matrix(b: int) -> np.ndarray:
    """Orthonormal DCT-II analysis matrix (b x b), rows are basis vectors; always NumPy float64."""
    k = np.arange(b)[:, None]
    i = np.arange(b)[None, :]
    m = np.sqrt(2.0 / b) * np.cos(np.pi * (2 * i + 1) * k / (2 * b))
    m[0] /= np.sqrt(2.0)
    return m


def to_blocks(w2, b: int, xp):
    """(rows, cols) -> (rows * ceil(cols/b), b) vectors, the last one per row edge-padded."""
    rows, cols = w2.shape
    cp = -(-cols // b) * b
    if cp != cols:
        w2 = xp.concatenate([w2, xp.repeat(w2[:, -1:], cp - cols, axis=1)], axis=1)
    return w2.reshape(rows * (cp // b), b)


def from_blocks(v, rows: int, cols: int, xp):
    """The inverse of to_blocks (drops the padding)."""
    return v.reshape(rows, -1)[:, :cols]


def klt_matrix(x, xp):
    """Eigenvectors of the vectors' second moment x^T x / N, as rows, by decreasing eigenvalue."""
    c = x.T @ x / max(x.shape[0], 1)
    vals, vecs = xp.linalg.eigh(c)
    return vecs[:, ::-1].T


def water_fill_theta(variances: np.ndarray, bits: float) -> float:
    """The water level theta at which the mean Gaussian rate over the groups equals `bits`.

    Bisection in log(theta); `variances` is small (one per group) and lives on the host.
    """
    v = np.asarray(variances, dtype=np.float64)
    v = v[v > 0]
    if v.size == 0 or bits <= 0:
        return float(v.max()) if v.size else 1.0
    n = len(variances)

    def rate(log_theta: float) -> float:
        return float(np.maximum(0.0, 0.5 * (np.log2(v) - log_theta / math.log(2))).sum() / n)

    lo = math.log(v.min()) - 2 * math.log(2) * (bits + 1)  # rate(lo) >= bits
    hi = math.log(v.max())  # rate(hi) == 0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rate(mid) > bits else (lo, mid)
    return math.exp(hi)


def coded_rate(y, theta: float, variances, xp) -> float:
    """Order-0 entropy of the symbols at water level theta, bits per coefficient (all groups).

    Groups are coded in the streams of `streams`; one histogram over (stream, symbol) pairs
    gives every stream's counts at once.
    """
    active, rate = allocate(variances, theta)
    if not active.any() or y.shape[0] == 0:
        return 0.0
    s = quantize(y, active, math.sqrt(12 * theta), xp)
    s = s - s.min()
    span = int(s.max()) + 1
    stream_of = np.zeros(len(rate), dtype=np.int64)
    sizes = []
    for i, groups in enumerate(streams(active, rate)):
        stream_of[groups] = i
        sizes.append(len(groups) * y.shape[0])
    keys = (s + span * xp.asarray(stream_of[active])[None, :]).ravel()
    if span * s.shape[1] <= 1 << 22:
        counts = xp.bincount(keys)
        counts = counts[counts > 0]
    else:  # wide alphabets: sort instead of a huge histogram
        counts = xp.unique(keys, return_counts=True)[1]
    counts = counts.astype(xp.float64)
    n = np.array(sizes, dtype=np.float64)
    bits = float((n * np.log2(n)).sum()) - float((counts * xp.log2(counts)).sum())  # sum of n H per stream
    return bits / y.size


def fit_theta(y, variances, bits: float, xp, iterations: int = 40) -> float:
    """The water level whose coded rate (coded_rate) is `bits`, by bisection in log(theta).

    Steps stay above 2**-20 of the largest coefficient: data with less entropy than the
    budget (a constant tensor) gets that finest step rather than an endless search.
    """
    v = np.asarray(variances, dtype=np.float64)
    peak = float(xp.abs(y).max()) if y.size else 0.0
    if not (v > 0).any() or peak == 0:
        return 1.0

    def rate(log_theta: float) -> float:
        return coded_rate(y, math.exp(log_theta), v, xp)

    hi = math.log(v.max())  # nothing coded: rate 0
    floor = math.log(peak**2 * 2.0**-40 / 12)
    lo = max(math.log(water_fill_theta(v, bits)), floor)
    while rate(lo) < bits and lo > floor:
        lo = max(lo - 2.0, floor)
    if rate(lo) < bits:
        return math.exp(lo)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rate(mid) > bits else (lo, mid)
    return math.exp(hi)


def allocate(variances: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per group: coded (var > theta) and the Gaussian rate in bits per coefficient."""
    v = np.asarray(variances, dtype=np.float64)
    active = v > theta
    rate = np.where(active, 0.5 * np.log2(np.where(active, v, 1.0) / theta), 0.0)
    return active, rate


def streams(active, rate) -> list[list[int]]:
    """Coded groups whose Gaussian rates round to the same whole bit share one coded stream."""
    classes = np.rint(rate)
    return [[int(g) for g in np.flatnonzero(active & (classes == c))] for c in np.unique(classes[active])]


def quantize(y, active, step: float, xp):
    """int64 symbols of the coded groups only: (vectors, number of coded groups)."""
    return xp.rint(y[:, xp.asarray(active)] / step).astype(xp.int64)


def reconstruct(symbols, active, step: float, t, xp):
    """Coefficients from symbols (dropped groups are 0), then x = y T (inverse transform)."""
    y = xp.zeros((symbols.shape[0], t.shape[0]), dtype=xp.float64)
    y[:, xp.asarray(active)] = symbols.astype(xp.float64) * step
    return y @ t
