"""Automatic mode keeps the task metric within budget and records what it decided."""
import json

import numpy as np
import pytest
import torch

import zoocodec
from support import DIGITS_MLP, bert_folder, digits_mlp, onnx_digits, run_cli
from zoocodec.errors import ZoocodecError
from zoocodec.eval import data, evaluate
from zoocodec.eval.anymodel import evaluate_pair
from zoocodec.tuning.auto import STRENGTHS, _flatten, _one_d_where_it_pays, auto_compress, parse_loss


def test_parse_loss():
    assert parse_loss("1%") == 0.01 and parse_loss("0.5") == 0.005 and parse_loss(2) == 0.02
    for bad in ("abc", "0%", "100", "-1%"):
        with pytest.raises(ZoocodecError, match="--target-loss"):
            parse_loss(bad)


def test_allocation_strength_flattens_sensitivities():
    sens = {"a": 4.0, "b": 0.0, "c": np.array([1.0, 16.0])}
    half, flat = _flatten(sens, 0.5), _flatten(sens, 0.0)
    assert half["a"] == 2.0 and half["b"] == 0.0 and half["c"].tolist() == [1.0, 4.0]
    assert flat["a"] == 1.0 and flat["b"] == 0.0 and flat["c"].tolist() == [1.0, 1.0]  # 0: does not matter, still


def test_a_1d_tensor_is_lossy_only_where_that_is_smaller():
    from zoocodec.methods import parse_spec

    g = np.random.default_rng(0)
    weights = {"big.bias": torch.from_numpy(g.normal(0, 1, 2048).astype(np.float32)),
               "tiny.bias": torch.from_numpy(g.normal(0, 1, 8).astype(np.float32))}
    coarse, fine = parse_spec("uniform:step=0.05,coder=ctx"), parse_spec("uniform:step=1e-7,coder=ctx")
    exact: dict = {}
    plan = {"big.bias": coarse, "tiny.bias": coarse}
    assert _one_d_where_it_pays(weights, plan, exact) == plan and set(exact) == {"big.bias", "tiny.bias"}
    # finer than the floats themselves: the lossless coding is smaller, the tensors stay exact
    assert _one_d_where_it_pays(weights, {"big.bias": fine, "tiny.bias": fine}, exact) == {}


def test_a_budget_below_what_the_inputs_resolve_fails_fast(mnist_path, tmp_path):
    """0.05% of top-1: even unchanged predictions have a wider interval on the 1,000 search digits, and
    again on all 5,000 (searched instead); it says so at once."""
    try:
        data.opencv_digits()
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    with pytest.raises(ZoocodecError, match="not resolvable with 5,000 inputs"):  # nothing quantized: no loss
        auto_compress("mnist-cnn", tmp_path / "a.zc", 0.0005, sensitivities={}, min_size=10**9)
    assert not (tmp_path / "a.zc").exists()


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
    assert auto["strength"] in STRENGTHS and auto["method"] == result.method
    assert any(s.get("all_inputs") for s in auto["search"])  # the step was searched again on every input
    json.dumps(auto)
    # the written file gives exactly the verified metric
    value = next(m.value for m in evaluate(out, task=result.task) if m.metric == result.metric)
    assert value == result.value
    return meta


@pytest.mark.slow  # three allocation strengths and a second search on all 5,000 digits: about 2 minutes
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
    # another budget from the file's sensitivities (as the head-to-head runs them): a tensor they leave
    # out, as the header leaves out one whose noise broke the model, stays lossless
    with zoocodec.Archive(out) as a:
        stored = a.header["meta"]["auto"]["sensitivities"]
    left_out = "fc_layers.0.weight"
    again = tmp_path / "again.zc"
    auto_compress("mnist-cnn", again, 0.02, sensitivities={k: v for k, v in stored.items() if k != left_out})
    methods = {t["name"]: t["method"] for t in zoocodec.inspect(again)["tensors"]}
    assert methods[left_out].startswith("lossless") and not methods["conv_layers.6.weight"].startswith("lossless")


@pytest.mark.slow  # about 6 minutes here: calibration, three strengths, the search again on all 10,000 images
def test_data_aware_rounding_passes_the_budget_on_all_of_fashion_mnist(tmp_path):
    """fmnist-cnn at 1%: indices chosen on Fashion-MNIST train images, judged on all 10,000 test images
    by the pessimistic bound; the file decodes to what was judged and is far below nearest rounding's
    2.6 bits/weight."""
    from conftest import zoo_path

    zoo_path("fmnist-cnn")
    try:
        data.fashion_mnist("test")
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    out = tmp_path / "auto.zc"
    result = auto_compress("fmnist-cnn", out, 0.01)
    assert result.task == "fashion" and result.inputs == 10_000 and result.rounding == "gptq"
    _check(result, out, 0.01)
    with zoocodec.Archive(out) as a:
        r = a.header["meta"]["auto"]["rounding"]
    assert "train images" in r["calibration"] and r["calibration_inputs"] == data.CALIBRATION_IMAGES
    assert set(r["rounded"]) == {"conv2.0.weight", "conv3.0.weight", "conv4.0.weight", "conv5.0.weight"}
    assert result.report.bits_per_weight < 2.2


@pytest.mark.slow
def test_auto_mode_respects_the_budget_on_minilm(minilm_path, tmp_path):
    out = tmp_path / "auto.zc"
    result = auto_compress("minilm", out, 0.01)
    assert result.task == "lee" and result.metric == "cosine_mean"
    _check(result, out, 0.01)
    assert result.value >= 0.99 and result.report.bits_per_weight < 6


def _state_dict_and_module(digits_net, tmp_path, monkeypatch):
    """The digits net as net.pt with its module `autonets:make` importable; returns its inputs."""
    net, x = digits_net
    (tmp_path / "autonets.py").write_text(DIGITS_MLP)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    return x


def _auto_cli(monkeypatch, capsys, model, out, *args):
    """compress --target-loss through the CLI: its JSON summary and the decisions in the file's header."""
    code, stdout, err = run_cli(monkeypatch, capsys, "compress", str(model), "-o", str(out), "--json", *args)
    assert code == 0, err
    with zoocodec.Archive(out) as a:
        auto = a.header["meta"]["auto"]
    assert auto["original"] == str(model) and auto["verified"]["judged_by"] == "loss_high"
    return json.loads(stdout), auto


@pytest.fixture(scope="module")
def digits_net():
    pytest.importorskip("sklearn.datasets")
    return digits_mlp()


def test_auto_mode_on_an_onnx_model_outside_the_zoo(digits_net, tmp_path, monkeypatch, capsys):
    """An ONNX classifier made here (trained on scikit-learn's digits), a KL budget, judged on .npy inputs."""
    net, x = digits_net
    path = tmp_path / "net.onnx"
    onnx_digits(net, path, "x")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "auto.zc"
    summary, auto = _auto_cli(monkeypatch, capsys, path, out, "--target-loss", "1%", "--inputs", tmp_path / "x.npy",
                              "--min-size", "1024")
    assert summary["metric"] == "kl" and summary["loss_high"] <= 0.01 and summary["inputs"] == len(x)
    assert summary["ratio"] > 4  # far smaller than 8 bits at a KL of at most 0.01 nats
    assert auto["rounding"]["rounding"] == "nearest" and "ONNX" in auto["rounding"]["why"]  # no torch module
    # the written file gives the verified KL when evaluated against the original
    kl = next(m for m in evaluate_pair(path, out, tmp_path / "x.npy") if m.metric == "kl")
    assert kl.value == pytest.approx(auto["verified"]["value"], rel=1e-9)
    code, _, err = run_cli(monkeypatch, capsys, "compress", str(path), "-o", str(out), "--module", "a:b",
                           "--target-loss", "1%")
    assert code == 2 and "give --inputs" in err


def test_auto_mode_on_a_state_dict_with_its_module(digits_net, tmp_path, monkeypatch, capsys):
    """A PyTorch state dict and the user's module (--module), judged as values: a relative-L2 budget."""
    x = _state_dict_and_module(digits_net, tmp_path, monkeypatch)
    np.savez(tmp_path / "x.npz", x)
    out = tmp_path / "auto.zc"
    summary, auto = _auto_cli(monkeypatch, capsys, tmp_path / "net.pt", out, "--target-loss", "2%", "--inputs",
                              tmp_path / "x.npz", "--module", "autonets:make", "--output-kind", "values",
                              "--min-size", "1024", "--method", "dq:coder=ctx")
    assert summary["metric"] == "rel_l2" and summary["loss_high"] <= 0.02 and summary["inputs"] == len(x)
    assert auto["module"] == "autonets:make" and auto["output"] == "values"
    assert summary["method"].startswith("dq:") and summary["method"].endswith("coder=ctx")  # the coder named is kept
    assert summary["ratio"] > 3
    assert auto["rounding"] == {"rounding": "nearest", "why": "method dq chooses its own levels"}
    rel = next(m for m in evaluate_pair(tmp_path / "net.pt", out, tmp_path / "x.npz", module="autonets:make",
                                        output="values"))
    assert rel.metric == "rel_l2" and rel.value == pytest.approx(auto["verified"]["value"], rel=1e-9)


def test_auto_mode_on_a_hugging_face_encoder(tmp_path, monkeypatch, capsys):
    """A BERT encoder in a Hugging Face folder (built by transformers), judged by embedding cosine on a text file."""
    pytest.importorskip("transformers")
    folder = tmp_path / "bert"
    (tmp_path / "texts.txt").write_text("\n".join(bert_folder(folder, classifier=False, n_texts=40)) + "\n")
    out = tmp_path / "auto.zc"
    summary, auto = _auto_cli(monkeypatch, capsys, folder, out, "--target-loss", "0.5%", "--inputs",
                              tmp_path / "texts.txt", "--min-size", "8192")
    assert summary["metric"] == "cosine_mean" and summary["loss_high"] <= 0.005 and summary["inputs"] == 40
    assert summary["ratio"] > 2 and auto["sensitivities"]  # lossless float coding: about 1.2x
    # the decoded folder is the same model: evaluated against the original, the verified cosine
    zoocodec.decompress(out, tmp_path / "back")
    cos = next(m for m in evaluate_pair(folder, tmp_path / "back", tmp_path / "texts.txt") if m.metric == "cosine_mean")
    assert cos.value == pytest.approx(auto["verified"]["value"], abs=1e-6)


def test_data_aware_rounding_on_a_state_dict_with_its_module(digits_net, tmp_path, monkeypatch, capsys):
    """A uniform grid on the user's module: the indices are chosen with its --inputs (calibration on the
    judged inputs), and the written file gives the verified metric."""
    x = _state_dict_and_module(digits_net, tmp_path, monkeypatch)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "auto.zc"
    summary, auto = _auto_cli(monkeypatch, capsys, tmp_path / "net.pt", out, "--target-loss", "1%", "--inputs",
                              tmp_path / "x.npy", "--module", "autonets:make", "--min-size", "1024")
    r = auto["rounding"]
    assert r["rounding"] == "gptq" and r["calibration"] == f"the {len(x)} judged --inputs"
    assert r["calibration_inputs"] == len(x) and r["rounded"] == ["1.weight", "3.weight"]
    assert summary["metric"] == "kl" and summary["loss_high"] <= 0.01
    kl = next(m for m in evaluate_pair(tmp_path / "net.pt", out, tmp_path / "x.npy", module="autonets:make")
              if m.metric == "kl")
    assert kl.value == pytest.approx(auto["verified"]["value"], rel=1e-9)
