"""The GPU rANS encoder (kernels/rans_encode.cu): the frequency table it is given
(native.rans_normalise) is the one the native encoder writes on every histogram tried, and the kernels'
algorithm transliterated to NumPy (kernels/rans_encode.encode_emulated) writes ans.encode's
bytes; on a GPU the kernels themselves are checked against ans.encode (marker gpu)."""

import numpy as np
import pytest

from zoocodec.codecs import ans, native
from zoocodec.codecs.wire import Reader
from zoocodec.kernels import rans_encode as R


def native_table(counts: np.ndarray) -> tuple[np.ndarray, int]:
    """(freq, L) the native encoder writes for symbols with these counts."""
    symbols = np.repeat(np.arange(counts.size), counts).astype(np.uint8 if counts.size <= 256 else np.uint16)
    r = Reader(native.rans_encode(symbols, counts.size))
    assert (r.uvarint(), r.uvarint()) == (int(counts.sum()), counts.size)
    L = r.byte()
    return ans.read_table(r, counts.size), L


def histograms():
    g = np.random.default_rng(11)
    yield np.array([1, 1])
    yield np.array([5, 0, 0, 3])
    yield np.array([1000000, 1])
    yield np.array([7] * 200)  # ties everywhere
    yield np.array([3, 3, 3, 1, 1, 1, 2, 2, 0, 2])
    for scale in (0.7, 3, 20, 60):
        x = np.rint(g.laplace(0, scale, 300000)).astype(np.int64)
        yield np.bincount(x - x.min())
    yield g.integers(0, 50, 256)
    yield g.integers(1, 40, 3000)  # alphabets beyond a byte
    yield np.bincount(np.clip(np.rint(g.laplace(0, 2500, 400000)).astype(np.int64) + 30000, 0, 65535))
    yield g.zipf(1.5, 2000).clip(max=10 ** 5)


@pytest.mark.parametrize("counts", list(histograms()), ids=lambda c: f"{c.size}sym")
def test_rans_normalise_gives_the_table_the_encoder_writes(counts):
    counts = counts.astype(np.int64)
    freq, L = native.rans_normalise(counts)
    ref, ref_L = native_table(counts)
    assert L == ref_L
    assert np.array_equal(freq.astype(np.int64), ref)


def symbol_cases():
    g = np.random.default_rng(3)

    def laplace(scale, n, dtype):
        info = np.iinfo(dtype)
        return np.clip(np.rint(g.laplace(0, scale, n)), max(info.min, -(2 ** 40)), min(info.max, 2 ** 40)).astype(dtype)

    for n in (1, 7, 8, 100, 4095, 4096, 4103, 65536, 65537, 70001, 2 * 65536 + 4100):
        yield f"int8-{n}", laplace(20, n, np.int8)
    yield "uint8-3sym", g.integers(0, 3, 70001).astype(np.uint8)
    yield "int8-one-symbol", np.full(1000, -3, np.int8)
    yield "int8-two-rare", np.where(g.random(90000) < 1e-4, 5, 0).astype(np.int8)
    yield "int16", laplace(300, 80000, np.int16)
    yield "uint16", g.integers(0, 9000, 70000).astype(np.uint16)
    yield "int32-wide", laplace(3000, 80000, np.int32)  # > 2^16 symbols: the host's frame
    yield "int64", laplace(4, 66000, np.int64)
    yield "int16-flat-small", g.integers(-30000, 30000, 5000).astype(np.int16)  # the packed frame wins


CASES = list(symbol_cases())


@pytest.mark.parametrize("symbols", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_emulated_kernels_write_ans_bytes(symbols):
    assert R.encode_emulated(symbols) == ans.encode(symbols)


def test_a_wrong_word_order_is_caught():
    """The transliteration is sensitive to the ballot's placement: lanes in reverse order differ."""
    s = np.clip(np.rint(np.random.default_rng(1).laplace(0, 20, 8000)), -127, 127).astype(np.int8)
    idx = (s.astype(np.int64) - s.min()).astype(np.uint32)
    freq, L = native.rans_normalise(np.bincount(idx))
    body = R._encode_substream(idx, 8, R._table(freq), L)
    flipped = R._encode_substream(idx[::-1].copy(), 8, R._table(freq), L)
    assert body != flipped
    assert R.encode_emulated(s) == ans.encode(s)


@pytest.mark.gpu
@pytest.mark.parametrize("symbols", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_gpu_encoder_writes_ans_bytes(symbols):
    cupy = pytest.importorskip("cupy")
    assert R.encode(cupy.asarray(symbols)) == ans.encode(symbols)
    assert ans.Ans().encode(cupy.asarray(symbols)) == ans.encode(symbols)


@pytest.mark.gpu
def test_gpu_encoder_passes_its_probe():
    cupy = pytest.importorskip("cupy")
    assert R._probe(cupy.cuda.Device(0))
