"""Trained quantization: fine-tuning the steps, symbols and lossless 1-D tensors a file stores."""
import numpy as np
import pytest
import torch

import zoocodec
from support import DIGITS_MLP, digits_mlp, onnx_digits, run_cli
from zoocodec.errors import ZoocodecError
from zoocodec.eval.anymodel import PairEvaluator
from zoocodec.methods import parse_spec
from zoocodec.pipeline.core import compress
from zoocodec.pipeline.modelio import to_tensordata
from zoocodec.tuning.auto import auto_compress, reconstruct
from zoocodec.tuning.finetune import distortion, finetune, trainable, tunable


@pytest.fixture(scope="module")
def digits_net():
    pytest.importorskip("sklearn.datasets")
    return digits_mlp()


@pytest.fixture
def state_dict(digits_net, tmp_path, monkeypatch):
    """net.pt, its module `autonets:make` importable, and its inputs as x.npy."""
    net, x = digits_net
    (tmp_path / "autonets.py").write_text(DIGITS_MLP)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    np.save(tmp_path / "x.npy", x)
    return tmp_path / "net.pt", tmp_path / "x.npy"


def test_distortion_is_zero_at_the_reference_and_positive_elsewhere():
    ref = torch.randn(5, 10)
    for kind in ("logits", "embeddings", "values"):
        assert float(distortion(kind, ref, ref)) == pytest.approx(0, abs=1e-6)
        assert float(distortion(kind, ref + torch.randn(5, 10), ref)) > 0


def test_only_single_step_nearest_rounding_specs_are_tuned():
    assert tunable(parse_spec("uniform:step=0.01"))
    assert not tunable(parse_spec("uniform:bits=8"))  # min-max steps: the quantizer computes them
    assert not tunable(parse_spec("dq:step=0.01"))  # chooses its own levels


def test_finetuning_lowers_the_distillation_loss_and_the_file_holds_what_it_trained(state_dict, tmp_path):
    model, x = state_dict
    ev = PairEvaluator(model, x, "autonets:make")
    weights = {k: v.float() for k, v in torch.load(model).items()}
    plan = {k: parse_spec("uniform:step=0.08") for k, v in weights.items() if v.dim() == 2}
    recon = reconstruct(weights, plan)
    tr = trainable(ev, ev.task, weights, ev)
    assert tr.kind == "logits" and tr.count == len(np.load(x))
    tuned = finetune(tr, weights, plan, recon, {}, steps=40)
    assert tuned.steps == 40 and tuned.after < tuned.before
    assert sorted(tuned.trained) == sorted(weights)  # the two matrices and both biases
    assert any(tuned.plan[k].step != plan[k].step for k in plan)  # the steps moved
    # the targets lie on the new grids: the quantizer returns them exactly, and the written file decodes to them
    out = tmp_path / "tuned.zc"
    compress(weights, out, "lossless", plan=tuned.plan, min_size=1,
             targets={k: to_tensordata(k, v).array for k, v in tuned.targets.items()})
    decoded = zoocodec.decompress(out)
    for k, v in tuned.targets.items():
        assert torch.equal(torch.as_tensor(np.asarray(decoded[k])), v), k
    # fewer symbols fixed: the steps and biases alone also lower it
    frozen = finetune(tr, weights, plan, recon, {}, steps=40, symbols=False)
    assert frozen.moved == 0 and frozen.after < frozen.before
    # the steps alone: the biases stay as they are
    steps_only = finetune(tr, weights, plan, recon, {}, steps=40, one_d_lr=0)
    assert sorted(steps_only.trained) == sorted(plan) and set(steps_only.targets) <= set(plan)
    # the 1-D tensors alone: the steps and symbols stay as they are
    one_d_only = finetune(tr, weights, plan, recon, {}, steps=40, symbols=False, step_lr=0)
    assert one_d_only.after < one_d_only.before and one_d_only.moved == 0
    assert all(one_d_only.plan[k].step == pytest.approx(plan[k].step, rel=1e-6) for k in plan)
    assert any(not torch.equal(one_d_only.targets[k], weights[k]) for k in weights if weights[k].dim() == 1)


def test_a_time_budget_ends_finetuning_early(state_dict):
    model, x = state_dict
    ev = PairEvaluator(model, x, "autonets:make")
    weights = {k: v.float() for k, v in torch.load(model).items()}
    plan = {k: parse_spec("uniform:step=0.05") for k, v in weights.items() if v.dim() == 2}
    tuned = finetune(trainable(ev, ev.task, weights, ev), weights, plan, reconstruct(weights, plan), {},
                     steps=10**6, seconds=0.0)
    assert tuned.steps == 0 and tuned.after == pytest.approx(tuned.before)


def test_auto_mode_with_finetuning_records_its_tries_and_verifies_the_budget(state_dict, tmp_path):
    model, x = state_dict
    out = tmp_path / "ft.zc"
    lines: list[str] = []
    r = auto_compress(model, out, 0.01, inputs=x, module="autonets:make", min_size=1024, finetune=True,
                      finetune_steps=10, log=lines.append)
    with zoocodec.Archive(out) as a:
        auto = a.header["meta"]["auto"]
    ft = auto["finetune"]
    assert ft["tries"] and all(t["steps"] <= 10 for t in ft["tries"])
    assert ft["calibration"] == "the calibration/search part of --inputs" and ft["device"] == "cpu"
    assert r.within and r.loss_high <= 0.01  # verified on the held-back part, fine-tuned or not
    assert any(line.startswith("fine-tuning: ") for line in lines)
    if ft["kept"]:
        assert auto["base_step"] > ft["tries"][0]["base_step"] / 2 ** 0.25 * 0.999


def test_finetuning_refuses_a_model_it_cannot_run(digits_net, tmp_path, monkeypatch, capsys):
    """An ONNX graph has no torch module: one line, exit 2."""
    net, x = digits_net
    onnx_digits(net, tmp_path / "net.onnx", "x")
    np.save(tmp_path / "x.npy", x)
    code, _, err = run_cli(monkeypatch, capsys, "compress", str(tmp_path / "net.onnx"), "-o", str(tmp_path / "a.zc"),
                           "--target-loss", "1%", "--inputs", str(tmp_path / "x.npy"), "--min-size", "1024",
                           "--finetune")
    assert code == 2 and "torch module" in err and len(err.strip().splitlines()) >= 1
    assert not (tmp_path / "a.zc").exists()
    code, _, err = run_cli(monkeypatch, capsys, "compress", "mnist-cnn", "-o", str(tmp_path / "b.zc"), "--finetune")
    assert code == 2 and "add --target-loss" in err
    with pytest.raises(ZoocodecError, match="chooses its own levels"):
        auto_compress(tmp_path / "net.onnx", tmp_path / "c.zc", 0.01, inputs=tmp_path / "x.npy", min_size=1024,
                      method="dq", finetune=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_finetuning_runs_on_every_device_and_returns_host_tensors(device):
    """A small MLP on random inputs: the same training on the CPU and the GPU (`--device`); what it returns
    lies on the host, on the grid, for the writer."""
    from zoocodec.tuning.finetune import Trainable

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    x = torch.randn(256, 16)
    tr = Trainable(net, {k: k for k in weights}, [x[i:i + 32] for i in range(0, 256, 32)],
                   lambda n, s, b: torch.func.functional_call(n, s, (b.to(next(iter(s.values())).device),)),
                   "logits", "random inputs")
    plan = {k: parse_spec("uniform:step=0.05") for k, v in weights.items() if v.dim() == 2}
    tuned = finetune(tr, weights, plan, reconstruct(weights, plan), {}, steps=30, device=device)
    assert tuned.after < tuned.before
    decoded = reconstruct({**weights, **tuned.targets}, tuned.plan)
    for k, v in tuned.targets.items():
        assert v.device.type == "cpu" and v.dtype == weights[k].dtype
        assert torch.equal(decoded[k], v)  # on the grid: the quantizer returns them as they are


def test_a_planned_batchnorm_statistic_stays_as_it_was_coded():
    """BatchNorm's running mean may be coded lossily (a 1-D tensor in the plan): a buffer, not trained."""
    from zoocodec.tuning.finetune import Trainable

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 3)).eval()
    net[1].running_mean.normal_()
    weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    x = torch.randn(64, 8)
    tr = Trainable(net, {k: k for k in weights}, [x[:32], x[32:]],
                   lambda n, s, b: torch.func.functional_call(n, s, (b,)), "logits", "random inputs")
    plan = {k: parse_spec("uniform:step=0.05") for k in ("0.weight", "2.weight", "1.running_mean")}
    recon = reconstruct(weights, plan)
    tuned = finetune(tr, weights, plan, recon, {}, steps=10)
    assert "1.running_mean" not in tuned.trained and tuned.plan["1.running_mean"] == plan["1.running_mean"]
