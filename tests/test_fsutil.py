"""Outputs: checked before any work, one line when they cannot be written, whole or not at all."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import zoocodec
from support import Forge, run_cli
from zoocodec import fsutil


@pytest.fixture
def st_file(tmp_path, model):
    save_file(model, tmp_path / "m.safetensors")
    return tmp_path / "m.safetensors"


@pytest.fixture
def zc(tmp_path, st_file, monkeypatch, capsys):
    assert run_cli(monkeypatch, capsys, "compress", st_file, "-o", tmp_path / "m.zc")[0] == 0
    return tmp_path / "m.zc"


def one_line_error(result) -> str:
    code, _, err = result
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_output_in_a_missing_folder(tmp_path, st_file, zc, monkeypatch, capsys):
    """The command line refuses a file output in a missing folder; the library makes the folder."""
    one_line_error(run_cli(monkeypatch, capsys, "compress", st_file, "-o", tmp_path / "a" / "b" / "m.zc"))
    zoocodec.compress(st_file, tmp_path / "a" / "b" / "m.zc")
    zoocodec.decompress(zc, tmp_path / "c" / "d" / "m.safetensors")
    assert (tmp_path / "a" / "b" / "m.zc").is_file() and (tmp_path / "c" / "d" / "m.safetensors").is_file()


@pytest.mark.parametrize("where", ["a folder", "under a file", "unwritable"])
def test_unwritable_outputs_one_line(tmp_path, st_file, zc, monkeypatch, capsys, where):
    (tmp_path / "dir.safetensors").mkdir()
    out = {"a folder": tmp_path / "dir.safetensors", "under a file": st_file / "x.safetensors",
           "unwritable": Path("/proc/zoocodec-test/x.safetensors")}[where]
    one_line_error(run_cli(monkeypatch, capsys, "decompress", zc, "-o", out))
    one_line_error(run_cli(monkeypatch, capsys, "compress", st_file, "-o", out.with_suffix(".zc")
                           if where != "a folder" else out))


def test_unknown_format_is_refused_before_decoding(tmp_path, zc, monkeypatch, capsys):
    err = one_line_error(run_cli(monkeypatch, capsys, "decompress", zc, "-o", tmp_path / "x", "--format", "bogus"))
    assert "bogus" in err and not (tmp_path / "x").exists()


def test_garbage_onnx_graph(tmp_path, zc, monkeypatch, capsys):
    f = Forge(zc.read_bytes())
    f.header["source"].update(format="onnx", layout={})
    f.attach("model.onnx", b"\xff\xff\xff not protobuf")
    err = one_line_error(run_cli(monkeypatch, capsys, "decompress", f.write(tmp_path / "e.zc"), "-o", tmp_path / "x.onnx"))
    assert "ONNX graph" in err and not (tmp_path / "x.onnx").exists()


# ---- temp litter: recognisable, removed by the next run on that path when its owner is dead ----
def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def litter(out: Path, pid: int, kind: str = fsutil.TMP) -> Path:
    return out.parent / f".{out.name}{kind}{fsutil._host()}-{pid}-0"


def test_litter_of_a_killed_run_is_removed_by_the_next(tmp_path, st_file, monkeypatch, capsys):
    out = tmp_path / "m.zc"
    dead, live = litter(out, dead_pid()), litter(out, os.getpid())
    other_host = out.parent / f".{out.name}{fsutil.TMP}elsewhere-{dead_pid()}-0"
    for p in (dead, live, other_host):
        p.write_bytes(b"partial")
    assert run_cli(monkeypatch, capsys, "compress", st_file, "-o", out)[0] == 0
    assert not dead.exists() and live.exists() and other_host.exists()


def test_sweep_cleanup_spares_a_live_sweeps_temp_files(tmp_path):
    from zoocodec.jobs.results import Results

    folder = tmp_path / "runs" / "m"
    folder.mkdir(parents=True)
    dead, live = litter(folder / "a.parquet", dead_pid()), litter(folder / "b.parquet", os.getpid())
    dead.write_bytes(b"x")
    live.write_bytes(b"x")
    Results(tmp_path).clean_temp()
    assert not dead.exists() and live.exists()


def test_a_folder_left_aside_by_a_killed_swap_is_restored(tmp_path):
    out = tmp_path / "model"
    aside = litter(out, dead_pid(), fsutil.OLD)
    aside.mkdir()
    (aside / "config.json").write_text("{}")
    fsutil.remove_litter(out)
    assert (out / "config.json").read_text() == "{}" and not aside.exists()


def test_an_existing_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "model"
    with fsutil.atomic_folder(out) as tmp:
        (tmp / "a").write_text("old")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b").write_text("old")
    with fsutil.atomic_folder(out) as tmp:
        (tmp / "a").write_text("new")
        assert (out / "a").read_text() == "old"  # the old one stays until the new one is complete
    assert sorted(p.name for p in out.rglob("*")) == ["a"] and (out / "a").read_text() == "new"
    with pytest.raises(RuntimeError), fsutil.atomic_folder(out) as tmp:
        (tmp / "a").write_text("broken")
        raise RuntimeError("interrupted")
    assert (out / "a").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_folder_holding_other_files_is_not_replaced(tmp_path, zc, monkeypatch, capsys):
    out = tmp_path / "home"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_line_error(run_cli(monkeypatch, capsys, "decompress", zc, "-o", out, "--format", "hf"))
    assert (out / "notes.txt").read_text() == "mine"


def hold_lock(folder: Path, held, seconds: float) -> None:
    with fsutil.folder_lock(folder):
        held.set()
        time.sleep(seconds)


def test_two_sweeps_take_turns_on_one_results_folder(tmp_path):
    ctx = multiprocessing.get_context("fork")
    held = ctx.Event()
    holder = ctx.Process(target=hold_lock, args=(tmp_path, held, 1.0))
    holder.start()
    assert held.wait(30)
    waited, start = [], time.monotonic()
    with fsutil.folder_lock(tmp_path, on_wait=lambda: waited.append(True)):
        assert waited and time.monotonic() - start > 0.5  # it waited for the holder to let go
    holder.join()


# ---- whole or nothing under SIGKILL --------------------------------------------------------------
WRITER = """
import sys, zoocodec
a, b, out = sys.argv[1:4]
print("go", flush=True)
while True:
    for zc in (a, b):
        zoocodec.decompress(zc, out, fmt="hf")
"""


def hf_model_zc(tmp_path: Path, seed: int) -> tuple[Path, dict[str, bytes]]:
    """A two-shard Hugging Face folder of ~8 MB, its .zc (lossless), and its files' bytes."""
    g = torch.Generator().manual_seed(seed)
    src = tmp_path / f"src{seed}"
    src.mkdir()
    save_file({"a": torch.randn(512, 2048, generator=g)}, src / "model-1.safetensors")
    save_file({"b": torch.randn(512, 2048, generator=g)}, src / "model-2.safetensors")
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-1.safetensors",
                                                                                 "b": "model-2.safetensors"}}))
    (src / "config.json").write_text(json.dumps({"seed": seed}))
    zoocodec.compress(src, tmp_path / f"m{seed}.zc", "lossless:coder=raw")
    zoocodec.decompress(tmp_path / f"m{seed}.zc", tmp_path / f"ref{seed}")
    return tmp_path / f"m{seed}.zc", folder_bytes(tmp_path / f"ref{seed}")


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def kill_during_folder_output(tmp_path: Path, kills: int) -> dict[str, int]:
    (a, want_a), (b, want_b) = hf_model_zc(tmp_path, 1), hf_model_zc(tmp_path, 2)
    out = tmp_path / "out"
    seen = {"absent": 0, "a": 0, "b": 0, "half": 0}
    g = np.random.default_rng(0)
    for _ in range(kills):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(a), str(b), str(out)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert p.stdout.readline().strip() == "go"
        time.sleep(g.uniform(0, 1.5))
        p.send_signal(signal.SIGKILL)
        p.wait()
        got = folder_bytes(out) if out.exists() else None
        seen["absent" if got is None else "a" if got == want_a else "b" if got == want_b else "half"] += 1
    zoocodec.decompress(a, out)  # the next run on the path removes what the killed ones left
    assert folder_bytes(out) == want_a
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    return seen


def test_sigkill_during_folder_output_leaves_no_half_folder(tmp_path):
    seen = kill_during_folder_output(tmp_path, 3)
    assert seen["half"] == 0, seen


@pytest.mark.slow
def test_sigkill_during_folder_output_leaves_no_half_folder_100(tmp_path):
    seen = kill_during_folder_output(tmp_path, 100)
    print("100 SIGKILLs during folder output:", seen)
    assert seen["half"] == 0 and seen["a"] + seen["b"] > 50, seen


def test_sequence_output_checked_before_decoding(tmp_path, model, monkeypatch, capsys):
    from zoocodec.pipeline.sequence import compress_seq

    compress_seq([model, model], tmp_path / "s.zc", min_size=200)
    for args in (["--format", "bogus"], ["--format", "onnx"]):
        err = one_line_error(run_cli(monkeypatch, capsys, "decompress-seq", tmp_path / "s.zc", "--member", "1",
                                     "-o", tmp_path / "x", *args))
        assert "format" in err or "ONNX" in err
