"""Truncated SVD: W (rows x cols) ~ A B with A = U sqrt(S), B = sqrt(S) V^T, rank r."""
from __future__ import annotations


def factors(w2, rank: int | None, energy: float | None, xp):
    """A (rows x r) and B (r x cols), float64, and the chosen rank.

    rank: keep that many singular values (clipped to min(rows, cols));
    energy: the smallest rank whose singular values hold that fraction of sum(s^2).
    """
    u, s, vt = xp.linalg.svd(w2.astype(xp.float64), full_matrices=False)
    r = choose_rank(s, rank, energy, xp)
    root = xp.sqrt(s[:r])
    return u[:, :r] * root[None, :], root[:, None] * vt[:r], r


def choose_rank(s, rank: int | None, energy: float | None, xp) -> int:
    if rank is not None:
        return int(min(rank, s.shape[0]))
    e = s.astype(xp.float64) ** 2
    total = float(e.sum())
    if total == 0:
        return 0
    cum = xp.cumsum(e) / total
    return int(min(int(xp.searchsorted(cum, energy - 1e-12)) + 1, s.shape[0]))
