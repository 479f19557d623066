import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from support import floats, roundtrip
from zoocodec.errors import ContainerError, SpecError
from zoocodec.methods import TensorData, parse_spec


@given(floats, st.sampled_from(["rank=1", "rank=3", "rank=100", "energy=0.5", "energy=1.0"]),
       st.sampled_from(["", ",bits=8", ",bits=3"]))
@settings(max_examples=120, deadline=None)
def test_round_trip_any_shape(a, rank, bits):
    roundtrip(f"lowrank:{rank}{bits}", TensorData("t", str(a.dtype), a))


@pytest.mark.parametrize("values", [np.zeros((4, 16)), np.full((4, 16), 0.3), np.zeros((0, 5)), np.array([2.5])])
@pytest.mark.parametrize("bits", ["", ",bits=8"])
def test_edge_cases(values, bits):
    enc, r = roundtrip(f"lowrank:energy=0.9{bits}", TensorData("t", "float32", values.astype(np.float32)))
    if values.size and np.all(values == values.flat[0]):  # rank one
        assert enc.side["rank"] == (0 if values.flat[0] == 0 else 1)
        assert np.allclose(r, values, atol=2e-3)


def test_fp16_factors_reach_the_svd_error_on_real_weights(minilm_path):
    """Eckart-Young: the rank-r error is the tail of the spectrum; fp16 factors add almost nothing."""
    from safetensors.numpy import load_file

    w = load_file(str(minilm_path / "model.safetensors"))["encoder.layer.0.attention.self.query.weight"]
    t = TensorData("w", "float32", w)
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    for r in (16, 128):
        enc, back = roundtrip(f"lowrank:rank={r}", t)
        tail = np.sum(s[r:] ** 2)
        assert tail <= np.sum((back - t.float64()) ** 2) < tail * 1.01
        assert sum(len(v) for v in enc.segments.values()) == 2 * r * (w.shape[0] + w.shape[1])
    enc8, _ = roundtrip("lowrank:rank=128,bits=8", t)
    assert sum(len(v) for v in enc8.segments.values()) < 0.5 * 2 * 128 * (w.shape[0] + w.shape[1])


@pytest.mark.parametrize("text", ["lowrank:rank=-1", "lowrank:energy=0", "lowrank:energy=1.5",
                                  "lowrank:rank=3,energy=0.5", "lowrank:bits=1"])
def test_bad_specs(text):
    with pytest.raises(SpecError):
        parse_spec(text)


def test_corrupt_payloads_raise_container_error():
    w = np.random.default_rng(0).laplace(0, 0.05, (16, 40)).astype(np.float32)
    for text in ("lowrank:rank=4", "lowrank:rank=4,bits=6"):
        spec = parse_spec(text)
        enc = spec.encode(TensorData("w", "float32", w))
        s, g = enc.side, enc.segments
        cases = [({**s, "rank": 17}, g), ({**s, "rank": 5}, g), ({**s, "rank": "4"}, g), (s, {**g, "a": g["a"][:-2]})]
        if "a.steps" in g:
            cases.append((s, {**g, "b.steps": np.zeros(4, "<f4").tobytes()}))
        for side, segs in cases:
            with pytest.raises(ContainerError):
                spec.decode(side, segs, w.shape, "float32")
