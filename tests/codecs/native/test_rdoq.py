"""The native rate-distortion decisions (codecs/native/rdoq.cpp), the CPU path of kernels/rdoq.py's
decide and dq_trellis: the levels of the NumPy transliterations of the CUDA kernels (decide_emulated,
dq_trellis_emulated) bit for bit, both in AVX2 lanes (four rows, or four values, at once) and on the
rows and values left over, on any values (NaN, infinities, values past the integer ranges,
ties between candidates and between predecessors) and any rate tables; bad arguments refused."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from zoocodec.codecs import native
from zoocodec.kernels import rdoq as R

SPECIAL = [np.nan, np.inf, -np.inf, 0.5, -0.5, 1.5, -2.5, 0.0, -0.0, 3e9, -3e9, 1e19, -1e19, 2.0**31, -(2.0**31) - 1]


@st.composite
def problems(draw):
    rows, cols = draw(st.integers(0, 12)), draw(st.integers(0, 40))
    scale = draw(st.sampled_from([0.3, 3.0, 40.0, 1e10, 1e19]))
    g = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = g.laplace(0, scale, (rows, cols))
    if draw(st.booleans()):
        x = np.round(x * 2) / 2  # ties between candidates
    if x.size:
        x.flat[g.integers(0, x.size, 4)] = g.choice(SPECIAL, 4)
    contexts, size = draw(st.integers(1, 4)), draw(st.integers(1, 30))
    bits = g.uniform(0, 12, (contexts, 4, size))
    if draw(st.booleans()):
        bits = np.round(bits)  # ties between predecessors
    return x, g.integers(0, contexts, x.shape), draw(st.integers(-40, 10)), bits, draw(
        st.sampled_from([0.0, 0.05, 0.3, 2.0]))


@settings(max_examples=150, deadline=None)
@given(problems())
def test_native_levels_are_the_kernels(problem):
    x, ctx, origin, bits, lam = problem
    with np.errstate(all="ignore"):
        assert np.array_equal(R.dq_trellis(x, ctx, origin, bits, lam, np),
                              R.dq_trellis_emulated(x, ctx, origin, bits, lam))
        assert np.array_equal(R.dq_trellis(x, ctx, origin, bits[:, 0], lam, np),
                              R.dq_trellis_emulated(x, ctx, origin, bits[:, 0], lam))
        assert np.array_equal(R.decide(x, ctx, origin, bits[:, 0], lam, np),
                              R.decide_emulated(x, ctx, origin, bits[:, 0], lam))


@given(hnp.arrays(np.float64, st.integers(0, 300), elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_decide_on_any_float(x):
    bits = np.linspace(1, 9, 17)[None, :]
    ctx = np.zeros(x.shape, np.int64)
    with np.errstate(all="ignore"):
        assert np.array_equal(R.decide(x, ctx, -8, bits, 0.2, np), R.decide_emulated(x, ctx, -8, bits, 0.2))


def test_a_wide_matrix_on_every_thread_is_one_thread():
    g = np.random.default_rng(3)
    x, ctx, bits = g.laplace(0, 6, (67, 301)), g.integers(0, 3, (67, 301)), g.uniform(0, 12, (3, 4, 40))
    one, every = np.empty(x.shape, np.int64), np.empty(x.shape, np.int64)
    eng = native.engine()
    eng.rdoq_trellis(x, ctx, bits, bits.max(axis=2) + 1.0, -20, 0.15, one, 1)
    eng.rdoq_trellis(x, ctx, bits, bits.max(axis=2) + 1.0, -20, 0.15, every, 0)
    assert np.array_equal(one, every) and np.array_equal(one, R.dq_trellis_emulated(x, ctx, -20, bits, 0.15))


def test_bad_arguments_are_refused():
    eng, x = native.engine(), np.zeros((2, 3))
    bits, worst, out = np.ones((2, 4, 5)), np.full((2, 4), 2.0), np.empty((2, 3), np.int64)
    with pytest.raises(ValueError, match="outside the rate tables"):
        eng.rdoq_trellis(x, np.full((2, 3), 2, np.int64), bits, worst, 0, 0.1, out)
    with pytest.raises(ValueError, match="outside the rate tables"):
        eng.rdoq_decide(x, np.full((2, 3), -1, np.int64), bits[:, :1], worst[:, :1], 0, 0.1, out)
    with pytest.raises(ValueError, match="different shapes"):
        eng.rdoq_trellis(x, np.zeros((3, 2), np.int64), bits, worst, 0, 0.1, out)
    with pytest.raises(ValueError, match="worst must be"):
        eng.rdoq_trellis(x, np.zeros((2, 3), np.int64), bits, worst[:1], 0, 0.1, out)
    with pytest.raises(ValueError, match="1 or 4 states"):
        eng.rdoq_trellis(x, np.zeros((2, 3), np.int64), bits[:, :2], worst[:, :2], 0, 0.1, out)
    with pytest.raises(ValueError, match="one state"):
        eng.rdoq_decide(x, np.zeros((2, 3), np.int64), bits, worst, 0, 0.1, out)
