"""The command line: real files, exit codes, one-line errors."""
import json
import re
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from support import console_script, run_cli, run_script, script_env

run = run_cli


@pytest.fixture
def st_model(tmp_path, model):
    p = tmp_path / "m.safetensors"
    save_file(model, p)
    return p


def test_compress_inspect_decompress(tmp_path, st_model, monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "compress", st_model, "-o", tmp_path / "m.zc", "--bits", "6",
                       "--min-size", "100", "--override", "*emb*=uniform:bits=8", "--json")
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


def test_compress_names_the_attached_files_so_the_bytes_add_up_to_the_file(tmp_path, minilm_path, monkeypatch,
                                                                            capsys):
    """A Hugging Face folder's config and tokenizer travel in the file outside the weights' ratio: the summary
    line says how many bytes they are, so the two numbers it prints add up to what `ls` shows."""
    code, out, _ = run(monkeypatch, capsys, "compress", minilm_path, "-o", tmp_path / "m.zc")
    assert code == 0
    weights, attached = (int(x.replace(",", "")) for x in
                         re.search(r"-> ([\d,]+) bytes \(\+([\d,]+) attached\)", out).groups())
    assert attached > 0 and weights + attached == (tmp_path / "m.zc").stat().st_size


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
    (("compress", "{bin}", "-o", "x.zc"), "notmodel.bin: not a model zoocodec reads"),  # a suffix is no checkpoint
    (("compress", "{nan}", "-o", "x.zc"), "NaN or Inf"),
    (("verify", "flipped.zc"), "is corrupt"),
    (("inspect", "short.zc"), "truncated or corrupt"),
    (("decompress", "missing.zc", "-o", "y.safetensors"), "no such file"),
    (("inspect", "{text}"), "too short"),
    (("compress", "{model}"), "Missing option"),
    (("compress", "{model}", "-o", "{model}"), "is the input"),
    (("compress", "{model}", "-o", "."), "is a folder"),
    (("compress", "{model}", "-o", "missing/x.zc"), "folder missing does not exist"),
    (("compress", "{model}", "-o", "x.zc", "--target-loss", "1%", "--override", "*=uniform"),
     "does not take --override"),
    (("decompress", "good.zc", "-o", "y.safetensors", "--format", "tflite"), "unknown output format 'tflite'"),
    (("decompress", "good.zc", "-o", "good.zc"), "is the input"),
])
def test_bad_input_exit_2_with_one_line(tmp_path, st_model, model, monkeypatch, capsys, case, expect):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "notmodel.bin").write_text("hi")
    model["fc.weight"][1, 2] = float("inf")
    save_file(model, tmp_path / "nan.safetensors")
    corrupt(tmp_path, st_model, monkeypatch, capsys)
    args = [a.format(model=st_model, text=tmp_path / "notes.txt", bin=tmp_path / "notmodel.bin",
                     nan=tmp_path / "nan.safetensors") for a in case]
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert expect in err
    if expect != "Missing option":
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.zc").exists() and not (tmp_path / "y.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") or "zoocodec-tmp" in p.name]


def test_console_script_installed():
    """The `zoocodec` entry point exists and answers --help."""
    out = run_script("--help", timeout=120)
    assert out.returncode == 0 and "compress" in out.stdout


def test_console_script_status_is_the_verbs_status(tmp_path):
    """Bad input through the installed command: status 2 and one line."""
    out = run_script("inspect", tmp_path / "missing.zc")
    assert out.returncode == 2 and out.stderr.startswith("error: ") and len(out.stderr.splitlines()) == 1


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    """SIGINT while dq compresses (a container half written): status 130 within seconds, one
    line, no output file or temp file. The work is batched (40 same-shape tensors in one
    read-ahead window): tensors are written as their chunk finishes, not after the window."""
    g = np.random.default_rng(0)
    save_file({f"layer{i}.weight": torch.from_numpy(g.laplace(0, 0.02, (256, 1024)).astype(np.float32))
               for i in range(40)}, tmp_path / "big.safetensors")
    proc = subprocess.Popen([*console_script(), "compress", str(tmp_path / "big.safetensors"), "-o",
                             str(tmp_path / "big.zc"), "--method", "dq"],
                            env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not [p for p in tmp_path.glob(".big.zc.zoocodec-tmp-*") if p.stat().st_size > 100_000]:
        assert proc.poll() is None and time.monotonic() < deadline, "no tensor written"
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    waited = time.monotonic() - sent
    err = err.decode()
    assert proc.returncode == 130, err
    assert waited < 10, waited  # about 1 s here; the bound leaves room for a loaded machine
    *progress, last = err.strip().splitlines()
    assert last == "interrupted" and all(line.startswith("compressing ") for line in progress)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.safetensors"]


def test_unreachable_cluster_fails_within_the_stated_timeout(tmp_path):
    (tmp_path / "s.yaml").write_text("models: [mnist-cnn]\nmethods: [uniform]\n")
    start = time.monotonic()
    out = run_script("sweep", tmp_path / "s.yaml", "--address", "127.0.0.1:1", "--out", tmp_path / "r", timeout=120)
    assert out.returncode == 2 and time.monotonic() - start < 60
    assert out.stderr.splitlines()[-1].startswith("error: cannot reach the Ray cluster at 127.0.0.1:1")
    assert "waited up to 10 s" in out.stderr


def test_hw_nvdec_without_a_gpu_says_so(tmp_path, st_model, monkeypatch, capsys):
    pytest.importorskip("av")
    from zoocodec.codecs import nvdec

    if nvdec.nvdec_available():
        pytest.skip("this machine has NVDEC")
    code, _, err = run(monkeypatch, capsys, "compress", st_model, "-o", tmp_path / "v.zc", "--min-size", "100",
                       "--coder", "video-h264", "--hw", "nvdec")
    assert code == 0 and err.startswith("note: --hw nvdec: this machine has no usable NVDEC")


def test_summaries_and_whole_tables_in_logs(tmp_path, monkeypatch, capsys):
    """Off a terminal nothing is cut at 80 columns; decompress says what it wrote and what it cost."""
    g = np.random.default_rng(0)
    long = "encoder.layer.0.attention.self.query.a_rather_long_tensor_name_that_needs_many_columns.weight"
    save_file({long: torch.from_numpy(g.laplace(0, 0.02, (64, 128)).astype(np.float32))}, tmp_path / "m.safetensors")
    run(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "m.zc", "--method",
        "uniform:bits=6,coder=ctx")
    out = run_script("inspect", tmp_path / "m.zc")
    assert out.returncode == 0 and long in out.stdout and "uniform:bits=6,per_tensor=False,coder=ctx" in out.stdout
    assert "\u2026" not in out.stdout
    code, out, _ = run(monkeypatch, capsys, "decompress", tmp_path / "m.zc", "-o", tmp_path / "back.safetensors")
    assert code == 0 and "wrote" in out and "(safetensors)" in out and "ratio" in out and "bits/weight" in out


def test_inspect_shows_a_sequence(tmp_path, monkeypatch, capsys):
    from zoocodec.pipeline import zoo

    data = zoo.resolve("fmnist-cnn").parent
    code, _, _ = run(monkeypatch, capsys, "compress-seq", data / "epoch-01.safetensors", data / "epoch-02.safetensors",
                     "-o", tmp_path / "seq.zc")
    assert code == 0
    code, out, _ = run(monkeypatch, capsys, "inspect", tmp_path / "seq.zc", "--json")
    info = json.loads(out)
    assert code == 0 and info["sequence"]["members"] == ["epoch-01", "epoch-02"] and info["sequence"]["mode"] == "delta"
    assert set(info["member_bytes"]) == {"epoch-01", "epoch-02"} and 1 < info["ratio"] < 10
    code, out, _ = run(monkeypatch, capsys, "inspect", tmp_path / "seq.zc")
    assert code == 0 and "sequence of 2" in out and "epoch-02" in out and "bits/weight on average" in out


def test_compress_seq_and_inspect_agree(tmp_path, monkeypatch, capsys):
    """Both print the same numbers from one definition (issue 22: 138,816 vs 141,111 weights per
    member, 7.32 vs 7.198 bits/weight, `?` in the coding column)."""
    from zoocodec.pipeline import zoo

    data = zoo.resolve("fmnist-cnn").parent
    members = [data / f"epoch-0{i}.safetensors" for i in (1, 2, 3)]
    code, made, _ = run(monkeypatch, capsys, "compress-seq", *members, "-o", tmp_path / "seq.zc")
    assert code == 0
    code, shown, _ = run(monkeypatch, capsys, "inspect", tmp_path / "seq.zc")
    assert code == 0
    summary = [line for line in made.splitlines() if line.startswith(("members", "3 members x"))]
    assert len(summary) == 2 and all(line in shown.splitlines() for line in summary)
    code, out, _ = run(monkeypatch, capsys, "compress-seq", *members, "-o", tmp_path / "seq2.zc", "--json")
    made = json.loads(out)
    code, out, _ = run(monkeypatch, capsys, "inspect", tmp_path / "seq2.zc", "--json")
    info = json.loads(out)
    assert made["member_bits_per_weight"] == info["member_bits_per_weight"]
    assert (
        made["params_per_member"] == info["params_per_member"] == sum(t.numel() for t in load_file(members[0]).values())
    )
    # the members' own streams and the shared bytes add up to the file's weight bytes
    assert sum(info["member_bytes"].values()) + info["shared_bytes"] == info["weight_bytes"]
    codings = {r["name"]: r["coding"] for r in info["tensors"]}
    assert codings["fc.weight"].startswith("lossless") and codings["conv2.0.weight"].startswith("delta uniform:bits=8")
    assert not [c for c in codings.values() if "?" in c]


def test_plain_progress_lines_off_a_terminal(monkeypatch, capsys):
    from zoocodec.cli import render

    monkeypatch.setattr(render, "PLAIN_PROGRESS_SECONDS", 0.05)
    with render.working("evaluating m.zc"):
        time.sleep(0.3)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2 and all(line.startswith("evaluating m.zc (") for line in lines)
    with render.progress(3, "compressing") as step:
        for name in "abc":
            time.sleep(0.06)
            step(name)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("compressing 3/3 c") and lines[0].startswith("compressing 1/3 a")


@pytest.mark.slow
def test_automatic_mode_decisions_in_inspect_and_decompress(tmp_path, mnist_path, monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "compress", "mnist-cnn", "-o", tmp_path / "a.zc", "--target-loss", "1%")
    assert code == 0, err
    code, out, _ = run(monkeypatch, capsys, "inspect", tmp_path / "a.zc")
    assert (
        code == 0
        and "automatic mode: mnist-cnn digits top1 kept within 1%" in out
        and "verified on the held-back part" in out
    )
    code, out, _ = run(monkeypatch, capsys, "decompress", tmp_path / "a.zc", "-o", tmp_path / "a.pt")
    assert code == 0 and "automatic mode" in out and "ratio" in out


def test_sweep_summary_title_keeps_its_example(monkeypatch, capsys):
    """The note names the tasks to add as YAML (`tasks: [lee, wordsim]`); rich once ate it as markup."""
    from zoocodec.cli import render
    from zoocodec.jobs import report as rep

    note = rep.not_evaluated(["minilm"])
    render.print_summaries("quick", [rep.Summary(["model", "lossless"], [["minilm", "1.22x [lossless]"]], note)])
    out = capsys.readouterr().out
    assert "tasks: [lee, wordsim]" in " ".join(out.split()) and "1.22x [lossless]" in out


def test_inspect_cuts_long_spec_values():
    """A spec with a step per row group (smollm2's embedding: 49,152) is shown cut to its first values and
    a count; short tuples and the rest of the spec are shown whole."""
    from zoocodec.cli.render import short_spec

    steps = ", ".join(str(0.01 * i) for i in range(49152))
    shown = short_spec(f"rdoq:step=0.5,group_steps=({steps}),coder=cabac")
    assert shown == "rdoq:step=0.5,group_steps=(0.0, 0.01, 0.02, ... 49,152 values),coder=cabac"
    assert short_spec("uniform:bits=4,sides=(4, 5)") == "uniform:bits=4,sides=(4, 5)"


def test_sqnr_says_lossless_or_on_the_grid(tmp_path, st_model, monkeypatch, capsys):
    """A lossless file's summary says `lossless` (not `SQNR lossless dB`); compressing a decompressed
    file again finds its values exactly on the grid and says so instead of `lossless`."""
    code, out, _ = run(monkeypatch, capsys, "compress", st_model, "-o", tmp_path / "l.zc", "--method", "lossless")
    assert code == 0 and ", lossless, " in out and "SQNR" not in out.partition(": ")[2]
    run(monkeypatch, capsys, "compress", st_model, "-o", tmp_path / "a.zc", "--min-size", "100")
    run(monkeypatch, capsys, "decompress", tmp_path / "a.zc", "-o", tmp_path / "a.safetensors")
    code, out, _ = run(monkeypatch, capsys, "compress", tmp_path / "a.safetensors", "-o", tmp_path / "b.zc",
                       "--min-size", "100")
    assert code == 0 and "already sat on its grid" in out and "lossless" not in out.partition(": ")[2]
    code, out, _ = run(monkeypatch, capsys, "inspect", tmp_path / "b.zc")
    rows = {cells[1].strip(): cells[-2].strip() for cells in (line.split("│") for line in out.splitlines())
            if len(cells) > 2}
    assert rows["fc.weight"] == "on grid" and rows["fc.bias"] == "lossless"


def test_zoo_name_note_only_for_a_typed_name_and_never_before_an_error(tmp_path, mnist_path, monkeypatch, capsys):
    """Beside a local file named `mnist-cnn`: the note comes when the user typed the name, after
    the work; evaluating a .zc (whose reference zoocodec resolves itself) prints none; an error
    is one line, without the note."""
    from conftest import laplace_model

    save_file(laplace_model(), tmp_path / "mnist-cnn")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, "compress", "mnist-cnn", "-o", "z.zc")
    assert code == 0 and err.strip().splitlines() == [
        "note: mnist-cnn: using the zoo model; a local 'mnist-cnn' also exists (write ./mnist-cnn to use it)"]
    code, out, err = run(monkeypatch, capsys, "evaluate", "z.zc", "--json")
    assert code == 0 and "note" not in err and json.loads(out)[0]["task"] == "digits"
    code, _, err = run(monkeypatch, capsys, "compress", "mnist-cnn", "-o", "missing/z.zc")
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def test_missing_output_folders_are_refused_for_files_and_model_folders(tmp_path):
    """One rule (issue 22: a model folder's missing parents were created, a file's refused):
    the folder an output goes into must exist."""
    from zoocodec.cli.options import check_output
    from zoocodec.errors import ZoocodecError

    for folder in (False, True):
        with pytest.raises(ZoocodecError, match="folder .*nodir/sub does not exist"):
            check_output(tmp_path / "nodir" / "sub" / "minilm", [], folder=folder)
    check_output(tmp_path / "minilm", [], folder=True)  # the output itself may be new
    assert sorted(tmp_path.iterdir()) == []


def test_printed_time_includes_every_phase(tmp_path, st_model, monkeypatch, capsys):
    """--target-bpw allocates steps before compressing; the time printed counts both (issue 22:
    45.2 s printed for an 86 s run). The real allocation runs, then waits 0.5 s more."""
    import zoocodec.tuning.allocate as allocation

    real = allocation.allocate

    def slow_allocate(*args, **kwargs):
        plan = real(*args, **kwargs)
        time.sleep(0.5)
        return plan

    monkeypatch.setattr(allocation, "allocate", slow_allocate)
    code, out, _ = run(monkeypatch, capsys, "compress", st_model, "-o", tmp_path / "m.zc", "--min-size", "100",
                       "--target-bpw", "4", "--json")
    assert code == 0 and json.loads(out)["seconds"] >= 0.5


def test_compress_help_names_every_coder(monkeypatch, capsys):
    from zoocodec import catalog

    code, out, _ = run(monkeypatch, capsys, "compress", "--help")
    text = " ".join(out.split())
    assert code == 0 and [c["name"] for c in catalog.coders() if c["name"] not in text] == []
