"""`--decode-on gpu`: the registry's `gpu_decode` declarations say what the GPU decoder takes
(kernels/decode.jobs, the host half that runs without a GPU), and compress keeps to them."""
import numpy as np
import pytest

from support import run_cli
from tests.support import gpu_job
from zoocodec.codecs import CODERS
from zoocodec.errors import SpecError
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


GPU_SPECS = sorted({(n, text) for n, cls in METHODS.items() if cls.gpu_decode for text in (n, *cls.examples)})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_methods_without_a_gpu_decoder_are_refused(name):
    spec = parse_spec(name)
    if not METHODS[name].gpu_decode:
        with pytest.raises(SpecError, match="no GPU decoder"):
            for_decoder(spec, "gpu", choose_coder=True)


@pytest.mark.parametrize(("name", "text"), GPU_SPECS, ids=[t for _, t in GPU_SPECS])
def test_declared_gpu_decoders_are_the_ones_the_gpu_decoder_takes(tmp_path, name, text):
    """Every tensor of a file written under a method's default spec and each of its examples
    (uniform group=G, dq, kmeans, lossless...), made GPU-decodable, is taken by the GPU decoder."""
    spec = for_decoder(parse_spec(text), "gpu", choose_coder=True)
    assert spec.coder.gpu_decode
    compress(model(), tmp_path / "m.zc", spec, min_size=100)
    with Archive(tmp_path / "m.zc") as a:
        assert all(gpu_job(a, n) is not None for n in a.names())


def test_coders_without_a_gpu_decoder_give_way_or_are_refused():
    assert gpu_coders() == tuple(sorted(n for n, c in CODERS.items() if c.gpu_decode)) and "ans" in gpu_coders()
    assert for_decoder(parse_spec("rdoq:bits=6"), "gpu", choose_coder=True).coder.name == "ctx"  # (its default)
    # cabac's arithmetic decoder is serial: a context coder the user did not name gives way to ctx, others to ans
    assert for_decoder(parse_spec("dq:bits=6,coder=cabac"), "gpu", choose_coder=True).coder.name == "ctx"
    assert for_decoder(parse_spec("uniform:bits=6,coder=video-h264"), "gpu", choose_coder=True).coder.name == "ans"
    assert str(for_decoder(parse_spec("lossless:coder=zstd"), "gpu", choose_coder=True).coder) == "float(planes=rans)"
    # a float coder the user did not name takes rANS planes (smaller; eight GPU threads a substream)
    assert str(for_decoder(parse_spec("lossless"), "gpu", choose_coder=True).coder) == "float(planes=rans)"
    named = parse_spec("lossless:coder=float")
    assert for_decoder(named, "gpu", choose_coder=False) is named
    with pytest.raises(SpecError, match="coder 'cabac' has no GPU decoder"):
        for_decoder(parse_spec("rdoq:bits=6,coder=cabac"), "gpu", choose_coder=False)
    spec = parse_spec("uniform:bits=6,coder=cabac")
    assert for_decoder(spec, "any") is spec
    with pytest.raises(SpecError, match="--decode-on"):
        for_decoder(spec, "tpu")


def test_cli(tmp_path, monkeypatch, capsys):
    from safetensors.torch import save_file

    save_file(model(), tmp_path / "m.safetensors")
    code, _, err = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "p.zc",
                           "--method", "prune", "--decode-on", "gpu")
    assert code == 2 and "method 'prune' has no GPU decoder" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.zc").exists()
    code, _, err = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "o.zc",
                           "--override", "b*=uniform:bits=8,coder=cabac", "--decode-on", "gpu")
    assert code == 2 and "coder 'cabac' has no GPU decoder" in err
    code, _, err = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "d.zc",
                           "--method", "dq:bits=6,coder=cabac", "--decode-on", "gpu")
    assert code == 2 and "coder 'cabac' has no GPU decoder" in err
    for method in ("rdoq:bits=6", "dq:bits=6"):
        code, _, err = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "r.zc",
                               "--method", method, "--min-size", "100", "--decode-on", "gpu")
        assert code == 0, err
        with Archive(tmp_path / "r.zc") as a:
            assert all(gpu_job(a, n) is not None for n in a.names()), method
        (tmp_path / "r.zc").unlink()


def test_a_presets_coder_stays(tmp_path, monkeypatch, capsys):
    """The presets name dq:coder=ctx, which the GPU decodes: under --decode-on gpu the file is the same one."""
    from safetensors.torch import save_file

    save_file(model(), tmp_path / "m.safetensors")
    code, _, err = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "b.zc",
                           "--preset", "balanced", "--min-size", "100", "--decode-on", "gpu")
    assert code == 0, err
    code, _, err = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "any.zc",
                           "--preset", "balanced", "--min-size", "100")
    assert code == 0, err
    assert (tmp_path / "b.zc").read_bytes() == (tmp_path / "any.zc").read_bytes()
    with Archive(tmp_path / "b.zc") as a:
        assert {a.plan[n].method["method"] for n in a.names()} >= {"dq"}
        assert {a.plan[n].method["coder"]["coder"] for n in a.names() if a.plan[n].method["method"] == "dq"} == {"ctx"}
        assert all(gpu_job(a, n) is not None for n in a.names())


def test_automatic_mode_refuses_before_any_work(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "compress", "mnist-cnn", "-o", tmp_path / "a.zc", "--target-loss", "1%",
                           "--method", "prune", "--decode-on", "gpu")
    assert code == 2 and "method 'prune' has no GPU decoder" in err and "split" not in err


def test_automatic_mode_prices_the_context_coders_the_gpu_decodes():
    from zoocodec.tuning.auto import CONTEXT_CODERS, context_coders

    assert context_coders("any") == CONTEXT_CODERS and "cabac" in CONTEXT_CODERS
    assert context_coders("gpu") == ("ctx",)
