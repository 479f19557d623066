"""The coder layer beyond what the conformance suite (tests/codecs/test_conformance.py) checks
for every registered coder: parameters its examples do not set, bad text, nested coders in
method JSON, round trips of random shapes, and how closely ans and ctx price what they code."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from zoocodec.codecs import coder_from_dict, parse_coder
from zoocodec.codecs.base import Order0, order0_bits
from zoocodec.errors import SpecError
from zoocodec.methods import parse_spec, spec_from_dict


@pytest.mark.parametrize("text", ["video-hevc(crf=18,preset=fast)", "video-h264(pix=gray,hw=cpu)"])
def test_text_and_json_round_trip(text):
    coder = parse_coder(text)
    assert parse_coder(str(coder)) == coder
    assert coder_from_dict(coder.to_dict()) == coder
    assert coder.to_dict()["version"] == type(coder).version


@pytest.mark.parametrize("bad", ["nope", "ans(x=1)", "video-hevc(crf=99)", "zstd(level=0)", "video-hevc(crf=18",
                                 "video-hevc crf=18)"])
def test_bad_text_is_a_spec_error(bad):
    with pytest.raises(SpecError):
        parse_coder(bad)


def test_versions_and_fields_are_checked():
    with pytest.raises(SpecError, match="version"):
        coder_from_dict({"coder": "ans", "version": 99})
    with pytest.raises(SpecError):
        coder_from_dict({"coder": "zstd", "version": 1, "level": "high"})
    with pytest.raises(SpecError):
        spec_from_dict({**parse_spec("uniform").to_dict(), "coder": "ans"})  # a coder is a dict in JSON


def test_method_specs_nest_their_coder():
    spec = parse_spec("uniform:bits=6,coder=video-hevc(crf=20,preset=fast)")
    assert spec.to_dict()["coder"] == {"coder": "video-hevc", "version": 1, "crf": 20, "preset": "fast",
                                       "pix": "yuv420p", "hw": "auto"}
    assert spec_from_dict(spec.to_dict()) == spec == parse_spec(str(spec))


levels = hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40),
                    elements=st.integers(-300, 300))


@settings(max_examples=40, deadline=None)
@given(levels, st.sampled_from(["ans", "ctx"]))
def test_integer_coders_round_trip(s, name):
    coder = parse_coder(name)
    back = coder.decode(coder.encode(s), s.shape)
    assert back.shape == s.shape and np.array_equal(back, s)


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=50), elements=st.integers(0, 1))
)
def test_flags_round_trip(mask):
    coder = parse_coder("flags")
    assert np.array_equal(coder.decode(coder.encode(mask), mask.shape), mask)


def test_models_price_symbols_without_coding():
    g = np.random.default_rng(0)
    s = np.rint(g.laplace(0, 3, (64, 200)) * g.uniform(0.3, 3, (64, 1))).astype(np.int64)
    assert Order0().bits(s) == pytest.approx(order0_bits(s))
    for name in ("ans", "ctx"):
        model = parse_coder(name).model(s)
        table = model.rates(s)
        assert table.bits.ndim == 3 and table.ctx.shape == s.shape
        ideal = table.stateless[table.ctx, s - table.origin].sum()
        coded = 8 * len(parse_coder(name).encode(s))
        assert ideal <= coded * 1.01 and model.bits(s) == pytest.approx(coded, rel=0.03)


def test_order0_bits_of_narrow_symbols_spanning_more_than_their_type():
    """int8 symbols from -100 to 100 (uniform quantization makes the narrowest type): the offset
    to the smallest must not wrap in int8."""
    s = np.array([-100, 100, 5, 5], dtype=np.int8)
    assert order0_bits(s) == pytest.approx(order0_bits(s.astype(np.int64))) == pytest.approx(6.0)
