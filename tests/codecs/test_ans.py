import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zoocodec.codecs import ans, native
from zoocodec.codecs.base import order0_bits
from zoocodec.errors import ContainerError


@given(st.lists(st.integers(-(2**20), 2**20), max_size=300))
@settings(max_examples=150, deadline=None)
def test_round_trip_any_integers(values):
    s = np.array(values, dtype=np.int64)
    assert np.array_equal(ans.decode(ans.encode(s), s.size), s)


@pytest.mark.parametrize("scale", [0.3, 2, 40, 3000])
def test_size_within_one_percent_of_order0_entropy(scale):
    g = np.random.default_rng(1)
    s = np.rint(g.laplace(0, scale, 300_000)).astype(np.int64)
    coded = ans.encode(s)
    assert np.array_equal(ans.decode(coded, s.size), s)
    assert coded[0] == ans.ANS
    # the frequency table (at most 3 bytes an entry) and, per substream, 8 states and a length
    table = 3 * (int(s.max()) - int(s.min()) + 1)
    substreams = 36 * -(-s.size // native.SUBSTREAM)
    assert 8 * len(coded) <= 1.01 * order0_bits(s) + 8 * (table + substreams + 16)
    if scale <= 40:  # alphabets of trained weights: everything included, within 1%
        assert 8 * len(coded) <= 1.01 * order0_bits(s)


def test_constant_and_empty_cost_almost_nothing():
    assert len(ans.encode(np.full(100_000, -3))) < 16
    assert np.array_equal(ans.decode(ans.encode(np.full(5, -3)), 5), np.full(5, -3))
    assert ans.decode(ans.encode(np.zeros(0, dtype=np.int64)), 0).size == 0


def test_wide_flat_alphabet_falls_back_to_packed():
    s = np.random.default_rng(2).integers(-30000, 30000, 5000)
    coded = ans.encode(s)
    assert coded[0] == ans.PACKED
    assert np.array_equal(ans.decode(coded, s.size), s)


def test_several_chunks_round_trip():
    s = np.random.default_rng(3).integers(-5, 6, native.SUBSTREAM * 2 + 17)
    assert np.array_equal(ans.decode(ans.encode(s), s.size), s)


def test_wrong_count_and_truncation_raise_container_error():
    s = np.random.default_rng(4).integers(-5, 6, 1000)
    coded = ans.encode(s)
    with pytest.raises(ContainerError):
        ans.decode(coded, 999)
    for cut in (0, 1, 5, len(coded) // 2, len(coded) - 1):
        with pytest.raises(ContainerError):
            ans.decode(coded[:cut], 1000)
