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
    assert result.loss <= target
    meta = zoocodec.inspect(out)  # header readable; the decisions are in meta
    with zoocodec.Archive(out) as a:
        auto = a.header["meta"]["auto"]
    assert a.header["meta"]["zoo"] == result.reference
    assert auto["target_loss"] == target and auto["verified"]["loss"] == result.loss
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
