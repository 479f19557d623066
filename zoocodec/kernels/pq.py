"""Batched vector k-means for product quantization: B problems of N vectors of length m.

Each problem (a group of columns of a weight matrix) has its own codebook of k vectors.
Centroids are ranked with a batched matrix product, and the best two re-compared with
exact elementwise float32 distances (see assign); centroid sums use the fixed-point
trick of kmeans.py, so they are exact in any order. Ties go to the lowest index.
Empty clusters keep their centroid.
"""
from __future__ import annotations

import numpy as np

from zoocodec.kernels.backend import array_namespace, to_numpy
from zoocodec.kernels.kmeans import CHUNK, fixed_point_scales


def init(v, k: int, seed: int = 0, sample: int = 4096):
    """Seeded k-means++ on at most `sample` vectors per problem -> float32 (B, k, m)."""
    xp = array_namespace(v)
    B, N, m = v.shape
    rng = np.random.default_rng(seed)
    if N <= sample:
        s = to_numpy(v).astype(np.float64)
    else:
        pos = rng.integers(0, N, size=(B, sample))
        s = to_numpy(v[xp.arange(B)[:, None], xp.asarray(pos)]).astype(np.float64)
    S = s.shape[1]
    rows = np.arange(B)
    c = np.empty((B, k, m), dtype=np.float64)
    c[:, 0] = s[rows, rng.integers(0, S, size=B)]
    d2 = ((s - c[:, :1]) ** 2).sum(axis=2)
    for j in range(1, k):  # a loop over centroids; each step is one op over the batch
        cum = np.cumsum(d2, axis=1)
        u = rng.random(B) * cum[:, -1]
        pick = np.minimum((cum <= u[:, None]).sum(axis=1), S - 1)
        c[:, j] = s[rows, pick]
        np.minimum(d2, ((s - c[:, j : j + 1]) ** 2).sum(axis=2), out=d2)
    return xp.asarray(c.astype(np.float32))


def _tile_rows(B: int, k: int) -> int:
    return max(1, CHUNK // max(B * k, 1))


def assign(v, c):
    """Index (B, N) of the nearest centroid (squared Euclidean) of each vector.

    A batched matrix product ranks the centroids (fast, but its rounding depends on the
    BLAS or GPU library); the best two are then compared by exact elementwise distances,
    so both devices agree unless a third centroid is within rounding of the best two.
    """
    xp = array_namespace(v)
    B, N, m = v.shape
    k = c.shape[1]
    out = xp.empty((B, N), dtype=xp.uint8 if k <= 256 else xp.uint16)
    norms = (c * c).sum(axis=2)[:, None, :]
    ct = xp.ascontiguousarray(c.transpose(0, 2, 1))
    rows = _tile_rows(B, k)
    for n0 in range(0, N, rows):
        tile = v[:, n0 : n0 + rows]
        d = norms - 2 * xp.matmul(tile, ct)
        best = xp.argmin(d, axis=2)[:, :, None]
        if k > 1:
            second = xp.argmin(xp.where(xp.arange(k) == best, xp.inf, d), axis=2)[:, :, None]
            e1, e2 = _exact(tile, c, best), _exact(tile, c, second)
            best = xp.where((e2 < e1) | ((e2 == e1) & (second < best)), second, best)
        out[:, n0 : n0 + rows] = best[:, :, 0]
    return out


def _exact(tile, c, which):
    """Squared distance of each vector to the centroid `which` (B, n, 1), dimension by dimension."""
    xp = array_namespace(tile)
    picked = c[xp.arange(c.shape[0])[:, None], which[:, :, 0]]  # (B, n, m)
    d = xp.zeros(which.shape, dtype=xp.float32)
    for j in range(tile.shape[2]):  # a loop over the sub-vector's dimensions
        diff = tile[:, :, j : j + 1] - picked[:, :, j : j + 1]
        d += diff * diff
    return d


def lloyd(v, c, iters: int):
    """Lloyd iterations; returns the final codebook (B, k, m) float32."""
    xp = array_namespace(v)
    B, N, m = v.shape
    k = c.shape[1]
    if B * N == 0:
        return c
    scales = fixed_point_scales(v)[:, None]
    flat_base = (xp.arange(B) * k)[:, None]
    for _ in range(iters):
        a = (assign(v, c).astype(xp.int64) + flat_base).ravel()
        counts = xp.bincount(a, minlength=B * k).reshape(B, k)
        sums = xp.stack(
            [xp.bincount(a, weights=xp.rint(v[:, :, j].astype(xp.float64) * scales).ravel(), minlength=B * k)
             for j in range(m)], axis=1,
        ).reshape(B, k, m)
        mean = ((sums / xp.maximum(counts, 1)[:, :, None]) / scales[:, :, None]).astype(xp.float32)
        new = xp.where((counts > 0)[:, :, None], mean, c)
        if bool(xp.array_equal(new, c)):
            break
        c = new
    return c


def pq_kmeans(v, k: int, iters: int = 20, seed: int = 0, sample: int = 4096, train: int = 256):
    """Batched vector k-means of v (B, N, m) -> (codebook (B, k, m) float32, indices (B, N)).

    Lloyd runs on at most `train` * k seeded random vectors per problem (faiss's default
    of 256 points per centroid); every vector is then assigned to the final codebook.
    """
    xp = array_namespace(v)
    v = xp.ascontiguousarray(v, dtype=xp.float32)
    if not 1 <= k <= 65536:
        raise ValueError(f"k must be 1..65536, got {k}")
    B, N, m = v.shape
    if B * N == 0:
        return xp.zeros((B, k, m), dtype=xp.float32), xp.zeros((B, N), dtype=xp.uint8)
    fit = v
    if N > train * k:
        pos = np.sort(np.random.default_rng(seed + 1).choice(N, train * k, replace=False))
        fit = xp.ascontiguousarray(v[:, xp.asarray(pos)])
    c = lloyd(fit, init(fit, k, seed, sample), iters)
    return c, assign(v, c)
