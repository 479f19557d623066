"""`zoocodec evaluate` and `compress --target-loss`: bad input is one line on stderr and exit status 2."""
import importlib
import json

import pytest

from support import run_cli
from zoocodec.eval import data, evaluate as ev_fn
from zoocodec.pipeline import zoo

ev_mod = importlib.import_module("zoocodec.eval.evaluate")  # the module (the package's `evaluate` is the function)


run = run_cli


def one_line_error(code, err, *needles):
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for n in needles:
        assert n in err, err


@pytest.fixture
def user_zoo(tmp_path, monkeypatch):
    """A ZOOCODEC_ZOO file with the caller's entries; the registry re-read around the test."""
    def write(entries: dict):
        path = tmp_path / "zoo.yaml"
        path.write_text(json.dumps(entries))  # JSON is YAML
        monkeypatch.setenv("ZOOCODEC_ZOO", str(path))
        zoo.registry.cache_clear()
    yield write
    zoo.registry.cache_clear()


def test_unknown_model(monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "evaluate", "no-such-model")
    one_line_error(code, err, "not a zoo model", "mnist-cnn")


def test_unknown_task(monkeypatch, capsys, mnist_path):
    code, _, err = run(monkeypatch, capsys, "evaluate", "mnist-cnn", "--task", "photos")
    one_line_error(code, err, "unknown task 'photos'", "digits")
    code, _, err = run(monkeypatch, capsys, "compress", "mnist-cnn", "-o", "x.zc", "--task", "digits")
    one_line_error(code, err, "--target-loss")
    code, _, err = run(monkeypatch, capsys, "compress", "mnist-cnn", "-o", "x.zc", "--target-loss", "abc")
    one_line_error(code, err, "--target-loss")
    code, _, err = run(monkeypatch, capsys, "compress", "mnist-cnn", "-o", "x.zc", "--target-loss", "1%", "--bits", "4")
    one_line_error(code, err, "drop --step, --bits")


def test_missing_model_file(monkeypatch, capsys, user_zoo, tmp_path):
    user_zoo({"mine": {"path": str(tmp_path / "gone.safetensors"), "arch": "fashionnet", "tasks": ["fashion"]}})
    code, _, err = run(monkeypatch, capsys, "evaluate", "mine")
    one_line_error(code, err, "gone.safetensors is missing")


def test_dataset_not_installed(monkeypatch, capsys, tmp_path, mnist_path):
    monkeypatch.setattr(data, "OPENCV_DATA", tmp_path)  # an empty folder where opencv-doc would be
    monkeypatch.setattr(ev_mod, "_EVALUATORS", {})
    data.opencv_digits.cache_clear()
    try:
        code, _, err = run(monkeypatch, capsys, "evaluate", "mnist-cnn")
    finally:
        data.opencv_digits.cache_clear()
    one_line_error(code, err, "digits.png is missing", "apt-get install opencv-doc")


def test_user_entry_needs_no_code(user_zoo, mnist_path):
    """A local file plus an arch and a task in ZOOCODEC_ZOO is evaluated like a built-in model."""
    try:
        data.fashion_mnist("test")
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    ckpt = data.Path(ev_mod.__file__).parent.parent / "data" / "fmnist-cnn" / "epoch-03.safetensors"
    user_zoo({"my-fmnist": {"path": str(ckpt), "arch": "fashionnet", "tasks": ["fashion"]}})
    top1 = next(m for m in ev_fn("my-fmnist", limit=500) if m.metric == "top1")
    assert top1.value == top1.baseline and 0.8 < top1.value < 1
    with pytest.raises(Exception, match="its tasks: fashion"):
        ev_fn("my-fmnist", task="digits")


def test_evaluate_json(monkeypatch, capsys, mnist_path):
    try:
        data.opencv_digits()
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    code, out, _ = run(monkeypatch, capsys, "evaluate", str(mnist_path), "--task", "digits", "--json")
    assert code == 0
    rows = json.loads(out)
    assert {r["metric"] for r in rows} == {"top1", "top5", "agreement", "kl"}
    assert all(r["delta"] == 0 for r in rows)
