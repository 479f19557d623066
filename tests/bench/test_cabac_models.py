"""bench/bench_cabac_models: the harness replays cabac's binarisation bin for bin (its shipped model's bits plus
the bypass bits are the coder's own cost_bits), so its candidates are priced on the bins the coder codes."""
from __future__ import annotations

import importlib
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the harness is built with g++")


@pytest.fixture(scope="module")
def bench():
    b = importlib.import_module("bench_cabac_models")  # bench/ is on sys.path (conftest.py)
    return b, b.build()


@pytest.mark.parametrize(("trellis", "substream"), [(0, 1 << 16), (1, 1 << 16), (1, 700), (0, 50)])
def test_replayed_bins_cost_what_the_coder_says(bench, trellis, substream):
    b, lib = bench
    rng = np.random.default_rng(trellis * 7 + substream)
    scale = rng.uniform(0.2, 40, (60, 1)) * rng.uniform(0.5, 2, (1, 90))
    m = np.ascontiguousarray(np.rint(rng.laplace(0, scale)).astype(np.int32))
    out = np.zeros(26 + len(b.RATES))
    assert lib.zc_cabac_models(m.ctypes.data, *m.shape, trellis, substream, out.ctypes.data) == 0
    assert out[0] == pytest.approx(out[1] + out[24], rel=1e-5)  # cost_bits = context-coded + bypass bits
    assert out[26 + b.RATES.index("6/10")] == pytest.approx(out[1], rel=1e-9)  # the shipped rates
    assert out[3] <= out[1] + 4  # the best single pair is never worse than the shipped one, plus its 4 bits
    assert 0 < out[25] <= out[1] * 1.05  # the counted entropy of the bins is about what they cost, or less


def test_entropy_counts_the_conditional_distribution(bench):
    b, _ = bench
    keys = np.array([0, 0, 0, 0, 1, 1])
    levels = np.array([1, 1, -1, -1, 5, 5])
    assert b.entropy(keys, levels) == pytest.approx(4.0)  # 4 fair coin flips, then 2 certain symbols
