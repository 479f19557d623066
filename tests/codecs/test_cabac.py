"""The `cabac` coder spec: round trips in every trellis orientation, its entropy model's
rate tables, dq with cabac on a real layer, and the CLI round trip of dq:coder=cabac."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from tests.support import run_cli
from zoocodec.codecs import cabac, parse_coder
from zoocodec.codecs.base import order0_bits
from zoocodec.errors import ContainerError, SpecError
from zoocodec.methods import parse_spec
from zoocodec.methods.base import TensorData
from zoocodec.pipeline.core import load


def mnist_fc() -> np.ndarray:
    return next(t.array for t in load("mnist-cnn").tensors() if t.name == "fc_layers.0.weight")


@given(hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=12),
                  elements=st.integers(-40, 40)), st.sampled_from([None, 0, 1]))
@settings(max_examples=120, deadline=None)
def test_round_trip_any_shape_and_trellis_axis(symbols, trellis):
    c = parse_coder("cabac")
    assert np.array_equal(c.decode(c.encode(symbols, trellis), symbols.shape, trellis=trellis), symbols)


def test_a_stream_for_another_shape_or_trellis_is_refused():
    c = parse_coder("cabac")
    s = np.rint(np.random.default_rng(0).laplace(0, 3, (30, 40))).astype(np.int64)
    coded = c.encode(s, 1)
    with pytest.raises(ContainerError):
        c.decode(coded, (40, 30), trellis=1)
    with pytest.raises(ContainerError):
        c.decode(coded, (30, 40), trellis=None)


def test_spec_text_and_json():
    c = parse_coder("cabac(substream=4096)")
    assert c.substream == 4096 and str(c) == "cabac(substream=4096)"
    assert parse_coder(c.to_dict()) == c
    with pytest.raises(SpecError):
        parse_coder("cabac(substream=0)")


def test_rate_table_prices_levels_per_bucket_and_state():
    k = np.rint(np.random.default_rng(1).laplace(0, 4, (64, 200))).astype(np.int64)
    for trellis in (None, 0, 1):
        t = parse_coder("cabac").model(k, trellis).rates(k)
        assert t.ctx.shape == k.shape and t.bits.shape[1] == (1 if trellis is None else 4)
        assert t.ctx.max() < t.bits.shape[0] and np.isfinite(t.bits).all()
        # the table is the data's own conditional code length: near what cabac actually spends
        m = cabac.walk(k, trellis)
        st = np.zeros(m.shape, np.int64) if trellis is None else cabac.states(m)
        st = st.T if trellis == 0 else st
        picked = t.bits[t.ctx, st, k - t.origin].sum()
        assert 0.9 < picked / parse_coder("cabac").model(k, trellis).bits(k) < 1.1


def test_dq_with_cabac_round_trips_a_real_layer_below_order0():
    t = TensorData("fc", "float32", mnist_fc())
    spec = parse_spec("dq:step=0.004,coder=cabac")
    enc = spec.encode(t)
    out = spec.decode(enc.side, {k: memoryview(v) for k, v in enc.segments.items()}, t.array.shape, "float32")
    assert np.array_equal(out, enc.recon)
    levels = spec.quantize(t, np).symbols["symbols"]
    assert 8 * len(enc.segments["symbols"]) < 0.97 * order0_bits(levels)


def test_cli_round_trip_dq_cabac(tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.zc"
    code, _, err = run_cli(
        monkeypatch, capsys, "compress", "mnist-cnn", "-o", out, "--method", "dq:step=0.004,coder=cabac"
    )
    assert code == 0, err
    code, _, err = run_cli(monkeypatch, capsys, "decompress", out, "-o", tmp_path / "back")
    assert code == 0, err
    import zoocodec

    methods = {t["method"] for t in zoocodec.inspect(out)["tensors"] if t["method"].startswith("dq")}
    assert methods and all("coder=cabac" in m for m in methods)
