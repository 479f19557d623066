import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from support import floats, roundtrip
from zoocodec.codecs import ans
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels import transform as K
from zoocodec.methods import TensorData, parse_spec


@given(floats, st.sampled_from(["dct", "klt"]), st.sampled_from([2, 4, 8, 16]),
       st.sampled_from(["bits=0.5", "bits=3", "bits=8", "theta=1e-3", "theta=10"]))
@settings(max_examples=80, deadline=None)
def test_round_trip_and_error_bound(a, kind, block, rate):
    """Per vector, |x - x^|^2 <= (coded groups) step^2/4 + (dropped groups) y_k^2, plus the cast to the
    tensor's dtype: by the triangle inequality |err| <= sqrt(bound) + |cast error|, each cast within one spacing."""
    t = TensorData("t", str(a.dtype), a)
    enc, r = roundtrip(f"{kind}:{rate},block={block}", t)
    if not a.size:
        return
    w = t.float64()
    rows = a.shape[0] if a.ndim >= 2 else 1
    x = K.to_blocks(w.reshape(rows, -1), block, np)
    basis = (
        K.dct_matrix(block)
        if kind == "dct"
        else np.frombuffer(enc.segments["basis"], "<f4").astype(np.float64).reshape(block, block)
    )
    y = x @ basis.T
    coded = [g for s in enc.side["streams"] for g in s]
    dropped = np.ones(block, dtype=bool)
    dropped[coded] = False
    bound = len(coded) * enc.side["step"] ** 2 / 4 + np.sum(y[:, dropped] ** 2, axis=1)
    err = K.to_blocks((r - w).reshape(rows, -1), block, np)
    err[:, :] = np.where(np.isfinite(err), err, 0)
    cols = w.size // rows
    real = (np.arange(-(-cols // block) * block) < cols).reshape(-1, block)  # padding is not reconstructed
    real = np.tile(real, (rows, 1))
    cast = np.sum(
        (np.spacing(np.abs(K.to_blocks(r.reshape(rows, -1), block, np)).astype(a.dtype)).astype(np.float64) * real)
        ** 2,
        axis=1,
    )
    assert np.all(np.sqrt(np.sum((err * real) ** 2, axis=1)) <= np.sqrt(bound * (1 + 1e-6)) + np.sqrt(cast) + 1e-6)


@pytest.mark.parametrize("values", [np.zeros((4, 16)), np.full((4, 16), 0.3), np.zeros((0, 5)), np.array([2.5])])
@pytest.mark.parametrize("kind", ["dct", "klt"])
def test_edge_cases(values, kind):
    roundtrip(f"{kind}:bits=4", TensorData("t", "float32", values.astype(np.float32)))


def test_bfloat16(model):
    import torch

    arr = model["emb.weight"].view(torch.int16).numpy().view(np.uint16)
    roundtrip("klt:bits=4,block=8", TensorData("emb", "bfloat16", arr))


def test_water_filling_meets_the_model_rate_on_real_weights(minilm_path):
    """The coded symbols meet the bit budget (plus the coder's tables); the KLT basis is 1 KB on top."""
    from safetensors.numpy import load_file

    w = load_file(str(minilm_path / "model.safetensors"))["encoder.layer.4.attention.self.value.weight"]
    t = TensorData("w", "float32", w)
    for kind in ("dct", "klt"):
        for target in (1.0, 3.0, 5.0):
            enc, _ = roundtrip(f"{kind}:bits={target}", t)
            bits = 8 * sum(len(v) for k, v in enc.segments.items() if k.startswith("symbols.")) / w.size
            assert target - 0.01 < bits < target + 0.03
            assert len(enc.segments.get("basis", b"")) == (4 * 16 * 16 if kind == "klt" else 0)


def test_transform_gain_on_correlated_weights():
    """Rows with smooth structure (as conv kernels have) cost fewer bits after the DCT than raw."""
    rng = np.random.default_rng(0)
    base = np.cumsum(rng.laplace(0, 0.01, (256, 512)), axis=1)  # strongly correlated along rows
    t = TensorData("w", "float32", base.astype(np.float32))
    step = 0.01
    plain = parse_spec(f"uniform:step={step}").encode(t)
    dct = parse_spec(f"dct:theta={step**2 / 12}").encode(t)
    def size(e):
        return sum(len(v) for v in e.segments.values())

    def mse(e):
        return np.mean((e.recon.astype(np.float64) - t.float64()) ** 2)

    assert size(dct) < 0.6 * size(plain) and mse(dct) < 1.2 * mse(plain)


@pytest.mark.parametrize("text", ["dct:bits=0", "dct:bits=17", "klt:theta=0", "dct:bits=2,theta=1", "klt:block=1",
                                  "dct:block=65", "dct:coder=nope"])
def test_bad_specs(text):
    with pytest.raises(SpecError):
        parse_spec(text)


def test_corrupt_payloads_raise_container_error():
    w = np.random.default_rng(0).laplace(0, 0.05, (16, 40)).astype(np.float32)
    for kind in ("dct", "klt"):
        spec = parse_spec(f"{kind}:bits=4,block=8")
        enc = spec.encode(TensorData("w", "float32", w))
        s, g = enc.side, enc.segments
        cases = [
            ({**s, "step": -1.0}, g), ({**s, "step": "x"}, g), ({**s, "streams": [[9]]}, g),
            ({**s, "streams": [[1, 1]]}, g), ({**s, "streams": s["streams"][:-1]}, g), ({**s, "streams": [[]]}, g),
            ({**s, "streams": 3}, g),
            (s, {**g, "symbols.0": g["symbols.0"][:-3]}), (s, {**g, "symbols.0": ans.encode(np.zeros(3))}),
            ({**s, "symbols": {**s["symbols"], "symbols.0": [3, 1]}}, g),
        ]
        if kind == "klt":
            cases += [(s, {**g, "basis": g["basis"][:-4]}), (s, {**g, "basis": np.full(64, np.nan, "<f4").tobytes()})]
        for side, segs in cases:
            with pytest.raises(ContainerError):
                spec.decode(side, segs, w.shape, "float32")
