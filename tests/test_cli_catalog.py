"""A CLI that answers at once and says what it can do: no heavy imports, --version, methods, zoo, presets."""
import json
import subprocess
import sys
from importlib.metadata import version

from safetensors.torch import save_file

from support import run_cli, run_script, script_env
from zoocodec.codecs import CODERS
from zoocodec.methods import REGISTRY, parse_spec
from zoocodec.pipeline import zoo

HEAVY = ("torch", "ray", "cupy")


def _imported(out: str) -> set[str]:
    """Top-level modules named in `python -X importtime` output."""
    return {line.split("|")[-1].strip().split(".")[0] for line in out.splitlines() if line.startswith("import time:")}


def test_import_and_help_load_no_torch_ray_or_cupy():
    out = run_script("--help", PYTHONPROFILEIMPORTTIME="1")
    assert out.returncode == 0 and "methods" in out.stdout
    loaded = _imported(out.stderr)
    assert "zoocodec" in loaded and not loaded & set(HEAVY), loaded & set(HEAVY)
    script = f"import sys, zoocodec; print([m for m in {HEAVY!r} if m in sys.modules])"
    probe = subprocess.run([sys.executable, "-c", script],
                           env=script_env(), capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "[]", probe.stderr


def test_compress_help_lists_every_registered_coder(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "compress", "--help")
    text = " ".join(out.split())
    assert code == 0 and all(name in text for name in CODERS) and "cabac" in text, text


def test_version_is_the_installed_version():
    out = run_script("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"zoocodec {version('zoocodec')}"


def test_methods_lists_every_method_and_coder_with_ranges(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "methods", "--json")
    listed = json.loads(out)
    assert code == 0 and {m["name"] for m in listed["methods"]} == set(REGISTRY)
    assert {c["name"] for c in listed["coders"]} == set(CODERS)
    uniform = {p["name"]: p for p in next(m for m in listed["methods"] if m["name"] == "uniform")["params"]}
    assert uniform["bits"]["range"] == "2..16" and uniform["coder"]["default"] == "ans"
    assert "ctx" in uniform["coder"]["range"] and uniform["coder"]["type"] == "coder"
    hevc = {p["name"]: p for p in next(c for c in listed["coders"] if c["name"] == "video-hevc")["params"]}
    assert hevc["crf"]["range"] == "0..51"
    kmeans = {p["name"]: p for p in next(m for m in listed["methods"] if m["name"] == "kmeans")["params"]}
    assert kmeans["k"] == {"name": "k", "type": "int", "default": 16, "range": "2..256"}
    assert set(listed["presets"]) == {"near-lossless", "balanced", "small"}
    code, out, _ = run_cli(monkeypatch, capsys, "methods")
    assert code == 0 and all(name in out for name in [*REGISTRY, *CODERS]) and "presets" in out
    code, _, err = run_cli(monkeypatch, capsys, "methods", "magic")
    assert code == 2 and err.startswith("error: unknown method 'magic'")


def test_zoo_lists_models_installed_or_not(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "zoo", "--json")
    models = {m["name"]: m for m in json.loads(out)}
    assert code == 0 and set(models) == set(zoo.registry())
    assert models["mnist-cnn"]["tasks"] == ["digits"]
    assert models["mnist-cnn"]["installed"] == zoo.installed("mnist-cnn")
    code, out, _ = run_cli(monkeypatch, capsys, "zoo")
    assert code == 0 and "fmnist-cnn" in out and "\u2026" not in out  # never cut off a log


def test_presets(tmp_path, model, monkeypatch, capsys):
    save_file(model, tmp_path / "m.safetensors")
    code, out, _ = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "a.zc",
                           "--preset", "near-lossless", "--min-size", "100", "--json")
    assert code == 0 and parse_spec(json.loads(out)["spec"]) == parse_spec("uniform:bits=8")
    code, out, _ = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "s.zc",
                           "--preset", "small", "--min-size", "100", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["spec"].startswith("dq") and summary["bits_per_weight"] < 4.5
    code, _, err = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "x.zc",
                           "--preset", "small", "--bits", "4")
    assert code == 2 and "--preset sets the method" in err and not (tmp_path / "x.zc").exists()
    code, _, err = run_cli(monkeypatch, capsys, "compress", tmp_path / "m.safetensors", "-o", tmp_path / "x.zc",
                           "--preset", "tiny")
    assert code == 2 and "unknown preset 'tiny'" in err
