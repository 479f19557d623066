"""Devices on the CPU machine: names, a missing GPU as a one-line error (never a silent CPU run),
and `cpu`/`auto` through compress, decompress, evaluate, the CLI and sweep items."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import zoocodec
from support import run_cli
from zoocodec import device as D
from zoocodec.jobs import run as runner, spec as sweep_spec
from zoocodec.pipeline.core import compress, decompress

NO_GPU = D.gpu_count() == 0
needs_no_gpu = pytest.mark.skipif(not NO_GPU, reason="checks the behaviour of a machine without a GPU")


def test_names():
    assert D.resolve("cpu") is D.CPU and D.resolve(None) is D.CPU and D.resolve(" CPU ") is D.CPU
    assert D.CPU.label == "cpu" and D.CPU.torch == "cpu" and D.CPU.xp.__name__ == "numpy"
    for bad in ("tpu", "cuda:x", "gpu:-1", "cuda0", ""):
        with pytest.raises(D.DeviceError, match="unknown device"):
            D.resolve(bad)
    assert [D.name(n) for n in ("GPU", "cuda:3", "auto")] == ["gpu", "cuda:3", "auto"]


@needs_no_gpu
@pytest.mark.parametrize("name", ["gpu", "cuda", "cuda:0", "gpu:1"])
def test_a_missing_gpu_is_an_error(name):
    with pytest.raises(D.DeviceError) as e:
        D.resolve(name)
    assert "\n" not in str(e.value) and "no CUDA GPU" in str(e.value)


@needs_no_gpu
def test_auto_is_cpu_here_and_compress_records_it(tmp_path, model):
    compress(model, tmp_path / "a.zc", "uniform:bits=6", min_size=100)
    b = compress(model, tmp_path / "b.zc", "uniform:bits=6", min_size=100, device="auto")
    assert b.device == "cpu" and {t.device for t in b.tensors} == {"cpu"}
    assert (tmp_path / "a.zc").read_bytes() == (tmp_path / "b.zc").read_bytes()
    tensors = zoocodec.load(tmp_path / "b.zc", device="auto")
    assert all(t.device.type == "cpu" for t in tensors.values())


@needs_no_gpu
def test_gpu_verbs_fail_before_any_work(tmp_path, model):
    with pytest.raises(D.DeviceError):
        compress(model, tmp_path / "m.zc", device="gpu")
    assert not (tmp_path / "m.zc").exists()
    compress(model, tmp_path / "m.zc", min_size=100)
    with pytest.raises(D.DeviceError):
        decompress(tmp_path / "m.zc", device="cuda:0")
    with pytest.raises(D.DeviceError):
        zoocodec.load(tmp_path / "m.zc", device="gpu")


def test_load_into_assigns_the_decoded_tensors(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    save_file(net.state_dict(), tmp_path / "n.safetensors")
    compress(tmp_path / "n.safetensors", tmp_path / "n.zc", "uniform:bits=8", min_size=100)
    fresh = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    zoocodec.load_into(fresh, tmp_path / "n.zc", device="cpu")
    decoded = decompress(tmp_path / "n.zc")
    assert all(torch.equal(p, decoded[k]) for k, p in fresh.state_dict().items())
    with pytest.raises(zoocodec.pipeline.core.ZoocodecError, match="do not fit"):
        zoocodec.load_into(torch.nn.Linear(3, 3), tmp_path / "n.zc")


@needs_no_gpu
@pytest.mark.parametrize("verb", ["compress", "decompress", "evaluate"])
def test_cli_device_gpu_is_one_line_exit_2(verb, tmp_path, model, monkeypatch, capsys):
    save_file(model, tmp_path / "m.safetensors")
    compress(tmp_path / "m.safetensors", tmp_path / "m.zc", min_size=100)
    args = {"compress": ["compress", tmp_path / "m.safetensors", "-o", tmp_path / "new.zc"],
            "decompress": ["decompress", tmp_path / "m.zc", "-o", tmp_path / "back.safetensors"],
            "evaluate": ["evaluate", tmp_path / "m.zc"]}[verb]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--device", "gpu")
    assert code == 2 and err.count("\n") == 1 and "no CUDA GPU" in err and "Traceback" not in err
    assert not (tmp_path / "new.zc").exists() and not (tmp_path / "back.safetensors").exists()


def test_cli_bad_device_name(tmp_path, model, monkeypatch, capsys):
    save_file(model, tmp_path / "m.safetensors")
    code, _, err = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "x.zc",
                           "--device", "tpu")
    assert code == 2 and "unknown device 'tpu'" in err


def test_cli_compress_reports_the_device(tmp_path, model, monkeypatch, capsys):
    import json

    save_file(model, tmp_path / "m.safetensors")
    code, out, _ = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "x.zc",
                           "--device", "cpu", "--json")
    assert code == 0 and json.loads(out)["device"] == "cpu"


def test_sweep_device_key(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "models: [m.safetensors]\nmethods:\n  - uniform:bits=8\n"
        "  - {method: uniform, params: {bits: 6}, resources: {GPU: 1}}\n"
        "  - {method: uniform, params: {bits: 4}, resources: {GPU: 1}, device: gpu}\n"
        "  - {method: kmeans, device: CUDA:1}\n")
    save_file({"w": torch.zeros(8, 8)}, tmp_path / "m.safetensors")
    items = sweep_spec.load(tmp_path / "s.yaml").items
    assert [i.device for i in items] == ["cpu", "auto", "gpu", "cuda:1"]
    (tmp_path / "bad.yaml").write_text("models: [m.safetensors]\nmethods:\n  - {method: uniform, device: tpu}\n")
    with pytest.raises(sweep_spec.SpecError, match=r"bad.yaml:3: unknown device"):
        sweep_spec.load(tmp_path / "bad.yaml")


@needs_no_gpu
def test_a_gpu_item_without_a_gpu_is_a_failed_row_and_auto_records_cpu(tmp_path, model):
    save_file(model, tmp_path / "m.safetensors")
    (tmp_path / "s.yaml").write_text(
        "models: [m.safetensors]\nmin_size: 100\nmethods:\n"
        "  - {method: uniform, params: {bits: 6}, device: gpu}\n"
        "  - {method: uniform, params: {bits: 5}, resources: {GPU: 1}}\n")
    gpu, auto = sweep_spec.load(tmp_path / "s.yaml").items
    row, tensors = runner.execute(gpu, "s")
    assert row["status"] == "failed" and "no CUDA GPU" in row["error"] and row["device"] == "asked: gpu"
    assert tensors == []
    row, tensors = runner.execute(auto, "s")
    assert row["status"] == "ok" and row["device"] == "cpu" and tensors
