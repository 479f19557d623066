import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from support import floats, roundtrip
from zoocodec.codecs import ans
from zoocodec.errors import ContainerError, SpecError
from zoocodec.methods import TensorData, parse_spec


@given(floats, st.sampled_from(["scalar", "d4", "e8"]), st.integers(0, 2**40), st.booleans())
@settings(max_examples=80, deadline=None)
def test_round_trip_any_shape(a, lattice, seed, by_bits):
    mode = "bits=5" if by_bits else "step=0.37"
    roundtrip(f"dither:{mode},lattice={lattice},seed={seed}", TensorData("t", str(a.dtype), a))


@given(floats, st.sampled_from([1e-3, 0.01, 0.37, 5.0]), st.integers(0, 1000))
@settings(max_examples=100, deadline=None)
def test_scalar_error_at_most_half_a_step(a, step, seed):
    t = TensorData("t", str(a.dtype), a)
    _, r = roundtrip(f"dither:step={step},seed={seed}", t)
    w = t.float64()
    cast = np.spacing(np.abs(w + step).astype(a.dtype)).astype(np.float64)  # rounding to the native dtype
    assert np.all(np.abs(r - w) <= step / 2 * (1 + 1e-9) + cast)


@pytest.mark.parametrize("values", [np.zeros((4, 16)), np.full((4, 16), 0.3), np.zeros((0, 5)), np.array([2.5])])
@pytest.mark.parametrize("lattice", ["scalar", "e8"])
def test_edge_cases(values, lattice):
    for mode in ("bits=4", "step=0.1"):
        roundtrip(f"dither:{mode},lattice={lattice}", TensorData("t", "float32", values.astype(np.float32)))


def test_bfloat16(model):
    import torch

    arr = model["emb.weight"].view(torch.int16).numpy().view(np.uint16)
    roundtrip("dither:bits=6,lattice=d4", TensorData("emb", "bfloat16", arr))


def test_seed_changes_the_symbols_and_the_decoder_needs_it(mnist_path):
    from zoocodec.pipeline.core import load

    w = next(t for t in load("mnist-cnn").tensors() if t.array.ndim == 2)
    a = parse_spec("dither:step=0.01,seed=1").encode(w)
    b = parse_spec("dither:step=0.01,seed=2").encode(w)
    assert a.segments["head"] != b.segments["head"]
    wrong = parse_spec("dither:step=0.01,seed=2").decode(a.side, a.segments, w.array.shape, w.dtype)
    assert not np.array_equal(wrong, a.recon)


def test_lattices_lower_the_error_at_the_same_rate_on_real_weights(minilm_path):
    """E8 and D4 cells have smaller second moments than the cube: less MSE at about equal bits."""
    from safetensors.numpy import load_file

    w = load_file(str(minilm_path / "model.safetensors"))["encoder.layer.2.attention.output.dense.weight"]
    t = TensorData("w", "float32", w)
    res = {}
    for lat in ("scalar", "d4", "e8"):
        enc, r = roundtrip(f"dither:step=0.01,lattice={lat}", t)
        bits = 8 * sum(len(v) for v in enc.segments.values()) / w.size
        res[lat] = (bits, np.mean((r - t.float64()) ** 2))
    for lat in ("d4", "e8"):
        assert res[lat][1] < res["scalar"][1] * 0.95
        assert res[lat][0] < res["scalar"][0] + 0.02


@pytest.mark.parametrize("text", ["dither:step=0", "dither:bits=1", "dither:step=0.1,bits=4", "dither:lattice=a2",
                                  "dither:seed=-1"])
def test_bad_specs(text):
    with pytest.raises(SpecError):
        parse_spec(text)


def test_corrupt_payloads_raise_container_error():
    w = np.random.default_rng(0).laplace(0, 0.05, (16, 40)).astype(np.float32)
    for text in ("dither:bits=6,lattice=e8", "dither:step=0.01"):
        spec = parse_spec(text)
        enc = spec.encode(TensorData("w", "float32", w))
        cases = [({**enc.side, "rows": 3}, enc.segments), (enc.side, {**enc.segments, "head": b"\x00\x05"})]
        if "steps" in enc.segments:
            cases.append((enc.side, {**enc.segments, "steps": enc.segments["steps"][:-4]}))
            cases.append((enc.side, {**enc.segments, "steps": np.full(16, -1, "<f4").tobytes()}))
        if "coset" in enc.segments:
            cases.append((enc.side, {**enc.segments, "coset": ans.encode(np.full(16 * 5, 3))}))
        for side, segs in cases:
            with pytest.raises(ContainerError):
                spec.decode(side, segs, w.shape, "float32")
