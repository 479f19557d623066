"""compress / decompress / inspect through the Python API."""
import math

import numpy as np
import pytest
import torch

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
    from zoocodec.methods import Overrides

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
