import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from support import floats, roundtrip
from zoocodec.errors import ContainerError, SpecError
from zoocodec.methods import TensorData, parse_spec, spec_from_dict

INNER = ["uniform:step=0.37", "uniform:bits=4", "dither:step=0.37", "dct:bits=3;block=4", "lowrank:rank=2",
         "lossless"]



def size(enc) -> int:
    return sum(len(v) for v in enc.segments.values())


@given(floats, st.sampled_from([0.0, 0.5, 0.9, 1.0]), st.sampled_from(INNER), st.booleans())
@settings(max_examples=80, deadline=None)
def test_round_trip_any_shape_and_inner_method(a, sparsity, inner, per_row):
    t = TensorData("t", str(a.dtype), a)
    enc, r = roundtrip(f"prune:sparsity={sparsity},per_row={per_row},then={inner}", t)
    pruned = enc.side["kept"]
    assert pruned <= a.size
    if not per_row:
        assert a.size - pruned >= round(sparsity * a.size)  # at least the asked-for share is zero
    assert np.count_nonzero(r) <= pruned


@given(floats, st.sampled_from([0.3, 0.7]), st.sampled_from([1e-3, 0.37, 5.0]))
@settings(max_examples=80, deadline=None)
def test_kept_weights_keep_the_inner_error_bound(a, sparsity, step):
    t = TensorData("t", str(a.dtype), a)
    _, r = roundtrip(f"prune:sparsity={sparsity},then=uniform:step={step}", t)
    w = t.float64()
    kept = r != 0
    cast = np.spacing(np.abs(w).astype(a.dtype)).astype(np.float64)
    assert np.all(np.abs(r - w)[kept] <= step / 2 * (1 + 1e-9) + cast[kept])
    if kept.any() and (~kept).any():
        assert np.abs(w[~kept]).min() <= np.abs(w[kept]).max()


def test_spec_text_nests_the_inner_method():
    spec = parse_spec("prune:sparsity=0.9,then=uniform:bits=6;per_tensor=true")
    assert spec.inner == parse_spec("uniform:bits=6,per_tensor=true")
    assert spec_from_dict(spec.to_dict()) == spec
    assert parse_spec(str(spec)) == spec  # the printed form parses back
    for bad in ("prune:sparsity=1.5", "prune:then=nope", "prune:then=uniform:bits=1", "prune:then=prune",
                "prune:coder=nope"):
        with pytest.raises(SpecError):
            parse_spec(bad)


@pytest.mark.parametrize("values", [np.zeros((4, 16)), np.full((4, 16), 0.3), np.zeros((0, 5)), np.array([2.5])])
@pytest.mark.parametrize("per_row", [False, True])
def test_edge_cases(values, per_row):
    roundtrip(f"prune:sparsity=0.5,per_row={per_row}", TensorData("t", "float32", values.astype(np.float32)))


def test_bfloat16(model):
    arr = model["emb.weight"].view(torch.int16).numpy().view(np.uint16)
    _, r = roundtrip("prune:sparsity=0.5,then=uniform:bits=6", TensorData("emb", "bfloat16", arr))
    assert np.mean(r == 0) >= 0.5


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_sparse_tensor_costs_fewer_bits_on_real_weights(minilm_path, sparsity):
    """Mask + kept symbols beats the same quantizer on the dense tensor, and on the pruned
    tensor with its zeros left in (where the zeros only become a frequent symbol)."""
    from safetensors.numpy import load_file

    w = load_file(str(minilm_path / "model.safetensors"))["encoder.layer.1.intermediate.dense.weight"]
    t = TensorData("w", "float32", w)
    step = 0.01
    dense = parse_spec(f"uniform:step={step}").encode(t)
    sparse, r = roundtrip(f"prune:sparsity={sparsity},then=uniform:step={step}", t)
    zeros_in = parse_spec(f"uniform:step={step}").encode(TensorData("w", "float32", np.where(r != 0, w, 0)))
    assert size(sparse) < (1 - sparsity / 2) * size(dense)
    assert size(sparse) < size(zeros_in)
    # the mask costs less than the entropy of independent flags: rows of one density class share a model
    h = -(sparsity * np.log2(sparsity) + (1 - sparsity) * np.log2(1 - sparsity))
    assert 8 * len(sparse.segments["mask"]) / w.size < h - 0.01


def test_mask_coder_follows_row_densities():
    rng = np.random.default_rng(5)
    density = np.repeat([0.02, 0.3, 0.7, 0.99], 50)[:, None]
    mask = rng.random((200, 300)) < density
    coder = parse_spec("prune").coder
    payload = coder.encode(mask.astype(np.int64))
    assert np.array_equal(coder.decode(payload, mask.shape), mask)
    p = mask.mean()
    iid = -(p * np.log2(p) + (1 - p) * np.log2(1 - p)) * mask.size
    ideal = sum(-(q * np.log2(q) + (1 - q) * np.log2(1 - q)) * 50 * 300 for q in (0.02, 0.3, 0.7, 0.99))
    assert 8 * len(payload) < 0.75 * iid and 8 * len(payload) < 1.05 * ideal  # 7-bit densities, class indices


def test_per_row_keeps_per_channel_steps(minilm_path):
    from safetensors.numpy import load_file

    w = load_file(str(minilm_path / "model.safetensors"))["encoder.layer.1.attention.self.key.weight"]
    enc, r = roundtrip("prune:sparsity=0.5,per_row=true,then=uniform:bits=6", TensorData("w", "float32", w))
    assert np.all((r != 0).sum(axis=1) <= w.shape[1] // 2)
    assert len(enc.segments["then.steps"]) == 4 * w.shape[0]


def test_corrupt_payloads_raise_container_error():
    w = np.random.default_rng(0).laplace(0, 0.05, (16, 40)).astype(np.float32)
    spec = parse_spec("prune:sparsity=0.5,then=uniform:bits=6")
    enc = spec.encode(TensorData("w", "float32", w))
    s, g = enc.side, enc.segments
    other = parse_spec("uniform:bits=5").to_dict()
    cases = [({**s, "kept": 641}, g), ({**s, "kept": "x"}, g), ({**s, "kept": s["kept"] - 1}, g),
             ({**s, "then_spec": other}, g), ({**s, "then_spec": {"method": "nope"}}, g), ({**s, "then_spec": None}, g),
             (s, {**g, "mask": g["mask"][:-2]}), ({**s, "then": {"rows": 2}}, g), ({**s, "then": None}, g),
             (s, {**g, "mask": bytes([1, 200]) + g["mask"][2:]}), (s, {**g, "mask": bytes([0]) + g["mask"][1:]}),
             (s, {**g, "mask": bytes([9]) + g["mask"][1:]}), ({**s, "symbols": {**s["symbols"], "mask": [3, 3]}}, g),
             (s, {**g, "mask": g["mask"][:5] + bytes(b ^ 0x55 for b in g["mask"][5:])})]
    for side, segs in cases:
        with pytest.raises(ContainerError):
            spec.decode(side, segs, w.shape, "float32")


@pytest.mark.parametrize("spec", ["prune:sparsity=0.7,then=uniform:bits=6", "dither:bits=6,lattice=e8",
                                  "dct:bits=4", "klt:bits=4,block=8", "lowrank:energy=0.95,bits=8"])
def test_pipeline_round_trip(model, tmp_path, spec):
    """Through the container: every tensor decodes to exactly what compress measured."""
    from zoocodec.pipeline.core import Archive, compress

    report = compress(model, tmp_path / "m.zc", spec, min_size=100)
    lossy = [t for t in report.tensors if t.method.startswith(spec.split(":")[0])]
    assert len(lossy) >= 3
    with Archive(tmp_path / "m.zc") as a:
        for tr in lossy:
            src = model[tr.name]
            native = src.view(torch.int16).numpy().view(np.uint16) if tr.dtype == "bfloat16" else src.numpy()
            w = TensorData(tr.name, tr.dtype, native).float64()
            r = TensorData(tr.name, tr.dtype, a.read(tr.name)).float64()
            assert np.mean((w - r) ** 2) == pytest.approx(tr.mse, rel=1e-12, abs=1e-30)


def test_cli_prune(mnist_path, tmp_path):
    from zoocodec.cli import main
    from zoocodec.pipeline.core import inspect

    out = tmp_path / "m.zc"
    argv = ["zoocodec", "compress", "mnist-cnn", "-o", str(out), "--method",
            "prune:sparsity=0.9,per_row=true,then=uniform:bits=8", "--json"]
    old, sys.argv = sys.argv, argv
    try:
        main()
    finally:
        sys.argv = old
    info = inspect(out)
    pruned = [t for t in info["tensors"] if t["method"].startswith("prune")]
    assert pruned and all(t["bits_per_weight"] < 2.0 for t in pruned)
