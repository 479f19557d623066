"""Batched scalar k-means: B independent problems of n values each, solved together.

One problem is a whole tensor, one output channel, or one block; every step below is
one array operation over the whole batch (no Python loop over problems or weights).

- Init: k-means++ on at most `sample` values per problem, drawn with a seeded NumPy
  generator on the host, so the CPU and GPU paths start from the same centroids.
- Assignment: centroids are kept sorted, so the nearest one is found by counting the
  midpoints (float32, (c[j] + c[j+1]) * 0.5) that are <= x: a binary search. (Two
  centroids one float32 ulp apart can round their midpoint onto one of them; a value
  then goes to the neighbour, one ulp away.)
- Update: cluster sums are accumulated in fixed point, rint(x * 2**s) with s chosen so
  that every partial sum stays below 2**52. Integer addition is associative, so the
  sums, and hence the centroids and symbols, are bit-identical whatever the reduction
  order: NumPy's bincount, CuPy's atomics, or the fused CUDA kernel in kmeans.cu.
  s is set per problem; rounding moves a value by at most 2**-(s+1), below 2**-28 of
  the problem's largest magnitude for n < 2**24.
- Empty clusters take the centroid of the nearest non-empty cluster below (or above),
  which keeps the centroids sorted without a sort.
- Lloyd stops after `iters` iterations or when no centroid moved; an unchanged state
  is a fixed point, so stopping per problem or for the whole batch gives the same result.
- On the CPU, batches up to SORT_LIMIT values sort each row once; an iteration is then a
  binary search per centroid plus prefix-sum differences (SortedSums), O(k log n) instead
  of a pass over the weights. Larger batches stream over tiles of CHUNK values (the same
  pass as the CUDA kernel). Both give the same integer sums, hence the same centroids.

On CuPy arrays the heavy loops run in the CUDA kernels of kmeans.cu: one launch per
Lloyd iteration reads every weight once, assigns it, adds it to per-block shared-memory
sums (for k <= 16, lloyd_pass16: the midpoints in registers, each lane's count and sum of a
cluster packed in one word), and its last block per problem computes the new centroids; small problems
(n <= 4096, k <= 8, e.g. LNQ units) run every Lloyd iteration of one problem in one
warp. `cuda=False` runs the generic `xp` path (sorted or streaming) on CuPy instead.
"""
from __future__ import annotations

import functools

import numpy as np

from zoocodec.kernels.backend import array_namespace, cuda_source, to_numpy

CHUNK = 1 << 22  # values per tile on the streaming path: bounds the temporaries to ~100 MB
SORT_LIMIT = 1 << 25  # batches up to this many values take the sorted path (12 bytes per value)
SMALL_N, SMALL_K = 4096, 8  # problems the one-warp-per-problem CUDA kernel takes


def fixed_point_scales(x):
    """Per problem 2**s with n * max|x| * 2**s < 2**52: sums of rint(x * 2**s) are exact. (B,) float64."""
    xp = array_namespace(x)
    n = x.shape[1]
    flat = x.reshape(x.shape[0], -1)
    if flat.size == 0:
        return xp.ones(x.shape[0], dtype=xp.float64)
    maxabs = to_numpy(xp.max(xp.abs(flat), axis=1)).astype(np.float64)
    _, e = np.frexp(maxabs)  # maxabs < 2**e
    s = np.where(maxabs > 0, 52 - e - int(n).bit_length(), 0)
    return xp.asarray(np.ldexp(1.0, s))


def kmeanspp_init(x, k: int, seed: int = 0, sample: int = 4096):
    """Seeded k-means++ on at most `sample` values per problem -> sorted float32 (B, k)."""
    xp = array_namespace(x)
    B, n = x.shape
    rng = np.random.default_rng(seed)
    if n <= sample:
        s = to_numpy(x).astype(np.float64)
    else:
        pos = rng.integers(0, n, size=(B, sample))
        s = to_numpy(xp.take_along_axis(x, xp.asarray(pos), axis=1)).astype(np.float64)
    S = s.shape[1]
    rows = np.arange(B)
    c = np.empty((B, k), dtype=np.float64)
    c[:, 0] = s[rows, rng.integers(0, S, size=B)]
    d2 = (s - c[:, :1]) ** 2
    for j in range(1, k):  # a loop over centroids; each step is one op over the batch
        cum = np.cumsum(d2, axis=1)
        u = rng.random(B) * cum[:, -1]
        pick = np.minimum((cum <= u[:, None]).sum(axis=1), S - 1)
        c[:, j] = s[rows, pick]
        np.minimum(d2, (s - c[:, j : j + 1]) ** 2, out=d2)
    return xp.asarray(np.sort(c.astype(np.float32), axis=1))


def midpoints(c):
    xp = array_namespace(c)
    return (c[:, :-1] + c[:, 1:]) * xp.float32(0.5)


def assign(x, c):
    """Index of the nearest of the sorted centroids c (B, k) for each value of x (B, n)."""
    xp = array_namespace(x)
    B, n = x.shape
    out = xp.empty((B, n), dtype=xp.uint8)  # k <= 256
    for b0, b1, j0, j1 in _tiles(B, n):
        out[b0:b1, j0:j1] = _assign_tile(x[b0:b1, j0:j1], midpoints(c[b0:b1]), xp)
    return out


def _assign_tile(x, mids, xp):
    """Count of midpoints <= x: searchsorted for one problem, else direct counting (few
    midpoints) or a branch-free binary search with one gather per halving step."""
    nm = mids.shape[1]
    if nm == 0:
        return xp.zeros(x.shape, dtype=xp.int32)
    if x.shape[0] == 1:
        return xp.searchsorted(mids[0], x[0], side="right").astype(xp.int32)[None, :]
    if nm <= 4:  # a few midpoints: count them directly
        idx = xp.zeros(x.shape, dtype=xp.int32)
        for j in range(nm):
            idx += mids[:, j : j + 1] <= x
        return idx
    idx = xp.zeros(x.shape, dtype=xp.int32)
    step = 1 << (nm.bit_length() - 1)
    while step:
        j = idx + step
        probe = take_rows(mids, xp.minimum(j, nm) - 1)
        idx = xp.where((j <= nm) & (probe <= x), j, idx)
        step >>= 1
    return idx


def take_rows(a, idx):
    """a[b, idx[b, j]] for 2-D a: take_along_axis through one flat gather (much faster in NumPy)."""
    xp = array_namespace(a)
    offsets = (xp.arange(a.shape[0], dtype=idx.dtype) * a.shape[1])[:, None]
    return a.reshape(-1)[idx + offsets]


def _tiles(B: int, n: int):
    """(b0, b1, j0, j1) tiles of about CHUNK values covering the (B, n) batch."""
    if n >= CHUNK:
        for b in range(B):
            for j0 in range(0, n, CHUNK):
                yield b, b + 1, j0, min(n, j0 + CHUNK)
    else:
        rows = max(1, CHUNK // max(n, 1))
        for b0 in range(0, B, rows):
            yield b0, min(B, b0 + rows), 0, n


def cluster_sums(x, c, scales):
    """Fixed-point sums (float64, exact integers) and counts (int64) of each cluster, (B, k)."""
    xp = array_namespace(x)
    B, n = x.shape
    k = c.shape[1]
    sums = xp.zeros((B, k), dtype=xp.float64)
    counts = xp.zeros((B, k), dtype=xp.int64)
    for b0, b1, j0, j1 in _tiles(B, n):
        tile = x[b0:b1, j0:j1]
        a = _assign_tile(tile, midpoints(c[b0:b1]), xp)
        flat = (a + (xp.arange(b1 - b0, dtype=xp.int32) * k)[:, None]).ravel()
        q = xp.rint(tile.astype(xp.float64) * scales[b0:b1, None]).ravel()
        size = (b1 - b0) * k
        sums[b0:b1] += xp.bincount(flat, weights=q, minlength=size).reshape(b1 - b0, k)
        counts[b0:b1] += xp.bincount(flat, minlength=size).reshape(b1 - b0, k)
    return sums, counts


def update(c, sums, counts, scales):
    """New sorted centroids: cluster means; an empty cluster copies its nearest non-empty one below (else above)."""
    xp = array_namespace(c)
    k = c.shape[1]
    nonempty = counts > 0
    mean = ((sums / xp.maximum(counts, 1)) / scales[:, None]).astype(xp.float32)
    ar = xp.arange(k)
    nz_first = xp.argsort(xp.where(nonempty, ar, k + ar), axis=1)  # non-empty indices, ascending, first
    below = xp.maximum(xp.cumsum(nonempty, axis=1) - 1, 0)
    filled = take_rows(mean, take_rows(nz_first, below))
    return xp.where(nonempty.any(axis=1, keepdims=True), filled, c)


def lloyd(x, c, iters: int, cuda: bool | None = None):
    """Lloyd iterations from sorted centroids c (B, k) -> final centroids (B, k) float32."""
    xp = array_namespace(x)
    B, n = x.shape
    if B == 0 or n == 0:
        return c
    scales = fixed_point_scales(x)
    if xp is not np and cuda is not False:
        return _cuda_lloyd(x, c, iters, scales)
    sums_of = SortedSums(x, scales) if B * n <= SORT_LIMIT else (lambda c: cluster_sums(x, c, scales))
    for _ in range(iters):
        new = update(c, *sums_of(c), scales)
        if bool(xp.array_equal(new, c)):
            break
        c = new
    return c


class SortedSums:
    """cluster_sums() in O(k log n) per iteration: each row sorted once, with prefix sums.

    In sorted order every cluster is a run; its bounds are the counts of values below each
    midpoint (a binary search), its sum a difference of exact fixed-point prefix sums. The
    sums are the same integers cluster_sums() adds up, so the centroids are identical.
    Costs a sort and 12 bytes per value, hence only up to SORT_LIMIT values.
    """

    def __init__(self, x, scales):
        xp = array_namespace(x)
        self.xs = xp.sort(x, axis=1)
        B, n = x.shape
        self.prefix = xp.zeros((B, n + 1), dtype=xp.float64)
        self.prefix[:, 1:] = xp.cumsum(xp.rint(self.xs.astype(xp.float64) * scales[:, None]), axis=1)

    def __call__(self, c):
        xp = array_namespace(c)
        B, n = self.xs.shape
        below = _count_below(self.xs, midpoints(c))
        edges = xp.concatenate([xp.zeros((B, 1), dtype=below.dtype), below,
                                xp.full((B, 1), n, dtype=below.dtype)], axis=1)
        sums = take_rows(self.prefix, edges[:, 1:]) - take_rows(self.prefix, edges[:, :-1])
        return sums, xp.diff(edges, axis=1)


def _count_below(xs, v):
    """Per row, the number of values of the sorted row xs[b] that are < v[b, j] -> (B, len)."""
    xp = array_namespace(xs)
    B, n = xs.shape
    if B == 1:
        return xp.searchsorted(xs[0], v[0], side="left").astype(xp.int64)[None, :]
    idx = xp.zeros(v.shape, dtype=xp.int64)
    step = 1 << (n.bit_length() - 1)
    while step:
        j = idx + step
        probe = take_rows(xs, xp.minimum(j, n) - 1)
        idx = xp.where((j <= n) & (probe < v), j, idx)
        step >>= 1
    return idx


def kmeans(x, k: int, iters: int = 20, seed: int = 0, sample: int = 4096, cuda: bool | None = None):
    """Batched k-means of x (B, n) float32 -> (codebook (B, k) float32 sorted, indices (B, n)).

    Same symbols on NumPy and CuPy; `cuda` picks the CUDA kernels (default on CuPy).
    """
    xp = array_namespace(x)
    x = xp.ascontiguousarray(x, dtype=xp.float32)
    B, n = x.shape
    if not 1 <= k <= 256:
        raise ValueError(f"k must be 1..256, got {k}")
    if B * n == 0:
        return xp.zeros((B, k), dtype=xp.float32), xp.zeros((B, n), dtype=xp.uint8)
    c = lloyd(x, kmeanspp_init(x, k, seed, sample), iters, cuda)
    return c, assign_any(x, c, cuda)


def assign_any(x, c, cuda: bool | None = None):
    """assign() on either path (the CUDA kernel writes the same indices)."""
    xp = array_namespace(x)
    if xp is not np and cuda is not False and x.size:
        return _cuda_assign(xp.ascontiguousarray(x, dtype=xp.float32), xp.ascontiguousarray(c))
    return assign(x, c)


# --- CUDA (CuPy RawModule) ------------------------------------------------------------

THREADS = 128  # threads per block of lloyd_pass; per-lane shared sums for k <= 16


@functools.cache
def _module():
    import cupy  # GPU only

    return cupy.RawModule(code=cuda_source("kmeans.cu"), options=("-std=c++17",))


@functools.cache
def _kernel(name: str):
    return _module().get_function(name)


@functools.cache
def _sm_count() -> int:
    import cupy

    return cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())["multiProcessorCount"]


def _pass_launches(x, mids, scales, sums, counts, idx_out=None, c=None, done=None, changed=None):
    """(grid, shared bytes, args) of the lloyd_pass launches for a batch, built once and reused."""
    import cupy

    B, n = x.shape
    k = sums.shape[1]
    per_lane = k <= 16
    copies = THREADS if per_lane else THREADS // 32
    shared = copies * k * 12 + 4 * max(k - 1, 0)
    work = n // 4 if n % 4 == 0 else n
    top = 1 << (max(k - 1, 1).bit_length() - 1)
    null = cupy.uint64(0)
    launches = []
    for b0 in range(0, B, 65535):  # the grid's y extent is at most 65535 problems
        b1 = min(B, b0 + 65535)
        gx = _grid_x(work, b1 - b0)
        launches.append(((gx, b1 - b0), shared, (
            x[b0:b1], np.int64(n), np.int32(k), mids[b0:b1], np.int32(top), scales[b0:b1], np.int32(per_lane),
            sums[b0:b1], counts[b0:b1], null if idx_out is None else idx_out[b0:b1],
            null if c is None else c[b0:b1], null if done is None else done[b0:b1],
            null if changed is None else changed)))
    return launches


def _launch(launches) -> None:
    for launch in launches:
        name, (grid, shared, args) = (launch[0], launch[1:]) if len(launch) == 4 else ("lloyd_pass", launch)
        _kernel(name)(grid, (THREADS,), args, shared_mem=shared)


def _grid_x(work: int, problems: int) -> int:
    return max(1, min(-(-work // THREADS), (_sm_count() * 8) // problems or 1, 65535))


def pack16(n: int, lanes: int) -> int | None:
    """The shift of lloyd_pass16's packed words (count << pack, plus the signed fixed-point sum)
    for problems of n values spread over `lanes` threads, or None when a lane's count or sum
    could reach the other's bits. A lane visits at most L = 4 ceil(n / 4 / lanes) values, each
    |rint(x * scale)| <= 2**(52 - n.bit_length()) (fixed_point_scales): its count takes
    L.bit_length() bits, its sum must stay below 2**(pack - 1). (CudaLloyd's scales are
    fixed_point_scales'.)"""
    quads = -(-n // 4)
    most = 4 * -(-quads // lanes)
    pack = 63 - most.bit_length()
    return pack if most << (52 - n.bit_length()) < 1 << (pack - 1) else None


def float_scales(scales: np.ndarray) -> bool:
    """Whether lloyd_pass16 may scale in float32: every scale a power of two in [1, 2**126]
    (fixed_point_scales gives powers of two), so v * scale is exact in float32 as in double."""
    return bool(((scales >= 1) & (scales <= 2.0**126)).all())


def search16_emulated(mids, v):
    """kmeans.cu's search16 in NumPy: for (B, k - 1) sorted midpoints (k <= 16) and values
    (B, n), the count of midpoints <= each value, by the kernel's selects."""
    m = np.full((mids.shape[0], 15), np.inf, dtype=np.float32)
    m[:, : mids.shape[1]] = mids

    def at(j):
        return m[:, j : j + 1]

    a = np.where(at(7) <= v, 8, 0)
    p = np.where(a != 0, at(11), at(3))
    a += np.where(p <= v, 4, 0)
    p = np.where(a & 8, np.where(a & 4, at(13), at(9)), np.where(a & 4, at(5), at(1)))
    a += np.where(p <= v, 2, 0)
    p = np.where(a & 8, np.where(a & 4, np.where(a & 2, at(14), at(12)), np.where(a & 2, at(10), at(8))),
                 np.where(a & 4, np.where(a & 2, at(6), at(4)), np.where(a & 2, at(2), at(0))))
    return a + (p <= v)


def lloyd_pass16_emulated(x: np.ndarray, c: np.ndarray, scales: np.ndarray, gx: int, threads: int = THREADS):
    """The sums and counts one lloyd_pass16 launch of `gx` blocks adds up, in NumPy: each value
    to the lane that reads it (float4 loads when n % 4 == 0), packed words per (problem,
    cluster, block, lane) in wrapping int64, unpacked as the kernel's warps do -> (sums int64,
    counts int64), each (B, k); cluster_sums() gives the same integers where pack16 allows the launch."""
    B, n = x.shape
    k = c.shape[1]
    pack = pack16(n, gx * threads)
    if pack is None:
        raise ValueError(f"pack16 refuses {n} values over {gx * threads} lanes")
    a = search16_emulated(midpoints(c), x)
    if float_scales(scales):
        q = np.rint(x * scales.astype(np.float32)[:, None]).astype(np.int64)
    else:
        q = np.rint(x.astype(np.float64) * scales[:, None]).astype(np.int64)
    i = np.arange(n)
    lane = (i // 4 if n % 4 == 0 else i) % (gx * threads)
    words = np.zeros((B, k, gx, threads), dtype=np.int64)
    b = np.repeat(np.arange(B), n)
    with np.errstate(over="ignore"):
        np.add.at(words, (b, a.ravel(), np.tile(lane // threads, B), np.tile(lane % threads, B)),
                  (np.int64(1) << np.int64(pack)) + q.ravel())
        count = (words + (np.int64(1) << np.int64(pack - 1))) >> np.int64(pack)
        part = words - (count << np.int64(pack))
    return part.sum(axis=(2, 3)), count.sum(axis=(2, 3))


def _pass16_launches(x, mids, scales, sums, counts, c, done, changed):
    """lloyd_pass16's launches (k <= 16), or None where pack16 refuses a batch."""
    import cupy

    B, n = x.shape
    k = sums.shape[1]
    fscale = int(float_scales(scales.get()))
    launches = []
    for b0 in range(0, B, 65535):
        b1 = min(B, b0 + 65535)
        gx = _grid_x(n // 4 if n % 4 == 0 else n, b1 - b0)
        pack = pack16(n, gx * THREADS)
        if pack is None:
            return None
        launches.append(("lloyd_pass16", (gx, b1 - b0), THREADS * k * 8 + 4 * max(k - 1, 0), (
            x[b0:b1], np.int64(n), np.int32(k), mids[b0:b1], scales[b0:b1], np.int32(pack), np.int32(fscale),
            sums[b0:b1], counts[b0:b1], c[b0:b1], done[b0:b1], changed if changed is not None else cupy.uint64(0))))
    return launches


class CudaLloyd:
    """Device state of repeated fused Lloyd iterations (k > 8 or n > 4096): one launch each,
    of lloyd_pass16 for k <= 16 where its packed sums fit (pack16), else (or `pass16=False`,
    bench/bench_gpu.py's peer) of lloyd_pass."""

    def __init__(self, x, c, scales, pass16: bool = True):
        import cupy

        B, n = x.shape
        k = c.shape[1]
        self.c = cupy.ascontiguousarray(c, dtype=cupy.float32).copy()
        self.mids = cupy.ascontiguousarray(midpoints(self.c)) if k > 1 else cupy.zeros((B, 1), cupy.float32)
        self.changed = cupy.zeros(1, dtype=cupy.int32)
        sums, counts = cupy.zeros((B, k), dtype=cupy.int64), cupy.zeros((B, k), dtype=cupy.int32)
        done = cupy.zeros(B, dtype=cupy.int32)
        args = (x, self.mids, scales, sums, counts)
        self.launches = (_pass16_launches(*args, self.c, done, self.changed) if pass16 and 1 < k <= 16 else None) or \
            _pass_launches(*args, None, self.c, done, self.changed)

    def step(self) -> None:
        _launch(self.launches)


def _small(B: int, n: int, k: int) -> bool:
    return k <= SMALL_K and n <= SMALL_N


def _cuda_lloyd(x, c, iters, scales, check_every: int = 4):
    import cupy

    B, n = x.shape
    k = c.shape[1]
    if _small(B, n, k):
        c = cupy.ascontiguousarray(c, dtype=cupy.float32).copy()
        warps_per_block = 4
        _kernel("lloyd_small")(
            (-(-B // warps_per_block),), (32 * warps_per_block,),
            (x, np.int32(B), np.int32(n), np.int32(k), c, np.int32(iters), scales, cupy.uint64(0)),
        )
        return c
    plan = CudaLloyd(x, c, scales)
    for it in range(iters):
        plan.step()
        if check_every and (it + 1) % check_every == 0:  # a fixed point: stopping late changes nothing
            if not int(plan.changed.get()[0]):
                break
            plan.changed.fill(0)
    return plan.c


def _cuda_assign(x, c):
    import cupy

    B, n = x.shape
    k = c.shape[1]
    out = cupy.empty((B, n), dtype=cupy.uint8)
    if _small(B, n, k):
        warps_per_block = 4
        _kernel("lloyd_small")(
            (-(-B // warps_per_block),), (32 * warps_per_block,),
            (x, np.int32(B), np.int32(n), np.int32(k), c.copy(), np.int32(0), cupy.ones(B, cupy.float64), out),
        )
        return out
    mids = cupy.ascontiguousarray(midpoints(c)) if k > 1 else cupy.zeros((B, 1), dtype=cupy.float32)
    sums, counts = cupy.zeros((B, k), dtype=cupy.int64), cupy.zeros((B, k), dtype=cupy.int32)
    _launch(_pass_launches(x, mids, cupy.zeros(B, cupy.float64), sums, counts, out))
    return out
