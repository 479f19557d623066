"""Automatic mode keeps the task metric within budget and records what it decided."""
import json

import pytest

import zoocodec
from zoocodec.errors import ZoocodecError
from zoocodec.eval import data, evaluate
from zoocodec.tuning.auto import auto_compress, parse_loss


def test_parse_loss():
    assert parse_loss("1%") == 0.01 and parse_loss("0.5") == 0.005 and parse_loss(2) == 0.02
    for bad in ("abc", "0%", "100", "-1%"):
        with pytest.raises(ZoocodecError, match="--target-loss"):
            parse_loss(bad)


def _check(result, out, target):
    assert result.loss <= result.loss_high <= target  # judged by the pessimistic end of the interval
    meta = zoocodec.inspect(out)  # header readable; the decisions are in meta
    with zoocodec.Archive(out) as a:
        auto = a.header["meta"]["auto"]
    assert a.header["meta"]["zoo"] == result.reference
    assert auto["target_loss"] == target and auto["verified"]["loss"] == result.loss
    v = auto["verified"]
    assert v["loss_low"] <= v["loss"] <= v["loss_high"] == result.loss_high and v["inputs"] == result.inputs > 0
    assert len(auto["search"]) >= 3 and auto["sensitivities"]
    json.dumps(auto)
    # the written file gives exactly the verified metric
    value = next(m.value for m in evaluate(out, task=result.task) if m.metric == result.metric)
    assert value == result.value
    return meta


def test_auto_mode_respects_the_budget_on_mnist_cnn(mnist_path, tmp_path):
    try:
        data.opencv_digits()
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    out = tmp_path / "auto.zc"
    result = auto_compress("mnist-cnn", out, 0.01)
    assert result.task == "digits" and result.metric == "top1"
    _check(result, out, 0.01)
    eight = zoocodec.compress("mnist-cnn", tmp_path / "u8.zc", "uniform:bits=8")
    assert result.report.ratio > 2 * eight.ratio  # far smaller than int8 at <= 1% top-1 loss


@pytest.mark.slow
def test_auto_mode_respects_the_budget_on_minilm(minilm_path, tmp_path):
    out = tmp_path / "auto.zc"
    result = auto_compress("minilm", out, 0.01)
    assert result.task == "lee" and result.metric == "cosine_mean"
    _check(result, out, 0.01)
    assert result.value >= 0.99 and result.report.bits_per_weight < 6


def test_auto_mode_on_a_model_outside_the_zoo(tmp_path, monkeypatch, capsys):
    """An ONNX classifier made here (trained on scikit-learn's digits), a KL budget, judged on .npy inputs."""
    datasets = pytest.importorskip("sklearn.datasets")
    import warnings

    import numpy as np
    import torch

    from support import run_cli

    x, y = datasets.load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[:1400]), torch.tensor(y[:1400])).backward()
        opt.step()
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (x[:2],), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    np.save(tmp_path / "x.npy", x[1400:].numpy())
    out = tmp_path / "auto.zc"
    code, stdout, err = run_cli(monkeypatch, capsys, "compress", str(path), "-o", str(out), "--target-loss", "1%",
                                "--inputs", str(tmp_path / "x.npy"), "--min-size", "1024", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["metric"] == "kl" and summary["loss_high"] <= 0.01 and summary["inputs"] == len(x) - 1400
    assert summary["ratio"] > 4  # far smaller than 8 bits at a KL of at most 0.01 nats
    with zoocodec.Archive(out) as a:
        auto = a.header["meta"]["auto"]
    assert auto["original"] == str(path) and auto["verified"]["judged_by"] == "loss_high"
    # the written file gives the verified KL when evaluated against the original
    from zoocodec.eval.anymodel import evaluate_pair

    kl = next(m for m in evaluate_pair(path, out, tmp_path / "x.npy") if m.metric == "kl")
    assert kl.value == pytest.approx(auto["verified"]["value"], rel=1e-9)
    code, _, err = run_cli(monkeypatch, capsys, "compress", str(path), "-o", str(out), "--module", "a:b",
                           "--target-loss", "1%")
    assert code == 2 and "give --inputs" in err
