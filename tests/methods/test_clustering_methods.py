"""kmeans, lnq and pq methods: exact round trips, edge cases, real models through the pipeline."""
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import zoocodec
from support import run_cli
from zoocodec.errors import ContainerError, NonFiniteError, SpecError
from zoocodec.kernels import uniform as U
from zoocodec.methods import TensorData, parse_spec


def roundtrip(spec_text: str, t: TensorData):
    spec = parse_spec(spec_text)
    enc = spec.encode(t)
    back = spec.decode(enc.side, {k: memoryview(v) for k, v in enc.segments.items()}, t.array.shape, t.dtype)
    assert back.dtype == t.array.dtype and back.shape == t.array.shape
    assert back.tobytes() == enc.recon.tobytes()  # the decoder returns exactly what the encoder reported
    return enc, TensorData(t.name, t.dtype, back).float64()


def fc(seed=0, shape=(96, 200)):
    g = np.random.default_rng(seed)
    return (g.laplace(0, 0.02, shape) * g.uniform(0.5, 2, (shape[0],) + (1,) * (len(shape) - 1))).astype(np.float32)


SPECS = [
    "kmeans:k=2", "kmeans:k=16", "kmeans:k=256,iters=5", "kmeans:k=4,per=channel", "kmeans:k=8,per=block,block=1000",
    "kmeans:k=16,codebook=float16",
    "lnq", "lnq:bits=4,lam=1.0", "lnq:step=0.01,lam=0.5,unit=4,clusters=4", "lnq:bits=6,per_tensor=true,lam=5",
    "pq:m=4,k=32,iters=5", "pq:m=2,k=16,stages=2,iters=5", "pq:m=3,k=8,groups=4,codebook=float16,iters=5",
]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("shape", [(96, 200), (16, 8, 3, 3), (1000,)])
def test_roundtrip_real_looking_weights(spec, shape):
    roundtrip(spec, TensorData("w", "float32", fc(1, shape)))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_roundtrip_other_dtypes(dtype, model):
    a = model["emb.weight"].view(torch.int16).numpy().view(np.uint16) if dtype == "bfloat16" else fc(2).astype(dtype)
    for spec in ("kmeans:k=16", "lnq:bits=5,lam=1", "pq:m=4,k=16,iters=3"):
        roundtrip(spec, TensorData("w", dtype, a))


edge = hnp.arrays(
    st.sampled_from(["float32", "float16"]),
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=7),
    elements=st.one_of(st.just(0.0), st.floats(-50, 50, width=16)),
)


@given(edge, st.sampled_from(["kmeans:k=2", "kmeans:k=64", "kmeans:k=5,per=channel", "kmeans:k=3,per=block,block=7",
                              "lnq:bits=3,lam=0.5", "lnq:step=0.5,lam=3,unit=2", "pq:m=3,k=40,iters=2",
                              "pq:m=2,k=4,stages=2,groups=2,iters=2"]))
@settings(max_examples=150, deadline=None)
def test_roundtrip_edge_cases(a, spec):
    """All-zero, constant, tiny, 0-size tensors; k far above the number of distinct values."""
    roundtrip(spec, TensorData("t", str(a.dtype), a))


@given(st.integers(1, 20), st.integers(2, 40))
@settings(max_examples=30, deadline=None)
def test_kmeans_exact_when_k_covers_the_values(distinct, k):
    values = np.linspace(-1, 1, distinct).astype(np.float32)
    a = np.random.default_rng(distinct).choice(values, 500)
    _, back = roundtrip(f"kmeans:k={k}", TensorData("t", "float32", a))
    if distinct <= k:
        assert np.abs(back - a).max() <= 2.0**-28


def test_kmeans_error_shrinks_with_k():
    t = TensorData("w", "float32", fc(3))
    errs = [np.mean((roundtrip(f"kmeans:k={k}", t)[1] - t.float64()) ** 2) for k in (2, 4, 16, 64, 256)]
    assert errs == sorted(errs, reverse=True) and errs[-1] < errs[0] / 1000


def test_lnq_keeps_uniform_symbols_at_zero_lambda():
    t = TensorData("w", "float32", fc(4))
    enc, back = roundtrip("lnq:bits=6,lam=0", t)
    steps = parse_spec("uniform:bits=6").steps_for(t.float64())
    assert enc.side["lnq_ratio"] == 0
    uniform = U.dequantize(U.quantize(t.float64(), steps, np), steps, np).astype(np.float32)
    assert np.array_equal(back, uniform)


def test_lnq_selection_ratio_grows_with_lambda():
    t = TensorData("w", "float32", fc(5, (128, 256)))
    ratios, sizes = [], []
    for lam in (0.05, 0.5, 2.0, 20.0):
        enc, _ = roundtrip(f"lnq:bits=5,lam={lam}", t)
        ratios.append(enc.side["lnq_ratio"])
        sizes.append(sum(len(v) for v in enc.segments.values()))
    assert ratios == sorted(ratios) and ratios[-1] > 0.5
    assert sizes[-1] < sizes[0]


def test_lnq_conv_units_are_filters():
    enc, _ = roundtrip("lnq:bits=4,lam=2", TensorData("c", "float32", fc(6, (12, 4, 3, 3))))
    assert enc.side["units"] == 12


def test_pq_residual_stage_lowers_error():
    t = TensorData("w", "float32", fc(7))
    e1 = np.mean((roundtrip("pq:m=4,k=16,iters=5", t)[1] - t.float64()) ** 2)
    e2 = np.mean((roundtrip("pq:m=4,k=16,stages=2,iters=5", t)[1] - t.float64()) ** 2)
    assert e2 < e1 * 0.7


@pytest.mark.parametrize("spec", ["kmeans:k=1", "kmeans:k=300", "kmeans:per=row", "kmeans:codebook=int8",
                                  "lnq:clusters=1", "lnq:unit=0", "lnq:lam=-1", "lnq:bits=4,step=0.1",
                                  "pq:m=0", "pq:k=1", "pq:stages=9", "kmeans:coder=nope"])
def test_bad_specs(spec):
    with pytest.raises(SpecError):
        parse_spec(spec)


@pytest.mark.parametrize("spec", ["kmeans:k=16", "lnq:bits=4,lam=1", "pq:m=4,k=16,iters=3"])
def test_nan_rejected_by_the_pipeline(spec, tmp_path):
    w = fc(8)
    w[3, 4] = np.nan
    with pytest.raises(NonFiniteError):
        zoocodec.compress({"w": torch.from_numpy(w)}, tmp_path / "m.zc", spec)
    with pytest.raises(NonFiniteError):
        parse_spec(spec).encode(TensorData("w", "float32", w))


@pytest.mark.parametrize("spec", ["kmeans:k=16", "lnq:bits=4,lam=1", "pq:m=4,k=16,iters=3"])
def test_damaged_payloads_raise_container_errors(spec):
    t = TensorData("w", "float32", fc(9))
    s = parse_spec(spec)
    enc = s.encode(t)
    for name in enc.segments:
        segs = dict(enc.segments)
        segs[name] = segs[name][: len(segs[name]) // 2]
        try:
            s.decode(enc.side, segs, t.array.shape, t.dtype)
        except ContainerError:
            continue
        raise AssertionError(f"truncated {name} decoded without error")


def test_mnist_through_the_pipeline(mnist_path, tmp_path):
    """Real weights end to end: compress, decompress, per-tensor reconstruction exact."""
    for spec in ("kmeans:k=16", "lnq:bits=6,lam=0.5", "pq:m=4,k=64,iters=5"):
        out = tmp_path / "m.zc"
        report = zoocodec.compress(mnist_path, out, spec)
        lossy = [t for t in report.tensors if t.method.startswith(spec.split(":")[0])]
        assert lossy and report.ratio > 3
        with zoocodec.Archive(out) as a:
            for t in lossy:
                assert a.read(t.name).shape == t.shape
        info = zoocodec.inspect(out)
        assert info["tensors"]


@pytest.mark.parametrize("spec", ["kmeans:k=8,per=channel", "lnq:bits=5,lam=2", "pq:m=4,k=16,stages=2,iters=3"])
def test_cli_method_option(spec, tmp_path, monkeypatch, capsys):
    """`zoocodec compress --method NAME:PARAMS` reaches the method; bad parameters are one-line errors."""
    import json

    from safetensors.torch import save_file

    def run(*args):
        return run_cli(monkeypatch, capsys, *args)

    src = tmp_path / "m.safetensors"
    save_file({"fc.weight": torch.from_numpy(fc(10)), "conv.weight": torch.from_numpy(fc(11, (32, 16, 3, 3)))}, src)
    code, out, _ = run("compress", src, "-o", tmp_path / "m.zc", "--method", spec, "--json")
    assert code == 0 and json.loads(out)["ratio"] > 3
    code, out, _ = run("inspect", tmp_path / "m.zc", "--json")
    assert code == 0 and all(r["method"].startswith(spec.split(":")[0]) for r in json.loads(out)["tensors"])
    code, _, err = run("compress", src, "-o", tmp_path / "bad.zc", "--method", spec.split(":")[0] + ":k=0")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_a_float16_overflow_in_any_problem_of_a_tensor_is_refused():
    """per=channel: every channel's centroids are checked, not only the first rows of the batch
    (each tensor holds several problems, so the rows of a batch outnumber its tensors); the error
    comes alone, without NumPy's overflow warning before it (the CLI's one line)."""
    w = np.random.default_rng(0).normal(0, 0.05, (8, 64)).astype(np.float32)
    w[5, 3] = 1e6  # the sixth channel's centroid overflows float16
    t = TensorData("w", "float32", w)
    with warnings.catch_warnings(), pytest.raises(SpecError, match="overflows float16"):
        warnings.simplefilter("error")
        parse_spec("kmeans:k=4,per=channel,codebook=float16").quantize(t)
    parse_spec("kmeans:k=4,per=channel,codebook=float32").quantize(t)
