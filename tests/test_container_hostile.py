"""Forged containers (every checksum recomputed, as anyone can do): decompress refuses them in
one line with exit status 2 and never writes outside its output folder."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zstandard
from safetensors.torch import load_file, save_file

import zoocodec
from support import Forge, run_cli
from zoocodec.codecs import ans, floatplanes
from zoocodec.codecs.wire import put_svarint, put_uvarint
from zoocodec.errors import ContainerError
from zoocodec.methods.lossless import Lossless


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


def decompress_forged(tmp_path, monkeypatch, capsys, forge: Forge, *options, header_frame=None,
                      name="out") -> tuple[int, str, Path]:
    zc = forge.write(tmp_path / "evil.zc", header_frame)
    out = tmp_path / "deep" / name
    before = files_outside(tmp_path, out)
    code, _, err = run_cli(monkeypatch, capsys, "decompress", zc, "-o", out, *options)
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


# ---- budgets: size claims are checked before anything is inflated or allocated -----------------
def zstd_claiming(size: int) -> bytes:
    """A zstd frame that declares `size` bytes and holds one 16-byte RLE block: a bomb's fuse."""
    return b"\x28\xb5\x2f\xfd" + bytes([0xC0, 0x50]) + size.to_bytes(8, "little") + bytes([0x83, 0, 0, 0x20])


def zstd_stream(size: int, declare: bool, prefix: bytes = b"", suffix: bytes = b"") -> bytes:
    """A real frame of `prefix`, `size` spaces, `suffix`, made in chunks (never holding `size` bytes)."""
    total = len(prefix) + size + len(suffix)
    c = zstandard.ZstdCompressor(write_content_size=declare).compressobj(size=total if declare else -1)
    chunk = b" " * (1 << 20)
    body = b"".join(c.compress(chunk[: min(len(chunk), size - i)]) for i in range(0, size, len(chunk)))
    return c.compress(prefix) + body + c.compress(suffix) + c.flush()


def constant_ans(n: int) -> bytes:
    """An ANS payload claiming `n` copies of one symbol (a dozen bytes for any n)."""
    out = bytearray([0])
    put_uvarint(out, n)
    put_svarint(out, 0)
    for v in (1, 1, 1 << 20, 0):  # alphabet size, its one frequency, chunk size, no chunks
        put_uvarint(out, v)
    return bytes(out)


@pytest.fixture(scope="module")
def uniform_zc(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("u") / "u.zc"
    zoocodec.compress({"w": torch.randn(64, 80), "z": torch.zeros(64, 80)}, out, "uniform:step=0.01")
    return out.read_bytes()


def expect_refused(tmp_path, monkeypatch, capsys, forge, *options, header_frame=None, match="") -> str:
    code, err, out = decompress_forged(tmp_path, monkeypatch, capsys, forge, *options, header_frame=header_frame)
    assert code == 2 and err.count("\n") == 1 and match in err, err
    assert not out.exists()
    return err


@pytest.mark.parametrize("declared", [1 << 40, 3 << 30])
def test_header_bomb_declaring_its_size(tmp_path, monkeypatch, capsys, uniform_zc, declared):
    expect_refused(tmp_path, monkeypatch, capsys, Forge(uniform_zc), header_frame=zstd_claiming(declared),
                   match="header")


@pytest.mark.parametrize("declare", [True, False])
def test_header_bomb_of_real_bytes(tmp_path, monkeypatch, capsys, uniform_zc, declare):
    """A valid header padded with 300 MB of spaces in a 10 KB frame: more than a header's bytes honestly hold."""
    f = Forge(uniform_zc)
    text = json.dumps(f.header).encode()
    frame = zstd_stream(300 << 20, declare, text[:-1] + b', "pad": "', b'"}')
    expect_refused(tmp_path, monkeypatch, capsys, f, header_frame=frame, match="header")


def test_tensor_claiming_more_than_memory(tmp_path, monkeypatch, capsys, uniform_zc):
    f = Forge(uniform_zc)
    z = f.header["tensors"][1]
    z["shape"], z["segments"]["symbols"] = [1 << 17, 1 << 17], f.add(constant_ans(1 << 34))
    expect_refused(tmp_path, monkeypatch, capsys, f, match="more than the budget")


def test_max_memory_is_the_users_limit(tmp_path, monkeypatch, capsys, uniform_zc):
    f = Forge(uniform_zc)
    z = f.header["tensors"][1]
    z["shape"], z["segments"]["symbols"] = [1 << 12, 1 << 12], f.add(constant_ans(1 << 24))  # 64 MiB of fp32
    expect_refused(tmp_path, monkeypatch, capsys, f, "--max-memory", "100M", match="--max-memory")
    code, err, out = decompress_forged(tmp_path, monkeypatch, capsys, f, "--max-memory", "2G", name="m.safetensors")
    assert code == 0, err
    assert load_file(out)["z"].shape == (1 << 12, 1 << 12)


@pytest.mark.parametrize("size", [64 << 20, 1 << 40])
def test_attached_file_bomb(tmp_path, monkeypatch, capsys, hf_zc, size):
    f = Forge(hf_zc)
    f.header["files"]["big.json"] = f.add(zstd_stream(size, True) if size < 1 << 30 else zstd_claiming(size))
    expect_refused(tmp_path, monkeypatch, capsys, f, match="attached file 'big.json'")


def test_every_zstd_site_checks_the_declared_size():
    bomb = zstd_claiming(1 << 40)
    packed = bytearray([1])
    put_uvarint(packed, 16)
    put_svarint(packed, 0)
    packed.append(1)
    plane = bytearray()
    put_uvarint(plane, 16)
    plane += bytes([4, 2])  # 16 values of 4 bytes; the first plane zstd-coded
    put_uvarint(plane, len(bomb))
    sites = [
        lambda: ans.decode(bytes(packed) + bomb, 16),
        lambda: floatplanes.decode(bytes(plane) + bomb, 16, np.dtype("<f4")),
        lambda: Lossless(coder="zstd").decode({"coder": "zstd"}, {"data": bomb}, (4, 4), "float32"),
    ]
    for site in sites:
        with pytest.raises(ContainerError, match="declares"):
            site()
