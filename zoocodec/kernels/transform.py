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
"""
from __future__ import annotations

import math

import numpy as np

HIGH_RATE_GAP = 0.5 * math.log2(2 * math.pi * math.e / 12)  # ECSQ minus Shannon bound, bits


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


def allocate(variances: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per group: coded (var > theta) and the Gaussian rate in bits per coefficient."""
    v = np.asarray(variances, dtype=np.float64)
    active = v > theta
    rate = np.where(active, 0.5 * np.log2(np.where(active, v, 1.0) / theta), 0.0)
    return active, rate


def quantize(y, active, step: float, xp):
    """int64 symbols of the coded groups only: (vectors, number of coded groups)."""
    return xp.rint(y[:, xp.asarray(active)] / step).astype(xp.int64)


def reconstruct(symbols, active, step: float, t, xp):
    """Coefficients from symbols (dropped groups are 0), then x = y T (inverse transform)."""
    y = xp.zeros((symbols.shape[0], t.shape[0]), dtype=xp.float64)
    y[:, xp.asarray(active)] = symbols.astype(xp.float64) * step
    return y @ t
