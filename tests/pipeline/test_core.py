"""compress / decompress / inspect through the Python API."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import zoocodec
from zoocodec.errors import NonFiniteError, SpecError
from zoocodec.methods import parse_spec


def test_small_and_integer_tensors_stay_lossless(tmp_path, model):
    zoocodec.compress(model, tmp_path / "m.zc", "uniform:bits=4", min_size=1000)
    back = zoocodec.decompress(tmp_path / "m.zc")
    for name in ("conv.bias", "fc.bias", "bn.num_batches_tracked", "mask"):
        assert torch.equal(back[name], model[name])
    assert not torch.equal(back["fc.weight"], model["fc.weight"])


def test_overrides_by_pattern_and_plan(tmp_path, model):
    rep = zoocodec.compress(model, tmp_path / "m.zc", "uniform:bits=4", min_size=100,
                            overrides={"*.bias": "uniform:bits=8", "re:^conv": "lossless"},
                            plan={"fc.weight": parse_spec("uniform:step=0.001")})
    methods = {t.name: t.method for t in rep.tensors}
    assert methods["conv.weight"] == "lossless:coder=float"
    assert methods["conv.bias"].startswith("uniform:bits=8")  # the first matching pattern wins
    assert methods["fc.bias"].startswith("uniform:bits=8")
    assert methods["fc.weight"].startswith("uniform:step=0.001")
    assert methods["head.weight"].startswith("uniform:bits=4")
    info = zoocodec.inspect(tmp_path / "m.zc")
    assert [r["method"] for r in info["tensors"]] == [t.method for t in rep.tensors]


def test_streams_coded_before_are_written_as_they_are(tmp_path, model):
    """compress(coded=...): a tensor's streams coded before under its exact spec (automatic mode's coder per
    tensor) are written from there where its symbols are the ones coded: the same file bytes as coding them
    again. A stream coded from other values, or under another spec, is coded again."""
    from zoocodec.methods import TensorData
    from zoocodec.methods.base import digest

    def streams(name: str, spec, values: torch.Tensor) -> dict:
        q = spec.quantize(TensorData(name, "float32", values.numpy()))
        out = {}
        for k, v in q.symbols.items():
            data, coded = spec.code_stream(k, v, spec.coder_for(k))
            out[k] = digest(coded), data
        return out

    plan = {"fc.weight": parse_spec("uniform:step=0.01,coder=cabac"),
            "conv.weight": parse_spec("uniform:bits=4,group=8,zero=true,coder=ctx")}
    zoocodec.compress(model, tmp_path / "plain.zc", plan=plan, min_size=100)
    plain = (tmp_path / "plain.zc").read_bytes()
    kept = {k: (spec, streams(k, spec, model[k])) for k, spec in plan.items()}
    zoocodec.compress(model, tmp_path / "kept.zc", plan=plan, min_size=100, coded=kept)
    assert (tmp_path / "kept.zc").read_bytes() == plain
    doubled = streams("conv.weight", plan["conv.weight"], model["conv.weight"] * 2)  # other symbols
    other = {"fc.weight": (parse_spec("uniform:step=0.01,coder=ans"), kept["fc.weight"][1]),  # another spec
             "conv.weight": (plan["conv.weight"], doubled)}
    zoocodec.compress(model, tmp_path / "other.zc", plan=plan, min_size=100, coded=other)
    assert (tmp_path / "other.zc").read_bytes() == plain
    marked = {k: (spec, {s: (d, b"kept " + data) for s, (d, data) in coded.items()})
              for k, (spec, coded) in kept.items()}
    zoocodec.compress(model, tmp_path / "marked.zc", plan=plan, min_size=100, coded=marked)
    with zoocodec.Archive(tmp_path / "marked.zc") as a:  # what is written is what was handed over
        for name, (_, coded) in marked.items():
            e = a.plan[name]
            written = a.container.segments([(e.where, e.segments[s]) for s in coded])
            assert [bytes(w) for w in written] == [data for _, data in coded.values()]


def test_nonfinite_weights(tmp_path, model):
    model["fc.weight"][0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="fc.weight"):
        zoocodec.compress(model, tmp_path / "m.zc")
    assert not (tmp_path / "m.zc").exists()
    zoocodec.compress(model, tmp_path / "m.zc", allow_nonfinite=True)
    back = zoocodec.decompress(tmp_path / "m.zc")
    assert torch.equal(back["fc.weight"].isnan(), model["fc.weight"].isnan())


def test_report_and_inspect_agree(tmp_path, model):
    rep = zoocodec.compress(model, tmp_path / "m.zc", "uniform:step=0.004", min_size=100)
    info = zoocodec.inspect(tmp_path / "m.zc")
    assert info["params"] == rep.params and info["file_bytes"] == rep.file_bytes
    assert math.isclose(info["bits_per_weight"], rep.bits_per_weight)
    lossy = [t for t in rep.tensors if t.method.startswith("uniform")]
    assert all(t.max_err <= 0.002 * 1.001 + 1e-3 * (t.dtype != "float32") for t in lossy)
    assert all(np.isfinite(t.sqnr_db) and t.sqnr_db > 10 for t in lossy)


def test_bad_override_and_spec():
    from zoocodec.pipeline.policy import Overrides

    with pytest.raises(SpecError):
        Overrides.parse(["no-equals-sign"])
    with pytest.raises(SpecError):
        Overrides({"re:([": "uniform"})
    with pytest.raises(SpecError):
        Overrides({"*": "kmeans-of-doom"})


def test_minilm_default_is_near_lossless(tmp_path, minilm_path):
    rep = zoocodec.compress(minilm_path, tmp_path / "m.zc")
    assert rep.ratio > 3.5 and rep.sqnr_db > 38
    one = zoocodec.Archive(tmp_path / "m.zc").tensor("embeddings.word_embeddings.weight")
    assert one.shape == (30522, 384) and one.dtype == torch.float32


def _outliers(rng, shape, count, big=5.0, scale=0.017):
    """Small weights with `count` large ones among them (per row when 2-D)."""
    w = rng.normal(0, scale, shape)
    rows = w.reshape(-1, shape[-1]) if len(shape) > 1 else w.reshape(1, -1)
    for row in rows:
        row[rng.choice(row.size, count, replace=False)] = rng.choice([-1, 1], count) * big * rng.uniform(0.8, 1, count)
    return torch.from_numpy(w.astype(np.float32))


def test_default_keeps_1d_exact_and_every_tensor_above_30_db(tmp_path):
    from zoocodec.methods.base import TensorData
    from zoocodec.methods.uniform import Uniform
    from zoocodec.pipeline.policy import SAFE_SQNR_DB

    rng = np.random.default_rng(0)
    tensors = {"out.bias": _outliers(rng, (8210,), 5),  # the OCR model's output bias of the issue
               "fc.weight": _outliers(rng, (8, 4096), 2),  # a couple of large values in every row
               "plain.weight": torch.from_numpy(rng.laplace(0, 0.02, (64, 128)).astype(np.float32))}
    # per-channel min-max 8 bits alone leaves the outlier rows far below the floor
    fc = TensorData("fc.weight", "float32", tensors["fc.weight"].numpy())
    err = fc.float64() - Uniform(bits=8).reconstruct(fc).astype(np.float64)
    assert 10 * math.log10(np.mean(fc.float64() ** 2) / np.mean(err**2)) < 22
    report = zoocodec.compress(tensors, tmp_path / "m.zc")
    by = {t.name: t for t in report.tensors}
    assert by["out.bias"].method.startswith("lossless") and math.isinf(by["out.bias"].sqnr_db)
    assert by["fc.weight"].method.startswith("uniform:step=") and by["fc.weight"].sqnr_db >= SAFE_SQNR_DB
    assert by["plain.weight"].method.startswith("uniform:bits=8")  # tensors without outliers keep the default
    # an explicit spec is the user's choice: no floor (1-D tensors still stay exact)
    coarse = {t.name: t for t in zoocodec.compress(tensors, tmp_path / "c.zc", "uniform:bits=4").tensors}
    assert coarse["fc.weight"].sqnr_db < 20 and coarse["out.bias"].method.startswith("lossless")


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.floats(0.5, 50), st.floats(1e-4, 1.0))
def test_default_floor_holds_for_any_outliers(tmp_path_factory, seed, count, big, scale):
    from zoocodec.pipeline.policy import SAFE_SQNR_DB

    rng = np.random.default_rng(seed)
    tensors = {"w": _outliers(rng, (8, 512), count, big * scale, scale),
               "v": _outliers(rng, (4096,), count, big * scale, scale)}
    report = zoocodec.compress(tensors, tmp_path_factory.mktemp("safe") / "m.zc")
    assert all(t.sqnr_db >= SAFE_SQNR_DB for t in report.tensors), [
        (t.name, t.method, t.sqnr_db) for t in report.tensors
    ]


def test_zoo_default_worst_tensor(tmp_path, mnist_path):
    """The default spec on a real model: every float tensor at or above the floor."""
    from zoocodec.pipeline.policy import SAFE_SQNR_DB

    report = zoocodec.compress("mnist-cnn", tmp_path / "m.zc")
    worst = min(report.tensors, key=lambda t: t.sqnr_db)
    assert worst.sqnr_db >= SAFE_SQNR_DB + 10  # measured 40.4 dB (fc_layers.0.weight)


def test_automatic_mode_takes_small_tensors_where_they_hold_a_share():
    """Automatic mode's default min size: 64 where tensors of 64 to 4,095 weights hold 0.5% of the float
    weights (a CNN's BatchNorm vectors), else compress's 4,096; integer tensors never count."""
    from zoocodec.pipeline.policy import AUTO_MIN_SIZE, DEFAULT_MIN_SIZE, auto_min_size, small_share

    big = {"w": ("float32", 10**6)}
    assert auto_min_size(big) == DEFAULT_MIN_SIZE
    assert auto_min_size(big | {f"bn{i}": ("float32", 1000) for i in range(4)}) == DEFAULT_MIN_SIZE  # 0.4%
    cnn = big | {f"bn{i}": ("float32", 1000) for i in range(6)}
    assert auto_min_size(cnn) == AUTO_MIN_SIZE and abs(small_share(cnn) - 6_000 / 1_006_000) < 1e-12
    assert auto_min_size(big | {f"ids{i}": ("int64", 1000) for i in range(20)}) == DEFAULT_MIN_SIZE
    assert auto_min_size(big | {f"b{i}": ("float32", 63) for i in range(300)}) == DEFAULT_MIN_SIZE  # under 64
    assert auto_min_size(big | {"w2": ("float32", 4096), "w3": ("float32", 10_000)}) == DEFAULT_MIN_SIZE
