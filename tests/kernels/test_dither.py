import itertools

import numpy as np
import pytest

from zoocodec.kernels import dither as K
from zoocodec.kernels.backend import gpu_available

# Conway & Sloane's normalized second moments: Z 1/12, D4 0.076603, E8 0.071682.
SECOND_MOMENT = {"scalar": 1 / 12, "d4": 0.0766032, "e8": 0.0716821}


def test_uniform01_is_a_fixed_function_of_seed_and_index():
    a = K.uniform01(5, 1000, np)
    assert np.array_equal(a, K.uniform01(5, 1000, np))
    assert np.array_equal(a[:10], K.uniform01(5, 10, np))  # prefix-stable: position, not call, decides
    assert a.min() >= 0 and a.max() < 1 and abs(a.mean() - 0.5) < 0.03
    assert not np.array_equal(a, K.uniform01(6, 1000, np))
    # splitmix64 of (index * golden + key(seed)), computed independently with Python integers
    m = (1 << 64) - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        return z ^ (z >> 31)

    key = mix((5 * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) & m)
    expect = [(mix((i * 0x9E3779B97F4A7C15 + key) & m) >> 11) * 2.0**-53 for i in range(10)]
    assert a[:10].tolist() == expect


def brute_closest(x, lattice):
    """Closest point by search over every point within one unit of the rounded coordinates."""
    n = x.shape[-1]
    base = [np.floor(x), np.floor(x - 0.5) + 0.5] if lattice == "e8" else [np.floor(x)]
    best, best_d = None, np.inf
    for b in base:
        for offs in itertools.product((-1, 0, 1, 2), repeat=n):
            p = b + np.array(offs)
            s = p.sum()
            if lattice in ("d4", "e8") and (s % 2 != 0):
                continue
            d = ((x - p) ** 2).sum()
            if d < best_d:
                best, best_d = p, d
    return best, best_d


@pytest.mark.parametrize("lattice", ["d4", "e8"])
def test_closest_point_matches_brute_force(lattice):
    n = K.LATTICES[lattice]
    rng = np.random.default_rng(1)
    xs = rng.normal(0, 2, (30 if lattice == "d4" else 4, n))
    got = K.closest_point(xs, lattice, np)
    for x, g in zip(xs, got, strict=True):
        _, d = brute_closest(x, lattice)
        assert ((x - g) ** 2).sum() <= d + 1e-12
        assert g.sum() % 2 == 0 and (np.all(g == np.rint(g)) or np.all(g - 0.5 == np.rint(g - 0.5)))


@pytest.mark.parametrize("lattice", list(K.LATTICES))
def test_dithered_error_has_the_lattice_second_moment_and_no_bias(lattice):
    rng = np.random.default_rng(2)
    w = rng.laplace(0, 1, (64, 4096))
    steps = np.full(64, 0.25)
    v, u = K.quantize(w, steps, lattice, 9, np)
    err = K.dequantize(v, u, steps, w.shape[1], lattice, np) - w
    per_dim = np.mean(err**2) / 0.25**2
    assert per_dim == pytest.approx(SECOND_MOMENT[lattice], rel=0.02)
    assert abs(np.mean(err)) < 0.002
    # subtractive dither: the error does not depend on the weight
    assert abs(np.corrcoef(err.ravel(), w.ravel())[0, 1]) < 0.01
    if lattice == "scalar":
        assert np.abs(err).max() <= 0.125 * (1 + 1e-12)


@pytest.mark.parametrize("lattice", list(K.LATTICES))
def test_symbols_round_trip(lattice):
    rng = np.random.default_rng(3)
    w = rng.normal(0, 1, (7, 37))
    steps = rng.uniform(0.05, 0.5, 7)
    v, _ = K.quantize(w, steps, lattice, 0, np)
    streams = K.to_symbols(v, lattice, np)
    assert np.array_equal(K.from_symbols(*streams, v.shape, lattice, np), v)
    if lattice != "scalar":  # the halved last coordinate removes the parity bit
        assert streams[1].size == v.shape[0] * v.shape[1]


@pytest.mark.gpu
@pytest.mark.parametrize("lattice", list(K.LATTICES))
def test_gpu_matches_cpu(lattice):
    cp = pytest.importorskip("cupy")
    if not gpu_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(4)
    w = rng.laplace(0, 0.05, (300, 1000))
    steps = rng.uniform(0.001, 0.01, 300)
    assert np.array_equal(cp.asnumpy(K.uniform01(3, 100_000, cp)), K.uniform01(3, 100_000, np))
    v, u = K.quantize(w, steps, lattice, 3, np)
    vg, ug = K.quantize(cp.asarray(w), cp.asarray(steps), lattice, 3, cp)
    assert np.array_equal(cp.asnumpy(vg), v)  # identical lattice points (symbols)
    np.testing.assert_allclose(cp.asnumpy(ug), u, rtol=0, atol=1e-15)
    head, tail, coset = K.to_symbols(vg, lattice, cp)
    for a, b in zip((head, tail, coset), K.to_symbols(v, lattice, np), strict=True):
        assert np.array_equal(cp.asnumpy(a), b)
