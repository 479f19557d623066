import numpy as np
import pytest

from zoocodec.kernels import transform as K
from zoocodec.kernels.backend import gpu_available


@pytest.mark.parametrize("b", [2, 8, 16, 64])
def test_dct_matrix_is_orthonormal_dct_ii(b):
    m = K.dct_matrix(b)
    np.testing.assert_allclose(m @ m.T, np.eye(b), atol=1e-13)
    x = np.random.default_rng(0).normal(size=(5, b))
    # DCT-II through the FFT of the mirrored sequence: sum_n x_n cos(pi k (2n+1) / 2b)
    k = np.arange(b)
    f = np.fft.fft(np.concatenate([x, x[:, ::-1]], axis=1), axis=1)[:, :b]
    ref = np.real(np.exp(-1j * np.pi * k / (2 * b)) * f) / 2 * np.sqrt(2 / b)
    ref[:, 0] /= np.sqrt(2)
    np.testing.assert_allclose(x @ m.T, ref, atol=1e-12)


def test_blocks_round_trip_with_edge_padding():
    w = np.arange(2 * 21, dtype=np.float64).reshape(2, 21)
    v = K.to_blocks(w, 8, np)
    assert v.shape == (6, 8)
    assert v[2].tolist() == [16, 17, 18, 19, 20, 20, 20, 20]
    assert np.array_equal(K.from_blocks(v, 2, 21, np), w)


def test_klt_decorrelates():
    rng = np.random.default_rng(1)
    mix = rng.normal(size=(8, 8))
    x = rng.normal(size=(20000, 8)) @ mix
    t = K.klt_matrix(x, np)
    np.testing.assert_allclose(t @ t.T, np.eye(8), atol=1e-10)
    y = x @ t.T
    c = y.T @ y / len(y)
    off = c - np.diag(np.diag(c))
    assert np.abs(off).max() < 1e-8 * np.abs(c).max()
    assert np.all(np.diff(np.diag(c)) <= 0)  # decreasing variance


def test_water_filling_hits_the_rate_and_drops_quiet_groups():
    var = np.array([16.0, 4.0, 1.0, 0.25, 0.01, 0.0])
    for bits in (0.1, 0.5, 1.0, 3.0):
        theta = K.water_fill_theta(var, bits)
        active, rate = K.allocate(var, theta)
        assert rate.sum() / len(var) == pytest.approx(bits, rel=1e-9)
        assert np.array_equal(active, var > theta)
        # reverse water-filling: coded groups all sit at distortion theta, the rest at their variance
        d = np.minimum(var, theta)
        assert np.allclose(0.5 * np.log2(np.where(active, var, 1.0) / np.where(active, d, 1.0)), rate)
    # 1 bit/weight over [16, 4, 1, 0.25, ...]: theta = 1 gives (2 + 1 + 0) / 6 = 0.5
    assert K.water_fill_theta(var, 0.5) == pytest.approx(1.0)


def test_reconstruct_inverts_quantize_within_half_a_step():
    rng = np.random.default_rng(2)
    t = K.dct_matrix(8)
    x = rng.normal(size=(100, 8))
    y = x @ t.T
    active = np.ones(8, dtype=bool)
    s = K.quantize(y, active, 0.1, np)
    r = K.reconstruct(s, active, 0.1, t, np)
    assert np.abs((r - x) @ t.T).max() <= 0.05 + 1e-12


@pytest.mark.gpu
def test_gpu_matches_cpu():
    cp = pytest.importorskip("cupy")
    if not gpu_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(3)
    w = rng.laplace(0, 0.05, (384, 1536))
    t = K.dct_matrix(16)
    x = K.to_blocks(w, 16, np)
    xg = K.to_blocks(cp.asarray(w), 16, cp)
    assert np.array_equal(cp.asnumpy(xg), x)
    y, yg = x @ t.T, xg @ cp.asarray(t).T
    np.testing.assert_allclose(cp.asnumpy(yg), y, rtol=0, atol=1e-14)  # GEMM order may differ by an ulp
    active = np.arange(16) < 12
    s, sg = K.quantize(y, active, 0.01, np), K.quantize(yg, active, 0.01, cp)
    assert np.mean(cp.asnumpy(sg) != s) < 1e-6  # only exact rounding ties can differ
    tk, tkg = K.klt_matrix(x, np), K.klt_matrix(xg, cp)
    # eigenvectors agree up to sign
    np.testing.assert_allclose(np.abs(np.sum(cp.asnumpy(tkg) * tk, axis=1)), 1.0, atol=1e-6)
