"""Every registered coder, from the registry (its default and its declared `examples`), with the
symbols it declares it is made for (`alphabet`): exact round trip (with and without a dq
trellis), empty and one-element streams, narrow integer types where it `narrows`, forged
payloads refused in one line (ContainerError), its entropy model's contract, the JSON round
trip and version, and its declared ranges.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conformance import outside, refused_in_one_line
from zoocodec.codecs import CODERS, coder_from_dict, parse_coder
from zoocodec.errors import SpecError
from zoocodec.registry import range_of


def coder_texts() -> list[str]:
    return [text for name, cls in sorted(CODERS.items()) for text in (name, *cls.examples)]


def coder(text: str):
    if text.startswith("video-"):
        pytest.importorskip("av")
    return parse_coder(text)


CODER_TEXTS = [pytest.param(text, id=text) for text in coder_texts()]
BITS = {"bits": np.uint32, "levels": np.int64, "flags": np.int64}


def symbols(alphabet: str, shape: tuple[int, ...], dtype=None, seed: int = 0) -> np.ndarray:
    """Symbols of the kind a coder is made for, as real weights give them."""
    g = np.random.default_rng(seed)
    w = (g.laplace(0, 0.02, shape) * g.uniform(0.5, 2, shape[:1] + (1,) * (len(shape) - 1))).astype(np.float32)
    if alphabet == "bits":
        return w.view(np.uint32).astype(dtype or np.uint32) if dtype not in (np.uint16,) else \
            w.astype(np.float16).view(np.uint16)
    if alphabet == "flags":
        return (np.abs(w) > 0.02).astype(dtype or np.int64)
    return np.rint(w / 0.002).astype(dtype or np.int64)


def dtypes(c) -> list:
    if c.alphabet == "bits":
        return [np.uint16, np.uint32]
    return [np.int8, np.int16, np.int64] if c.narrows else [np.int64]


def trellises(c) -> list:
    return [None, 0, 1] if c.alphabet == "levels" else [None]


@pytest.mark.parametrize("text", CODER_TEXTS)
def test_round_trip(text):
    c = coder(text)
    for dtype in dtypes(c):
        for trellis in trellises(c):
            s = symbols(c.alphabet, (12, 40), dtype)
            out = c.decode(c.encode(s, trellis), s.shape, s.dtype, trellis)
            assert out.shape == s.shape and out.dtype == s.dtype
            assert np.array_equal(out, s) or c.lossy, (dtype, trellis)
    if c.narrows:  # dtype=None: the narrowest signed type that holds them
        s = symbols(c.alphabet, (12, 40))
        out = c.decode(c.encode(s), s.shape, None)
        assert np.array_equal(out, s) and out.dtype == np.int8


@pytest.mark.parametrize("shape", [(0,), (0, 8), (1,), (1, 1)], ids=str)
@pytest.mark.parametrize("text", CODER_TEXTS)
def test_empty_and_one_element(text, shape):
    c = coder(text)
    s = symbols(c.alphabet, shape)
    out = c.decode(c.encode(s), shape, s.dtype)
    assert out.shape == shape and (np.array_equal(out, s) or c.lossy)


@pytest.mark.parametrize("text", CODER_TEXTS)
def test_forged_payloads_are_refused_in_one_line(text):
    c = coder(text)
    s = symbols(c.alphabet, (12, 40))
    data = c.encode(s)

    def decode(b):
        assert c.decode(b, s.shape, s.dtype).shape == s.shape

    for cut in sorted({0, 1, len(data) // 2, len(data) - 1}):
        refused_in_one_line(lambda: decode(data[:cut]))
    g = np.random.default_rng(1)
    for _ in range(40):
        b = bytearray(data)
        for pos in g.integers(0, len(b), int(g.integers(1, 4))):
            b[pos] ^= int(g.integers(1, 256))
        refused_in_one_line(lambda: decode(bytes(b)))
    refused_in_one_line(lambda: decode(data + b"\0" * 8))
    refused_in_one_line(lambda: c.decode(data, (13, 40), s.dtype))  # a shape the stream does not hold
    # (shapes beyond the memory budget are refused before any coder runs: MethodSpec.decode)


@pytest.mark.parametrize("text", [pytest.param(t, id=t) for t in coder_texts()
                                  if CODERS[t.partition("(")[0]].alphabet != "bits"])
def test_entropy_model_prices_the_symbols(text):
    """(Bit-exact coders are left out: nothing prices a tensor's bits, and a rate table over
    2^32 values would not fit in memory.)"""
    c = coder(text)
    s = symbols(c.alphabet, (12, 40))
    model = c.model(s)
    table = model.rates(s)
    bits = model.bits(s)
    assert table.ctx.shape == s.shape and table.bits.ndim == 3 and np.isfinite(bits) and bits >= 0
    assert model.refit(s).bits(s) == pytest.approx(bits)


@pytest.mark.parametrize("text", CODER_TEXTS)
def test_json_round_trip_and_versions(text):
    c = coder(text)
    d = json.loads(json.dumps(c.to_dict()))
    assert d["coder"] == c.name and d["version"] == type(c).version
    assert coder_from_dict(d) == c == parse_coder(str(c))
    assert type(c).upgrade(d, c.version) == d
    with pytest.raises(SpecError, match="newer than this zoocodec"):
        coder_from_dict({**d, "version": c.version + 1})


@pytest.mark.parametrize("cls", [pytest.param(cls, id=name) for name, cls in sorted(CODERS.items())])
def test_declarations_hold(cls):
    assert CODERS[cls.name] is cls and isinstance(cls.version, int) and cls.version >= 1
    assert cls.alphabet in BITS and all(type(parse_coder(text)) is cls for text in cls.examples)
    default = cls()
    for f in dataclasses.fields(cls):
        r = range_of(cls, f.name)
        if r is not None:
            with pytest.raises(SpecError, match=f"{f.name} must be"):
                dataclasses.replace(default, **{f.name: outside(r)}).validate()
