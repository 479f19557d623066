"""Batched k-means, LNQ and PQ kernels on the CPU (NumPy) path."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from zoocodec.kernels import kmeans as K, lnq as L, pq as P


def laplace(shape, seed=0, scale=0.05):
    return np.random.default_rng(seed).laplace(0, scale, shape).astype(np.float32)


def nearest_distance(x, c):
    return np.abs(x[:, :, None] - c[:, None, :]).min(axis=2)


def test_indices_are_the_nearest_centroid():
    x = laplace((37, 300))
    c, idx = K.kmeans(x, 5, iters=15)
    assert np.all(np.diff(c, axis=1) >= 0)
    got = np.abs(x - np.take_along_axis(c, idx.astype(np.int64), 1))
    # midpoints are float32: a value may sit one ulp on the other side of the exact midpoint
    assert np.all(got <= nearest_distance(x, c) + 1e-7)


def test_converged_centroids_are_cluster_means():
    x = laplace((4, 2000))
    c, idx = K.kmeans(x, 8, iters=200)
    for b in range(4):
        for j in np.unique(idx[b]):
            assert c[b, j] == pytest.approx(x[b][idx[b] == j].astype(np.float64).mean(), rel=1e-6, abs=1e-9)


def test_seeded_and_deterministic():
    x = laplace((3, 5000))
    a = K.kmeans(x, 16, seed=7)
    b = K.kmeans(x, 16, seed=7)
    c = K.kmeans(x, 16, seed=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_fixed_point_sums_are_exact():
    x = laplace((2, 10_000), scale=3.0)
    c = K.kmeanspp_init(x, 4)
    scales = K.fixed_point_scales(x)
    sums, counts = K.cluster_sums(x, c, scales)
    idx = K.assign(x, c)
    for b in range(2):
        for j in range(4):
            q = [int(v) for v in np.rint(x[b][idx[b] == j].astype(np.float64) * scales[b])]
            assert int(sums[b, j]) == sum(q) and counts[b, j] == len(q)


def test_chunked_path_matches_one_tile(monkeypatch):
    """Memory bound: tiny tiles (many per problem and many problems per tile) give the same result."""
    monkeypatch.setattr(K, "SORT_LIMIT", 0)
    x = laplace((5, 3001))
    whole = K.kmeans(x, 16, iters=10)
    monkeypatch.setattr(K, "CHUNK", 1000)
    tiled = K.kmeans(x, 16, iters=10)
    monkeypatch.setattr(K, "CHUNK", 7000)
    rows = K.kmeans(x, 16, iters=10)
    for a, b in (whole, tiled), (whole, rows):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("shape,k", [((1, 50_000), 16), ((40, 999), 4), ((300, 64), 3), ((3, 5000), 256)])
def test_sorted_path_matches_streaming_pass(shape, k, monkeypatch):
    """The sorted prefix-sum path and the streaming pass (the GPU kernel's algorithm) agree exactly."""
    x = laplace(shape, seed=4)
    c0 = K.kmeanspp_init(x, k)
    scales = K.fixed_point_scales(x)
    sums, counts = K.SortedSums(x, scales)(c0)
    ref_sums, ref_counts = K.cluster_sums(x, c0, scales)
    assert np.array_equal(sums, ref_sums) and np.array_equal(counts, ref_counts)
    fast = K.kmeans(x, k, iters=8)
    monkeypatch.setattr(K, "SORT_LIMIT", 0)
    slow = K.kmeans(x, k, iters=8)
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])


def test_batched_search_matches_searchsorted():
    x = laplace((6, 999))
    c = K.kmeanspp_init(x, 256)
    batched = K.assign(x, c)
    single = np.stack([K.assign(x[b : b + 1], c[b : b + 1])[0] for b in range(6)])
    assert np.array_equal(batched, single)


def test_lloyd_matches_scikit_learn_from_the_same_start():
    sklearn = pytest.importorskip("sklearn.cluster")
    x = laplace((1, 5000), seed=3)
    c0 = K.kmeanspp_init(x, 16)
    c = K.lloyd(x, c0, iters=300)
    idx = K.assign(x, c)
    ours = float(((x.astype(np.float64) - np.take_along_axis(c, idx.astype(np.int64), 1)) ** 2).sum())
    km = sklearn.KMeans(16, init=c0.reshape(-1, 1), n_init=1, algorithm="lloyd", max_iter=300, tol=0)
    km.fit(x.reshape(-1, 1).astype(np.float64))
    assert ours == pytest.approx(km.inertia_, rel=1e-5)
    assert np.allclose(np.sort(km.cluster_centers_.ravel()), c[0], rtol=1e-5, atol=1e-8)


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40),
                  elements=st.floats(-1e4, 1e4, width=32)),
       st.integers(1, 40), st.integers(0, 5))
@settings(max_examples=150, deadline=None)
def test_any_batch(x, k, iters):
    """Constant rows, k above the number of distinct values, zeros, empty batches."""
    c, idx = K.kmeans(x, k, iters=iters)
    assert c.shape == (x.shape[0], k) and idx.shape == x.shape
    assert np.all(np.diff(c, axis=1) >= 0) and np.isfinite(c).all()
    if x.size:
        assert int(idx.max()) < k
        recon = np.take_along_axis(c, idx.astype(np.int64), 1)
        assert np.all(np.abs(x.astype(np.float64) - recon) <= nearest_distance(x, c) * (1 + 1e-6) + 1e-3)
        distinct = [np.unique(r) for r in x]
        for b, d in enumerate(distinct):
            if len(d) <= k and iters > 0:  # enough centroids: every value is its own centroid, up to
                # the fixed-point resolution of the sums (2**-28 of the row's largest value) and one
                # float32 ulp (two centroids one ulp apart can round their midpoint onto one of them)
                bound = np.abs(x[b]).max() * 2.0**-28 + np.spacing(np.abs(x[b]))
                assert np.all(np.abs(recon[b] - x[b]) <= bound)


def test_all_zero_and_constant():
    c, idx = K.kmeans(np.zeros((2, 50), np.float32), 8)
    assert np.all(c == 0)
    c, idx = K.kmeans(np.full((1, 50), -2.5, np.float32), 4)
    assert np.all(np.take_along_axis(c, idx.astype(np.int64), 1) == -2.5)


# --- LNQ -------------------------------------------------------------------------------

def test_lnq_layout_covers_every_element_once():
    for shape, unit in [((20, 13), 8), ((16, 16), 8), ((5, 3, 3, 3), 8), ((30,), 4), ((0, 4), 8)]:
        lay = L.layout(shape, unit)
        assert np.array_equal(np.sort(lay.order), np.arange(int(np.prod(shape))))
        assert lay.sizes.sum() == int(np.prod(shape))
        seen = np.concatenate([pos.ravel() for _, pos in lay.groups()]) if lay.count else np.zeros(0)
        assert np.array_equal(np.sort(seen), np.arange(int(np.prod(shape))))


def test_lnq_blocks_are_square_tiles():
    lay = L.layout((16, 24), 8)
    first = lay.order[lay.starts[1] : lay.starts[1] + lay.sizes[1]]
    rows, cols = np.divmod(first, 24)
    assert set(rows) == set(range(8)) and set(cols) == set(range(8, 16))


def test_lnq_units_get_integer_ternary_codebooks():
    q = np.rint(laplace((1000, 64), scale=4.0))
    cb, idx = L.cluster_units(q, 3)
    assert cb.shape == (1000, 3) and np.all(np.diff(cb, axis=1) >= 0)
    recon = np.take_along_axis(cb, idx.astype(np.int64), 1)
    assert np.all(np.abs(q - recon) <= np.abs(q[:, :, None] - cb[:, None, :]).min(axis=2) + 1e-9)


def test_lnq_rd_choice_follows_lambda():
    q = np.rint(laplace((300, 64), scale=2.0, seed=1)).astype(np.int64)
    z = q + np.random.default_rng(2).uniform(-0.5, 0.5, q.shape)
    cb, idx = L.cluster_units(q.astype(np.float32), 3)
    idx = idx.astype(np.int64)
    level = np.take_along_axis(cb, idx, 1)
    unit_of = np.repeat(np.arange(300), 64)
    ratios = [L.rd_choice(((z - q) ** 2).ravel(), ((z - level) ** 2).ravel(), q.ravel(), idx.ravel(), cb,
                          unit_of, 300, lam).mean() for lam in (0.0, 0.12, 2.0, 50.0)]
    assert ratios[0] == 0 and ratios == sorted(ratios) and ratios[-1] > 0.5


# --- PQ --------------------------------------------------------------------------------

def test_pq_assigns_the_nearest_vector():
    v = laplace((3, 2000, 4))
    c, idx = P.pq_kmeans(v, 32, iters=10)
    d = ((v[:, :, None, :].astype(np.float64) - c[:, None, :, :]) ** 2).sum(-1)
    got = np.take_along_axis(d, idx.astype(np.int64)[:, :, None], 2)[:, :, 0]
    assert np.all(got <= d.min(axis=2) * (1 + 1e-5) + 1e-12)


def test_pq_trains_on_a_sample_and_assigns_all():
    v = laplace((1, 5000, 2))
    c, idx = P.pq_kmeans(v, 8, iters=10, train=16)
    assert idx.shape == (1, 5000) and len(np.unique(idx)) == 8


@given(hnp.arrays(np.float32, st.tuples(st.integers(0, 3), st.integers(0, 30), st.integers(1, 4)),
                  elements=st.floats(-100, 100, width=32)), st.integers(1, 20))
@settings(max_examples=80, deadline=None)
def test_pq_any_batch(v, k):
    c, idx = P.pq_kmeans(v, k, iters=3)
    assert c.shape == (v.shape[0], k, v.shape[2]) and idx.shape == v.shape[:2]
    if v.size:
        assert int(idx.max()) < k and np.isfinite(c).all()


@pytest.mark.parametrize("shape, k, gx, scale", [((1, 1 << 16), 16, 1056, 0.05), ((64, 4096), 4, 16, 0.05),
                                                  ((3, 3001), 16, 1, 3.0), ((2, 4096), 2, 1, 0.05),
                                                  ((5, 999), 9, 2, 1e6), ((4, 512), 16, 1, 1e-30)])
def test_pass16_kernel_adds_the_cpu_sums(shape, k, gx, scale):
    """kmeans.cu's lloyd_pass16, transliterated (register search, packed per-lane words, float32
    scaling where exact): the integer sums and counts of cluster_sums(), the indices of assign()."""
    x = laplace(shape, scale=scale)
    x[0, :4] = [0.0, -0.0, x.max(), x.min()]
    c = K.lloyd(x, K.kmeanspp_init(x, k), 3)  # centroids as Lloyd leaves them (duplicates possible)
    scales = K.fixed_point_scales(x)
    sums, counts = K.lloyd_pass16_emulated(x, c, scales, gx)
    want_sums, want_counts = K.cluster_sums(x, c, scales)
    assert np.array_equal(sums, want_sums.astype(np.int64)) and np.array_equal(counts, want_counts)
    assert np.array_equal(K.search16_emulated(K.midpoints(c), x), K.assign(x, c))


def test_pass16_packing_is_refused_where_a_lane_could_overflow():
    assert K.pack16(1 << 16, 1056 * 128) is not None
    assert K.pack16(1 << 26, 128) is None  # 2**19 values on one lane: its sum would reach its count's bits
    x = laplace((1, 1 << 16), scale=1.0)
    c = K.kmeanspp_init(x, 16)
    with pytest.raises(ValueError):
        K.lloyd_pass16_emulated(x, c, K.fixed_point_scales(x), gx=1, threads=1)
