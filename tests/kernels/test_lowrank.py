import numpy as np
import pytest

from zoocodec.kernels import lowrank as K
from zoocodec.kernels.backend import gpu_available


def test_factors_are_the_truncated_svd():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(60, 40))
    a, b, r = K.factors(w, 10, None, np)
    assert r == 10 and a.shape == (60, 10) and b.shape == (10, 40)
    s = np.linalg.svd(w, compute_uv=False)
    err = np.sum((w - a @ b) ** 2)
    assert err == pytest.approx(np.sum(s[10:] ** 2), rel=1e-9)  # Eckart-Young: the best rank-10 error


def test_energy_picks_the_smallest_sufficient_rank():
    s = np.array([3.0, 2.0, 1.0, 1.0])  # energies 9, 4, 1, 1 of 15
    assert K.choose_rank(s, None, 9 / 15, np) == 1
    assert K.choose_rank(s, None, 9 / 15 + 1e-6, np) == 2
    assert K.choose_rank(s, None, 1.0, np) == 4
    assert K.choose_rank(np.zeros(3), None, 0.9, np) == 0
    assert K.choose_rank(s, 10, None, np) == 4


@pytest.mark.gpu
def test_gpu_matches_cpu():
    cp = pytest.importorskip("cupy")
    if not gpu_available():
        pytest.skip("no CUDA device")
    w = np.random.default_rng(1).laplace(size=(384, 1536))
    a, b, r = K.factors(w, None, 0.8, np)
    ag, bg, rg = K.factors(cp.asarray(w), None, 0.8, cp)
    assert rg == r
    np.testing.assert_allclose(cp.asnumpy(ag @ bg), a @ b, atol=1e-9)  # LAPACK vs cuSOLVER: same subspace
