"""Forged containers (every checksum recomputed, as anyone can do): decompress refuses them in
one line with exit status 2 and never writes outside its output folder."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoocodec
from support import Forge, run_cli


@pytest.fixture(scope="module")
def hf_zc(tmp_path_factory) -> bytes:
    """A real container of a Hugging Face folder with a config, a nested file and two shards."""
    folder = tmp_path_factory.mktemp("hf")
    g = torch.Generator().manual_seed(0)
    save_file({"a.weight": torch.randn(64, 80, generator=g)}, folder / "model-1.safetensors")
    save_file({"b.weight": torch.randn(32, 80, generator=g)}, folder / "model-2.safetensors")
    index = {"weight_map": {"a.weight": "model-1.safetensors", "b.weight": "model-2.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text('{"hidden_size": 80}')
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"pooling": "mean"}')
    out = folder.parent / "hf.zc"
    zoocodec.compress(folder, out, "uniform:bits=8")
    return out.read_bytes()


def files_outside(root: Path, out: Path) -> set[Path]:
    return {p for p in root.rglob("*") if out not in p.parents and p != out}


def decompress_forged(tmp_path, monkeypatch, capsys, forge: Forge) -> tuple[int, str, Path]:
    zc = forge.write(tmp_path / "evil.zc")
    out = tmp_path / "deep" / "out"
    before = files_outside(tmp_path, out)
    code, _, err = run_cli(monkeypatch, capsys, "decompress", zc, "-o", out)
    assert files_outside(tmp_path, out) - before <= {tmp_path / "deep"}, "wrote outside the output folder"
    return code, err, out


def test_the_real_container_decompresses(tmp_path, monkeypatch, capsys, hf_zc):
    code, err, out = decompress_forged(tmp_path, monkeypatch, capsys, Forge(hf_zc))
    assert code == 0, err
    assert (out / "1_Pooling" / "config.json").read_text() == '{"pooling": "mean"}'
    assert list(load_file(out / "model-2.safetensors")) == ["b.weight"]


BAD_NAMES = ["../x", "../../x", "sub/../../x", "/tmp/zoocodec-evil-absolute", "", ".", "..", "a/./b", "a//b",
             "a\x00b", "..\\x", "a/", "x" * 300]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_attached_file_names_stay_inside(tmp_path, monkeypatch, capsys, hf_zc, name):
    f = Forge(hf_zc)
    f.attach(name.replace("/tmp/", str(tmp_path) + "/"), b"pwned")
    code, err, _ = decompress_forged(tmp_path, monkeypatch, capsys, f)
    assert code == 2 and err.count("\n") == 1 and "attached file name" in err, err
    assert not Path("/tmp/zoocodec-evil-absolute").exists()


@pytest.mark.parametrize("shard", ["../x.safetensors", "../../x.safetensors", "/tmp/zoocodec-evil.safetensors",
                                   "sub/../../x.safetensors", "config.json", "", "..", "a\x00.safetensors"])
def test_shard_names_stay_inside(tmp_path, monkeypatch, capsys, hf_zc, shard):
    f = Forge(hf_zc)
    f.header["source"]["layout"]["shards"]["b.weight"] = shard.replace("/tmp/", str(tmp_path) + "/")
    code, err, _ = decompress_forged(tmp_path, monkeypatch, capsys, f)
    assert code == 2 and err.count("\n") == 1 and "invalid header" in err, err


@pytest.mark.parametrize("names", [["model-1.safetensors"], ["config.json/x"], ["sub", "sub/x"]])
def test_colliding_names_are_refused(tmp_path, monkeypatch, capsys, hf_zc, names):
    f = Forge(hf_zc)
    for n in names:
        f.attach(n, b"{}")
    code, err, _ = decompress_forged(tmp_path, monkeypatch, capsys, f)
    assert code == 2 and err.count("\n") == 1, err


def test_a_link_in_an_existing_output_folder_is_not_written_through(tmp_path, monkeypatch, capsys, hf_zc):
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    (out / "1_Pooling").symlink_to(victim)
    zc = Forge(hf_zc).write(tmp_path / "m.zc")
    code, err = run_cli(monkeypatch, capsys, "decompress", zc, "-o", out)[::2]
    assert list(victim.iterdir()) == []
    assert code == 2 and err.count("\n") == 1, err
