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
from tests.support import gpu_job
from zoocodec.codecs import ans, floatplanes
from zoocodec.codecs.lossless import Zstd
from zoocodec.codecs.wire import put_svarint, put_uvarint
from zoocodec.errors import ContainerError
from zoocodec.kernels import decode as G


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
    out.parent.mkdir(exist_ok=True)
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


@pytest.mark.parametrize("names", [["model-1.safetensors"], ["config.json/x"], ["sub", "sub/x"], ["extra.safetensors"]])
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
    """An ANS payload of `n` copies of one symbol: a few dozen bytes for any n (claimed beyond 2**24)."""
    return ans.encode(np.zeros(min(n, 1 << 24), dtype=np.int8))


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
    z["shape"] = z["side"]["symbols"]["symbols"] = [1 << 17, 1 << 17]
    z["segments"]["symbols"] = f.add(constant_ans(1 << 34))
    expect_refused(tmp_path, monkeypatch, capsys, f, match="more than the budget")


def test_max_memory_is_the_users_limit(tmp_path, monkeypatch, capsys, uniform_zc):
    f = Forge(uniform_zc)
    z = f.header["tensors"][1]
    z["shape"] = z["side"]["symbols"]["symbols"] = [1 << 12, 1 << 12]  # 64 MiB of fp32
    z["segments"]["symbols"] = f.add(constant_ans(1 << 24))
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
        lambda: Zstd().decode(bomb, (4, 4), np.uint32),
    ]
    for site in sites:
        with pytest.raises(ContainerError, match="declares"):
            site()


# ---- schema: every header field checked, one line for each -------------------------------------
def tensor0(h):
    return h["tensors"][0]


SCHEMA_CASES = {
    "nested 1000 deep": lambda h: h["meta"].update(deep="DEEP"),  # json.dumps itself cannot nest so deep
    "source format unknown": lambda h: h["source"].update(format="bogus"),
    "source format a list": lambda h: h["source"].update(format=["hf"]),
    "source layout a list": lambda h: h["source"].update(layout=[]),
    "source name a number": lambda h: h["source"].update(name=7),
    "layout metadata not strings": lambda h: h["source"].update(format="safetensors", layout={"metadata": {"a": 1}}),
    "layout nest unknown": lambda h: h["source"].update(format="pytorch", layout={"nest": "x", "prefix": ""}),
    "layout prefix unknown": lambda h: h["source"].update(format="pytorch", layout={"nest": None, "prefix": 3}),
    "layout unknown key": lambda h: h["source"].update(layout={"evil": 1}),
    "stats a string": lambda h: tensor0(h).update(stats="x"),
    "stats mse a string": lambda h: tensor0(h).update(stats={"mse": "0"}),
    "tensors an object": lambda h: h.update(tensors={}),
    "tensor a list": lambda h: h["tensors"].append([]),
    "shape negative": lambda h: tensor0(h).update(shape=[-1, 80]),
    "shape float": lambda h: tensor0(h).update(shape=[64.0, 80]),
    "shape bool": lambda h: tensor0(h).update(shape=[True, 80]),
    "shape a string": lambda h: tensor0(h).update(shape="64x80"),
    "dtype unknown": lambda h: tensor0(h).update(dtype="complex64"),
    "method a string": lambda h: tensor0(h).update(method="uniform"),
    "method unknown": lambda h: tensor0(h)["method"].update(method="evil"),
    "method step a string": lambda h: tensor0(h)["method"].update(step="0.01"),
    "method step NaN": lambda h: tensor0(h)["method"].update(step=float("nan")),
    "method bits float": lambda h: tensor0(h)["method"].update(step=None, bits=8.0),
    "method per_tensor int": lambda h: tensor0(h)["method"].update(per_tensor=1),
    "method unknown parameter": lambda h: tensor0(h)["method"].update(evil=1),
    "coder parameter a float": lambda h: tensor0(h)["method"].update(
        coder={"coder": "zstd", "version": 1, "level": 19.0}
    ),
    "coder parameter a string": lambda h: tensor0(h)["method"].update(
        coder={"coder": "zstd", "version": 1, "level": "9"}
    ),
    "coder unknown": lambda h: tensor0(h)["method"].update(coder={"coder": "evil", "version": 1}),
    "side a list": lambda h: tensor0(h).update(side=[]),
    "segment a bool offset": lambda h: tensor0(h)["segments"].update(symbols=[True, 1, 0]),
    "segment crc too large": lambda h: tensor0(h)["segments"]["symbols"].__setitem__(2, 1 << 40),
    "segment checksum over 64 bits": lambda h: tensor0(h)["segments"]["symbols"].__setitem__(
        2, [1 << 64 for _ in tensor0(h)["segments"]["symbols"][2]]),
    "segment checksum negative": lambda h: tensor0(h)["segments"]["symbols"][2].__setitem__(0, -1),
    "files a list": lambda h: h.update(files=[]),
    "format_version a string": lambda h: h.update(format_version="1"),
    "meta a list": lambda h: h.update(meta=[]),
    "sequence meta garbage": lambda h: h["meta"].update(sequence={"members": "ab", "mode": "delta"}),
}


@pytest.mark.parametrize("command", ["decompress", "inspect"])
@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_header_schema(tmp_path, monkeypatch, capsys, uniform_zc, case, command):
    f = Forge(uniform_zc)
    SCHEMA_CASES[case](f.header)
    zc = tmp_path / "evil.zc"
    zc.write_bytes(f.to_bytes(json_text=json.dumps(f.header).replace('"DEEP"', "[" * 1000 + "]" * 1000).encode()))
    args = ["-o", tmp_path / "out.safetensors"] if command == "decompress" else ["--json"]
    code, out, err = run_cli(monkeypatch, capsys, command, zc, *args)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "invalid header" in err or "not valid JSON" in err, err


def test_kmeans_k_of_the_wrong_json_type(tmp_path, monkeypatch, capsys):
    zoocodec.compress({"w": torch.randn(64, 80)}, tmp_path / "k.zc", "kmeans:k=16")
    for k in ("16", 16.0, True, None):
        f = Forge((tmp_path / "k.zc").read_bytes())
        tensor0(f.header)["method"]["k"] = k
        code, _, err = run_cli(monkeypatch, capsys, "decompress", f.write(tmp_path / "e.zc"), "-o", tmp_path / "o.pt")
        assert code == 2 and err.count("\n") == 1 and "parameter k=" in err, err


# ---- files compress writes must decode; decoders refuse non-finite parameters -----------------
@pytest.mark.parametrize("spec", ["rdoq", "dq", "rdoq:step=0.01", "uniform", "kmeans:k=4"])
def test_empty_rows_round_trip(tmp_path, spec):
    zoocodec.compress({"e": torch.zeros(128, 0), "f": torch.zeros(0, 5)}, tmp_path / "e.zc", spec, min_size=0)
    back = zoocodec.decompress(tmp_path / "e.zc")
    assert back["e"].shape == (128, 0) and back["f"].shape == (0, 5)


BAD_ARRAYS = [("uniform:bits=8", "steps", bad) for bad in (float("nan"), float("inf"), -1.0, 0.0)] + [
    (spec, "codebook", bad)
    for spec in ("kmeans:k=4", "kmeans:k=4,codebook=float16")
    for bad in (float("nan"), float("inf"))
]


@pytest.mark.parametrize("spec,array,bad", BAD_ARRAYS)
def test_non_finite_or_negative_steps_and_codebooks(tmp_path, spec, array, bad):
    zoocodec.compress({"w": torch.randn(64, 80)}, tmp_path / "n.zc", spec)
    f = Forge((tmp_path / "n.zc").read_bytes())
    t = tensor0(f.header)
    off, length, _ = t["segments"][array]
    dtype = "<f2" if "float16" in spec else "<f4"
    values = np.frombuffer(bytes(f.body[off:off + length]), dtype=dtype).copy()
    values[0] = bad
    t["segments"][array] = f.add(values.tobytes())
    with pytest.raises(ContainerError, match="not finite|positive"):
        zoocodec.decompress(f.write(tmp_path / "e.zc"))


FORGED_STEPS = [("uniform:step=0.01", "side"), ("rdoq:step=0.01,coder=ans", "method"),
                ("dq:step=0.01,coder=ans", "method"), ("dct", "side")]


@pytest.mark.parametrize("spec,where", FORGED_STEPS)
def test_a_finite_step_that_overflows_the_dtype_is_refused(tmp_path, monkeypatch, capsys, spec, where):
    """A step of 1e308 (finite and positive) makes symbol x step overflow float32. The native pass, the
    GPU decoder's host side (before any launch) and a method's own decode (under np.errstate) refuse it
    in one line; before, the first two wrote infinities and the third NumPy's warnings on stderr."""
    zoocodec.compress({"w": torch.randn(64, 80)}, tmp_path / "n.zc", spec)
    f = Forge((tmp_path / "n.zc").read_bytes())
    tensor0(f.header)[where]["step"] = 1e308
    expect_refused(tmp_path, monkeypatch, capsys, f, match="range")
    evil = f.write(tmp_path / "e.zc")
    with pytest.raises(ContainerError, match="range"):
        zoocodec.load(evil)
    if spec != "dct":  # (no fused decoder: a GPU load decodes it on the host, as above)
        with zoocodec.Archive(evil) as a, pytest.raises(ContainerError, match="range"):
            gpu_job(a, "w")


@pytest.mark.parametrize("value,dtype,ok", [(3.3895e38, "bfloat16", True), (3.3963e38, "bfloat16", False),
                                            (65504.0, "float16", True), (65520.0, "float16", False),
                                            (3.4028e38, "float32", True), (float("nan"), "float32", False)])
def test_a_codebook_value_past_the_dtype_is_refused_by_the_gpu_host_side(value, dtype, ok):
    """A float32 codebook value can still overflow a bfloat16 or float16 tensor: check_range rounds as the
    decoders do (bfloat16 through float32, nearest-even)."""
    job = G.Job("w", (4,), dtype, G.Packed(4, 0, 1, bytes(4)), np.array([0.5, value]), k=2)
    if ok:
        G.check_range(job, "tensor 'w'")
    else:
        with pytest.raises(ContainerError, match=f"outside the {dtype} range"):
            G.check_range(job, "tensor 'w'")
