"""`--decode-on gpu`: the registry's `gpu_decode` declarations say what the GPU decoder takes
(kernels/decode.job, the host half that runs without a GPU), and compress keeps to them."""
import numpy as np
import pytest

from support import run_cli
from zoocodec.codecs import CODERS
from zoocodec.errors import SpecError
from zoocodec.kernels import decode as G
from zoocodec.methods import parse_spec
from zoocodec.pipeline.core import Archive, compress
from zoocodec.pipeline.policy import for_decoder, gpu_coders
from zoocodec.registry import METHODS


def model():
    import torch

    g = np.random.default_rng(0)
    return {"a.weight": torch.from_numpy(g.laplace(0, 0.05, (64, 90)).astype(np.float32)),
            "b.weight": torch.from_numpy(g.laplace(0, 0.02, (40, 300)).astype(np.float32)).to(torch.bfloat16),
            "bias": torch.from_numpy(g.normal(0, 0.01, 64).astype(np.float32))}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_declared_gpu_decoders_are_the_ones_the_gpu_decoder_takes(tmp_path, name):
    """Every tensor of a file written under a method's default spec made GPU-decodable is taken
    by the GPU decoder; a method that declares none is refused."""
    spec = parse_spec(name)
    if not METHODS[name].gpu_decode:
        with pytest.raises(SpecError, match="no GPU decoder"):
            for_decoder(spec, "gpu", choose_coder=True)
        return
    spec = for_decoder(spec, "gpu", choose_coder=True)
    assert spec.coder.gpu_decode
    compress(model(), tmp_path / "m.zc", spec, min_size=100)
    with Archive(tmp_path / "m.zc") as a:
        assert all(G.job(a, n) is not None for n in a.names())


def test_dq_under_ans_is_not_taken(tmp_path):
    """dq declares no GPU decoder, whatever its coder: its levels depend on the trellis state."""
    compress(model(), tmp_path / "d.zc", "dq:bits=6,coder=ans", min_size=100)
    with Archive(tmp_path / "d.zc") as a:
        assert [G.job(a, n) for n in ("a.weight", "b.weight")] == [None, None]


def test_coders_without_a_gpu_decoder_give_way_or_are_refused():
    assert gpu_coders() == tuple(sorted(n for n, c in CODERS.items() if c.gpu_decode)) and "ans" in gpu_coders()
    assert for_decoder(parse_spec("rdoq:bits=6"), "gpu", choose_coder=True).coder.name == "ans"
    assert for_decoder(parse_spec("lossless:coder=zstd"), "gpu", choose_coder=True).coder.name == "float"
    with pytest.raises(SpecError, match="coder 'cabac' has no GPU decoder"):
        for_decoder(parse_spec("rdoq:bits=6,coder=cabac"), "gpu", choose_coder=False)
    spec = parse_spec("uniform:bits=6,coder=cabac")
    assert for_decoder(spec, "any") is spec
    with pytest.raises(SpecError, match="--decode-on"):
        for_decoder(spec, "tpu")


def test_cli(tmp_path, monkeypatch, capsys):
    from safetensors.torch import save_file

    save_file(model(), tmp_path / "m.safetensors")
    code, _, err = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "d.zc",
                           "--method", "dq:bits=6", "--decode-on", "gpu")
    assert code == 2 and "method 'dq' has no GPU decoder" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d.zc").exists()
    code, _, err = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "o.zc",
                           "--override", "b*=uniform:bits=8,coder=ctx", "--decode-on", "gpu")
    assert code == 2 and "coder 'ctx' has no GPU decoder" in err
    code, _, err = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "r.zc",
                           "--method", "rdoq:bits=6", "--min-size", "100", "--decode-on", "gpu")
    assert code == 0, err
    with Archive(tmp_path / "r.zc") as a:
        assert all(G.job(a, n) is not None for n in a.names())


def test_automatic_mode_refuses_before_any_work(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "compress", "mnist-cnn", "-o", tmp_path / "a.zc", "--target-loss", "1%",
                           "--method", "dq", "--decode-on", "gpu")
    assert code == 2 and "method 'dq' has no GPU decoder" in err and "split" not in err
