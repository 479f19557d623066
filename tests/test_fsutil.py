"""Outputs: checked before any work, one line when they cannot be written, whole or not at all."""
import json
import multiprocessing
import os
import subprocess
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
    err = one_line_error(
        run_cli(monkeypatch, capsys, "decompress", f.write(tmp_path / "e.zc"), "-o", tmp_path / "x.onnx")
    )
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


def hold_lock(path: Path, held) -> None:
    assert fsutil.try_lock(path) is not None
    held.set()
    time.sleep(60)


def test_a_claim_is_exclusive_and_ends_with_its_holder(tmp_path):
    ctx = multiprocessing.get_context("fork")
    held = ctx.Event()
    holder = ctx.Process(target=hold_lock, args=(tmp_path / ".claims" / "item.lock", held))
    holder.start()
    assert held.wait(30)
    assert fsutil.try_lock(tmp_path / ".claims" / "item.lock") is None
    holder.kill()
    holder.join()
    fd = fsutil.try_lock(tmp_path / ".claims" / "item.lock")  # the kernel let go of the dead holder's claim
    assert fd is not None
    assert fsutil.try_lock(tmp_path / ".claims" / "item.lock") is None  # also within one process
    os.close(fd)


# ---- whole or nothing under SIGKILL --------------------------------------------------------------
# Writers are forked from a server that has imported torch and zoocodec already, and each is killed
# a random time after its temp output appears beside the target, so the kill lands inside the write
# window (from the temp's creation to the rename), not in Python's imports.
WARM = ["torch", "safetensors.torch", "zoocodec.pipeline.core", "zoocodec.pipeline.modelio", "zoocodec.container",
        "zoocodec.codecs.lossless"]


def hf_model(tmp_path: Path, seed: int) -> Path:
    """A two-shard Hugging Face folder of ~8 MB."""
    g = torch.Generator().manual_seed(seed)
    src = tmp_path / f"src{seed}"
    src.mkdir()
    save_file({"a": torch.randn(512, 2048, generator=g)}, src / "model-1.safetensors")
    save_file({"b": torch.randn(512, 2048, generator=g)}, src / "model-2.safetensors")
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-1.safetensors",
                                                                                 "b": "model-2.safetensors"}}))
    (src / "config.json").write_text(json.dumps({"seed": seed}))
    return src


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def output_bytes(out: Path):
    if out.is_dir():
        return folder_bytes(out)
    return out.read_bytes() if out.exists() else None


def temps(out: Path) -> list[str]:
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.zoocodec-")]


def kill_during_output(tmp_path: Path, kills: int, verb: str) -> dict[str, int]:
    """Write model 1 and model 2 alternately to one output (`decompress` to a Hugging Face folder, or
    `compress` to a .zc file), SIGKILL each writer inside its write window, and classify what the
    output path holds after each kill: absent, whole old, whole new, or anything else (half, mixed).
    """
    src = [hf_model(tmp_path, 1), hf_model(tmp_path, 2)]
    zcs = [tmp_path / "m1.zc", tmp_path / "m2.zc"]
    for s, z in zip(src, zcs, strict=True):
        zoocodec.compress(s, z, "lossless:coder=raw")
    if verb == "decompress":
        out = tmp_path / "work" / "model"
        for z in zcs:
            zoocodec.decompress(z, tmp_path / "want" / z.stem)
        want = [folder_bytes(tmp_path / "want" / z.stem) for z in zcs]
        jobs = [(zoocodec.decompress, (str(z), str(out)), {"fmt": "hf"}) for z in zcs]
    else:
        out = tmp_path / "work" / "model.zc"
        want = [z.read_bytes() for z in zcs]
        jobs = [(zoocodec.compress, (str(s), str(out), "lossless:coder=raw"), {}) for s in src]
    out.parent.mkdir()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WARM)

    def start(i: int):
        target, args, kwargs = jobs[i]
        p = ctx.Process(target=target, args=args, kwargs=kwargs)
        p.start()
        return p

    def temp_appears(p) -> float:
        """Wait until `p` has made its temp output; when it did, in time.monotonic()."""
        t = time.monotonic()
        while not any(f"-{p.pid}-" in n for n in temps(out)):
            assert p.is_alive() or p.exitcode is None, f"the writer ended ({p.exitcode}) without writing"
            assert time.monotonic() - t < 120, "no temp output appeared"
            time.sleep(0.0005)
        return time.monotonic()

    for i in range(2):  # a whole write each, unkilled: how long the window (temp made .. renamed) is
        p = start(i)
        opened = temp_appears(p)
        while any(f"-{p.pid}-" in n for n in temps(out)):
            time.sleep(0.0005)
        window = time.monotonic() - opened
        p.join()
        assert p.exitcode == 0 and output_bytes(out) == want[i]
    seen = {"absent": 0, "old": 0, "new": 0, "half": 0, "mixed": 0, "litter after kill": 0,
            "earlier litter left while the next run writes": 0}
    g = np.random.default_rng(0)
    for _ in range(kills):
        i = 1 - want.index(output_bytes(out))  # always the other model: old and new differ
        p = start(i)
        temp_appears(p)
        # listed after the writer made its temp, so after it cleaned up: what it left is still here
        seen["earlier litter left while the next run writes"] += any(f"-{p.pid}-" not in n for n in temps(out))
        time.sleep(g.uniform(0, window))
        p.kill()
        p.join()
        got = output_bytes(out)
        seen["litter after kill"] += bool(temps(out))
        if got is None:
            seen["absent"] += 1
        elif got == want[i]:
            seen["new"] += 1
        elif got == want[1 - i]:
            seen["old"] += 1
        else:
            seen["half"] += 1
            seen["mixed"] += isinstance(got, dict) and all(any(got.get(k) == v != want[1 - j].get(k)
                                                               for k, v in want[j].items()) for j in (0, 1))
            break
    jobs[0][0](*jobs[0][1], **jobs[0][2])  # the next run on the path removes what the killed ones left
    assert output_bytes(out) == want[0]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    return seen


@pytest.mark.parametrize("verb", ["decompress", "compress"])
def test_sigkill_during_output_leaves_no_half_output(tmp_path, verb):
    seen = kill_during_output(tmp_path, 8, verb)
    assert seen["half"] == 0 and seen["earlier litter left while the next run writes"] == 0, seen
    assert seen["litter after kill"] >= 1, f"no kill landed inside the write window: {seen}"


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["decompress", "compress"])
def test_sigkill_during_output_leaves_no_half_output_100(tmp_path, verb):
    seen = kill_during_output(tmp_path, 100, verb)
    print(f"100 SIGKILLs during {verb}:", seen)
    assert seen["half"] == 0 and seen["earlier litter left while the next run writes"] == 0, seen
    assert seen["litter after kill"] >= 30 and seen["old"] + seen["new"] == 100, seen


def test_sequence_output_checked_before_decoding(tmp_path, model, monkeypatch, capsys):
    from zoocodec.pipeline.sequence import compress_seq

    compress_seq([model, model], tmp_path / "s.zc", min_size=200)
    for args in (["--format", "bogus"], ["--format", "onnx"]):
        err = one_line_error(run_cli(monkeypatch, capsys, "decompress-seq", tmp_path / "s.zc", "--member", "1",
                                     "-o", tmp_path / "x", *args))
        assert "format" in err or "ONNX" in err
