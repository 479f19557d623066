import numpy as np
import pytest

from zoocodec.kernels import prune as K
from zoocodec.kernels.backend import gpu_available


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_magnitude_mask_keeps_the_largest(sparsity):
    w = np.random.default_rng(0).laplace(size=(50, 70))
    m = K.magnitude_mask(w, sparsity, np)
    assert m.sum() == w.size - round(sparsity * w.size)  # continuous values: no ties
    if 0 < m.sum() < w.size:
        assert np.abs(w[m]).min() > np.abs(w[~m]).max()


def test_magnitude_mask_prunes_ties_together():
    w = np.array([0.0, 0.0, 0.0, 1.0, -2.0])
    assert K.magnitude_mask(w, 0.2, np).tolist() == [False, False, False, True, True]


def test_row_mask_keeps_the_same_count_per_row():
    w = np.random.default_rng(1).normal(size=(20, 33))
    w[3] = 0.5  # all ties: the first columns win
    m = K.row_mask(w, 0.75, np)
    assert np.all(m.sum(axis=1) == 33 - round(0.75 * 33))
    assert m[3].tolist() == [True] * 8 + [False] * 25
    i = 7
    assert np.abs(w[i][m[i]]).min() >= np.abs(w[i][~m[i]]).max()


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000])
def test_pack_round_trip(n):
    m = np.random.default_rng(n).random(n) < 0.3
    p = K.pack(m, np)
    assert p.dtype == np.uint8 and p.size == -(-n // 8)
    assert np.array_equal(K.unpack(p, n, np), m)


def test_row_classes_rank_rows_by_density():
    rng = np.random.default_rng(3)
    mask = rng.random((40, 50)) < rng.random((40, 1))
    c = K.row_classes(mask, 8, np)
    assert np.bincount(c).tolist() == [5] * 8  # equal-size classes
    counts = mask.sum(axis=1)
    assert all(counts[c == i].max() <= counts[c == i + 1].min() for i in range(7))


def test_byte_freqs_are_the_binomial_byte_model():
    f = np.array(K.byte_freqs(32), dtype=np.float64)  # P(1) = 1/4
    p = f / f.sum()
    assert f.sum() == 128**8  # exact integers
    assert p[0] == pytest.approx(0.75**8) and p[255] == pytest.approx(0.25**8)
    assert p[0b10000001] == pytest.approx(0.25**2 * 0.75**6)


@pytest.mark.gpu
def test_gpu_matches_cpu():
    cp = pytest.importorskip("cupy")
    if not gpu_available():
        pytest.skip("no CUDA device")
    w = np.random.default_rng(2).laplace(size=(384, 1536)).astype(np.float32)
    w[5, :100] = 0.25  # ties
    for s in (0.5, 0.9):
        assert np.array_equal(cp.asnumpy(K.magnitude_mask(cp.asarray(w), s, cp)), K.magnitude_mask(w, s, np))
        assert np.array_equal(cp.asnumpy(K.row_mask(cp.asarray(w), s, cp)), K.row_mask(w, s, np))
    m = K.magnitude_mask(w, 0.7, np)
    assert np.array_equal(cp.asnumpy(K.pack(cp.asarray(m), cp)), K.pack(m, np))
    assert np.array_equal(cp.asnumpy(K.row_classes(cp.asarray(m), 8, cp)), K.row_classes(m, 8, np))
