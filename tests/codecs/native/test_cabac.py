"""The native context-adaptive level coder (cabac.cpp): round trips under every trellis,
substream size and thread count, size against the order-0 entropy, and damaged streams."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from zoocodec.codecs import native
from zoocodec.kernels import rdoq

NONE, DQ4, NNR8 = 0, 1, 2


def eng():
    return native.engine()


def order0_bits(s: np.ndarray) -> float:
    _, c = np.unique(s, return_counts=True)
    return float(-(c * np.log2(c / s.size)).sum())


def scaled_levels(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Laplacian levels whose scale varies by row and by column, as in trained layers."""
    g = np.random.default_rng(seed)
    scale = np.exp(g.normal(0, 0.6, (rows, 1))) * np.exp(g.normal(0, 0.4, (1, cols))) * 3
    return np.rint(g.laplace(0, 1, (rows, cols)) * scale).astype(np.int32)


@given(hnp.arrays(np.int32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40),
                  elements=st.integers(-(1 << 29), 1 << 29) | st.integers(-3, 3)),
       st.sampled_from([NONE, DQ4, NNR8]), st.integers(1, 300))
@settings(max_examples=150, deadline=None)
def test_round_trip_any_levels_trellis_and_substream(levels, trellis, substream):
    coded = eng().cabac_encode(levels, trellis, substream, 2)
    assert np.array_equal(eng().cabac_decode(coded, levels.size, 2), levels.ravel())
    assert eng().cabac_stream_info(coded) == (levels.shape[0] if levels.size else 0, trellis)


def test_threads_give_the_same_bytes_and_levels():
    m = scaled_levels(600, 700)
    coded = eng().cabac_encode(m, DQ4, 1 << 14, 1)
    assert eng().cabac_encode(m, DQ4, 1 << 14, 2) == coded
    for threads in (1, 2, 3):
        assert np.array_equal(eng().cabac_decode(coded, m.size, threads), m.ravel())


def test_rows_longer_than_a_substream_are_cut_inside():
    m = scaled_levels(2, 100_000)
    coded = eng().cabac_encode(m, NNR8, 4096, 2)
    assert np.array_equal(eng().cabac_decode(coded, m.size, 2), m.ravel())


def test_below_order0_entropy_when_rows_and_columns_differ_in_scale():
    m = scaled_levels(512, 512)
    coded = eng().cabac_encode(m, NONE, 1 << 16, 0)
    assert 8 * len(coded) < 0.97 * order0_bits(m)


def test_stationary_levels_cost_at_most_a_percent_over_order0():
    m = np.rint(np.random.default_rng(3).laplace(0, 4, (1000, 1000))).astype(np.int32)
    coded = eng().cabac_encode(m, NONE, 1 << 16, 0)
    assert 8 * len(coded) < 1.01 * order0_bits(m)


def test_substream_cuts_cost_under_half_a_percent():
    m = scaled_levels(1024, 1024, seed=5)
    whole = len(eng().cabac_encode(m, NONE, m.size, 0))
    cut = len(eng().cabac_encode(m, NONE, 1 << 16, 0))  # 16 substreams
    assert cut < 1.005 * whole


def test_costs_add_up_to_the_stream():
    m = scaled_levels(256, 300, seed=6)
    costs = eng().cabac_costs(m, NONE, 1 << 16, 0)
    assert costs.shape == (m.size,) and (costs > 0).all()
    assert abs(costs.sum() - 8 * len(eng().cabac_encode(m, NONE, 1 << 16, 0))) < 0.01 * costs.sum() + 800


def test_dq_levels_of_a_real_layer_code_below_their_order0_entropy():
    from zoocodec.pipeline.core import load

    w = next(t.array for t in load("mnist-cnn").tensors() if t.name == "fc_layers.0.weight").astype(np.float64)
    x = w / 2 ** (-32 / 4)
    k = rdoq.dq_trellis(x, np.zeros(x.shape, np.int64), 0, np.zeros((1, 1)), 0.0, np).astype(np.int32)
    coded = eng().cabac_encode(k, DQ4, 1 << 16, 0)
    assert np.array_equal(eng().cabac_decode(coded, k.size, 0), k.ravel())
    assert 8 * len(coded) < 0.97 * order0_bits(k)


def test_levels_beyond_2_to_the_29_are_refused():
    with pytest.raises(ValueError):
        eng().cabac_encode(np.array([[1, 1 << 30]], np.int32), NONE, 100, 1)


def test_damaged_streams_raise_or_decode_never_crash():
    m = scaled_levels(200, 300, seed=7)
    coded = eng().cabac_encode(m, DQ4, 5000, 1)
    with pytest.raises(eng().CorruptStream):
        eng().cabac_decode(coded, m.size + 300, 1)
    for cut in range(0, len(coded), max(1, len(coded) // 60)):
        with pytest.raises(eng().CorruptStream):
            eng().cabac_decode(coded[:cut], m.size, 1)
    g = np.random.default_rng(8)
    for pos in g.integers(0, len(coded), 200):
        bad = bytearray(coded)
        bad[pos] ^= 1 << int(g.integers(8))
        try:
            out = eng().cabac_decode(bytes(bad), m.size, 2)
            assert out.shape == (m.size,)
        except eng().CorruptStream:
            pass


def test_a_short_stream_may_not_claim_many_levels():
    coded = eng().cabac_encode(np.zeros((1, 10), np.int32), NONE, 100, 1)
    with pytest.raises(eng().CorruptStream, match="more"):
        eng().cabac_decode(coded, 10 * 1_000_000, 1)
