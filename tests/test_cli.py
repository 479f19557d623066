"""The command line: real files, exit codes, one-line errors."""
import json
import signal
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from support import console_script, run_cli, run_script, script_env


run = run_cli


@pytest.fixture
def st_model(tmp_path, model):
    p = tmp_path / "m.safetensors"
    save_file(model, p)
    return p


def test_compress_inspect_decompress(tmp_path, st_model, monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "compress", st_model, "-o", tmp_path / "m.zc", "--bits", "6", "--min-size", "100",
                       "--override", "*emb*=uniform:bits=8", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["ratio"] > 3 and summary["spec"] == "uniform:bits=6,per_tensor=False,coder=ans"
    code, out, _ = run(monkeypatch, capsys, "inspect", tmp_path / "m.zc", "--json")
    info = json.loads(out)
    assert code == 0 and {r["name"] for r in info["tensors"]} >= {"fc.weight", "emb.weight"}
    assert next(r for r in info["tensors"] if r["name"] == "emb.weight")["method"].startswith("uniform:bits=8")
    code, out, _ = run(monkeypatch, capsys, "inspect", tmp_path / "m.zc")
    assert code == 0 and "fc.weight" in out
    code, _, _ = run(monkeypatch, capsys, "decompress", tmp_path / "m.zc", "-o", tmp_path / "back.pt")
    assert code == 0 and set(torch.load(tmp_path / "back.pt", weights_only=True)) == set(info_names(info))


def info_names(info):
    return [r["name"] for r in info["tensors"]]


def test_step_mode(tmp_path, st_model, monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "compress", st_model, "-o", tmp_path / "m.zc", "--step", "0.004", "--json")
    assert code == 0 and json.loads(out)["spec"] == "uniform:step=0.004,per_tensor=False,coder=ans"


def corrupt(tmp_path, st_model, monkeypatch, capsys):
    run(monkeypatch, capsys, "compress", st_model, "-o", tmp_path / "good.zc")
    data = bytearray((tmp_path / "good.zc").read_bytes())
    data[200] ^= 0x40
    (tmp_path / "flipped.zc").write_bytes(bytes(data))
    (tmp_path / "short.zc").write_bytes(bytes(data[:300]))


@pytest.mark.parametrize("case,expect", [
    (("compress", "missing.safetensors", "-o", "x.zc"), "no such file"),
    (("compress", "no-such-zoo-model", "-o", "x.zc"), "not a zoo model"),
    (("compress", "{model}", "-o", "x.zc", "--method", "magic"), "unknown method 'magic'"),
    (("compress", "{model}", "-o", "x.zc", "--bits", "1"), "bits must be 2..16"),
    (("compress", "{model}", "-o", "x.zc", "--override", "oops"), "PATTERN=SPEC"),
    (("compress", "{text}", "-o", "x.zc"), "not a model zoocodec reads"),
    (("compress", "{nan}", "-o", "x.zc"), "NaN or Inf"),
    (("inspect", "flipped.zc"), "checksum mismatch"),
    (("inspect", "short.zc"), "truncated or corrupt"),
    (("decompress", "missing.zc", "-o", "y.safetensors"), "no such file"),
    (("inspect", "{text}"), "too short"),
    (("compress", "{model}"), "Missing option"),
])
def test_bad_input_exit_2_with_one_line(tmp_path, st_model, model, monkeypatch, capsys, case, expect):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a model")
    model["fc.weight"][1, 2] = float("inf")
    save_file(model, tmp_path / "nan.safetensors")
    corrupt(tmp_path, st_model, monkeypatch, capsys)
    args = [a.format(model=st_model, text=tmp_path / "notes.txt", nan=tmp_path / "nan.safetensors") for a in case]
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert expect in err
    if expect != "Missing option":
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.zc").exists() and not (tmp_path / "y.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_console_script_installed():
    """The `zoocodec` entry point exists and answers --help."""
    out = run_script("--help", timeout=120)
    assert out.returncode == 0 and "compress" in out.stdout


def test_console_script_status_is_the_verbs_status(tmp_path):
    """Bad input through the installed command: status 2 and one line."""
    out = run_script("inspect", tmp_path / "missing.zc")
    assert out.returncode == 2 and out.stderr.startswith("error: ") and len(out.stderr.splitlines()) == 1


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    """SIGINT in the middle of a compression: status 130, one line, no output file or temp file."""
    g = np.random.default_rng(0)
    save_file({f"layer{i}.weight": torch.from_numpy(g.laplace(0, 0.02, (256, 1024)).astype(np.float32))
               for i in range(40)}, tmp_path / "big.safetensors")
    proc = subprocess.Popen([*console_script(), "compress", str(tmp_path / "big.safetensors"), "-o",
                             str(tmp_path / "big.zc"), "--method", "dq"],
                            env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stderr.readline()  # the first plain progress line, after a few seconds of work
    assert first.startswith(b"compressing ") and b"/40 layer" in first, first
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.safetensors"]
