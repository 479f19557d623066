import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from zoocodec.errors import SpecError
from zoocodec.methods import TensorData, parse_spec
from zoocodec.methods.arrays import from_float64


def ulp(dtype: str, x: np.ndarray) -> np.ndarray:
    """One unit in the last place of `dtype` at the magnitude of x (cast error bound)."""
    if dtype == "bfloat16":
        return np.abs(x) * 2.0**-7 + 1e-38
    return np.spacing(np.abs(x).astype(dtype)).astype(np.float64)


def check(spec_text: str, t: TensorData):
    spec = parse_spec(spec_text)
    enc = spec.encode(t)
    back = spec.decode(enc.side, {k: memoryview(v) for k, v in enc.segments.items()}, t.array.shape, t.dtype)
    assert back.dtype == t.array.dtype and back.shape == t.array.shape
    assert back.tobytes() == enc.recon.tobytes()  # the decoder returns what the encoder reported
    w = t.float64()
    r = TensorData(t.name, t.dtype, back).float64()
    steps = spec.steps_for(w)
    view = w.reshape(steps.shape[0], -1) if w.size else w.reshape(-1)
    bound = (steps[:, None] / 2 if w.size else 0) + ulp(t.dtype, view)
    assert np.all(np.abs(view - r.reshape(view.shape)) <= bound * (1 + 1e-9))


floats = hnp.arrays(
    st.sampled_from(["float32", "float16"]),
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=9),
    elements=st.floats(-100, 100, width=16),
)


@given(floats, st.integers(2, 16), st.booleans())
@settings(max_examples=200, deadline=None)
def test_bits_modes_error_at_most_half_a_step(a, bits, per_tensor):
    check(f"uniform:bits={bits},per_tensor={per_tensor}", TensorData("t", str(a.dtype), a))


@given(floats, st.sampled_from([1e-3, 0.01, 0.37, 5.0]))
@settings(max_examples=100, deadline=None)
def test_step_mode_error_at_most_half_a_step(a, step):
    check(f"uniform:step={step}", TensorData("t", str(a.dtype), a))


def test_bfloat16_tensor(model):
    t = model["emb.weight"]
    import torch

    arr = t.view(torch.int16).numpy().view(np.uint16)
    check("uniform:bits=6", TensorData("emb", "bfloat16", arr))


def test_bfloat16_rounding_is_nearest_even():
    x = np.array([1.0, 1.00390625, 1.01171875, -2.5, 3.0e-39])
    bits = from_float64(x, "bfloat16")
    back = (bits.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(back[:4], np.array([1.0, 1.0, 1.015625, -2.5], dtype=np.float32))


def test_per_channel_beats_per_tensor_with_an_outlier():
    g = np.random.default_rng(0)
    w = g.laplace(0, 0.02, (64, 256)).astype(np.float32)
    w[3, 7] = 8.0
    t = TensorData("w", "float32", w)
    mse = {}
    for text in ("uniform:bits=4", "uniform:bits=4,per_tensor=true"):
        r = parse_spec(text).encode(t).recon.astype(np.float64)
        mse[text] = np.mean((r - w) ** 2)
    assert mse["uniform:bits=4"] < mse["uniform:bits=4,per_tensor=true"] / 10


@pytest.mark.parametrize("text", ["uniform:bits=1", "uniform:bits=17", "uniform:step=0", "uniform:step=-1",
                                  "uniform:step=0.1,bits=8", "uniform:bogus=1", "uniform:bits=x", "nope",
                                  "uniform:coder=nope", "uniform:bits"])
def test_bad_specs_are_rejected(text):
    with pytest.raises(SpecError):
        parse_spec(text)


def test_spec_round_trips_through_dict():
    from zoocodec.methods import spec_from_dict

    for text in ("uniform", "uniform:step=0.002", "uniform:bits=4,per_tensor=true", "lossless:coder=zstd"):
        spec = parse_spec(text)
        assert spec_from_dict(spec.to_dict()) == spec
    with pytest.raises(SpecError, match="version"):
        spec_from_dict({**parse_spec("uniform").to_dict(), "version": 99})
