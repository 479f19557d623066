"""The native order-0 rANS coder: round trips, size against the entropy and against
constriction (an independent coder), substreams, threads, and damaged streams."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zoocodec.codecs import native
from zoocodec.errors import ContainerError


def entropy_bytes(s: np.ndarray) -> float:
    _, c = np.unique(s, return_counts=True)
    return float(-(c * np.log2(c / s.size)).sum()) / 8


@given(
    st.lists(st.integers(0, 255), max_size=400),
    st.integers(1, 70),
    st.sampled_from([np.uint8, np.uint16]),
)
@settings(max_examples=200, deadline=None)
def test_round_trip_any_symbols_and_substream_size(values, chunk, dtype):
    s = np.array(values, dtype=dtype)
    coded = native.rans_encode(s, 256, chunk=chunk, threads=2)
    assert np.array_equal(native.rans_decode(coded, s.size, threads=2), s)


@pytest.mark.parametrize("scale,nsym", [(0.4, 256), (6, 256), (40, 1024), (3000, 1 << 16)])
def test_size_within_half_a_percent_of_entropy_and_of_constriction(scale, nsym):
    import constriction

    g = np.random.default_rng(1)
    s = np.clip(np.rint(g.laplace(0, scale, 1_000_000)) + nsym // 2, 0, nsym - 1).astype(np.uint16)
    coded = native.rans_encode(s, nsym)
    out = native.rans_decode(coded, s.size)
    assert np.array_equal(out, s) and out.dtype == (np.uint8 if nsym <= 256 else np.uint16)
    table = 3 * np.unique(s).size  # at most ~3 bytes a present symbol
    assert len(coded) <= 1.005 * entropy_bytes(s) + table + 64
    # constriction, the coder this one replaced, on the same symbols (one stream, float model)
    lo, hi = int(s.min()), int(s.max())
    counts = np.bincount(s - lo, minlength=hi - lo + 1)
    model = constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)
    enc = constriction.stream.stack.AnsCoder()
    enc.encode_reverse((s - lo).astype(np.int32), model)
    assert len(coded) <= 1.005 * 4 * enc.num_words() + table + 64


def test_constant_empty_and_one_symbol():
    assert len(native.rans_encode(np.full(100_000, 7, np.uint8), 9)) < 8
    assert np.array_equal(native.rans_decode(native.rans_encode(np.full(5, 7, np.uint8), 9), 5), np.full(5, 7))
    assert native.rans_decode(native.rans_encode(np.zeros(0, np.uint8), 1), 0).size == 0


def test_threads_and_substreams_give_the_same_symbols():
    g = np.random.default_rng(2)
    s = g.integers(0, 40, 300_001).astype(np.uint8)
    coded = native.rans_encode(s, 40, chunk=4096, threads=1)
    assert native.rans_encode(s, 40, chunk=4096, threads=2) == coded  # deterministic bytes
    for threads in (1, 2, 3):
        assert np.array_equal(native.rans_decode(coded, s.size, threads=threads), s)


def test_symbol_outside_the_alphabet_is_refused():
    with pytest.raises(ValueError):
        native.rans_encode(np.array([0, 5], np.uint8), 5)


def test_damaged_streams_raise_container_error():
    g = np.random.default_rng(4)
    s = g.integers(0, 20, 50_000).astype(np.uint8)
    coded = native.rans_encode(s, 20, chunk=10_000)
    with pytest.raises(ContainerError, match="expected"):
        native.rans_decode(coded, s.size + 1)
    for cut in (1, 5, len(coded) // 2, len(coded) - 1):
        with pytest.raises(ContainerError):
            native.rans_decode(coded[:cut], s.size)
    flipped = 0
    for pos in g.integers(40, len(coded), 50):  # inside the substreams
        bad = bytearray(coded)
        bad[pos] ^= 0x5A
        try:
            flipped += not np.array_equal(native.rans_decode(bytes(bad), s.size), s)
        except ContainerError:
            flipped += 1
    assert flipped == 50
