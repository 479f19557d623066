"""Bit allocation: equal-slope steps, size targets hit, row groups, bad input rejected."""
from __future__ import annotations

import math

import numpy as np
import pytest

import zoocodec
from zoocodec.errors import SpecError
from zoocodec.tuning.allocate import allocate, estimate_bpw


def test_uniform_weights_give_one_step(mnist_path):
    plan = allocate(mnist_path, base_step=0.01)
    assert set(plan) == {"conv_layers.3.weight", "conv_layers.6.weight", "fc_layers.0.weight"}  # the rest is small
    assert {s.step for s in plan.values()} == {float(np.float32(0.01))}
    assert all(s.name == "uniform" and s.bits is None for s in plan.values())


def test_target_bpw_is_hit_by_the_real_file(mnist_path, tmp_path):
    plan = allocate(mnist_path, target_bpw=3.0)
    assert estimate_bpw(mnist_path, plan) == pytest.approx(3.0, rel=2e-3)
    report = zoocodec.compress(mnist_path, tmp_path / "m.zc", plan=plan)
    # the estimate is the ideal order-0 entropy; tables and the container header come on top
    assert 2.9 < report.bits_per_weight < 3.3


def test_sensitivity_sets_equal_slope(mnist_path):
    sens = {"conv_layers.3.weight": 1.0, "conv_layers.6.weight": 4.0, "fc_layers.0.weight": 100.0}
    plan = allocate(mnist_path, sensitivities=sens, base_step=0.02)
    slopes = [sens[n] * plan[n].step ** 2 for n in sens]  # s_t * step_t^2 is the same for all
    assert max(slopes) / min(slopes) == pytest.approx(1.0, rel=1e-6)
    assert plan["conv_layers.6.weight"].step == pytest.approx(0.02, rel=1e-6)  # the median keeps the base


def test_sensitive_tensors_get_more_bits_at_equal_size(mnist_path):
    flat = allocate(mnist_path, target_bpw=3.0)
    tilted = allocate(
        mnist_path,
        target_bpw=3.0,
        sensitivities={"fc_layers.0.weight": 1.0, "conv_layers.3.weight": 50.0, "conv_layers.6.weight": 50.0},
    )
    assert estimate_bpw(mnist_path, tilted) == pytest.approx(3.0, rel=2e-3)
    assert tilted["conv_layers.3.weight"].step < flat["conv_layers.3.weight"].step
    assert tilted["fc_layers.0.weight"].step > flat["fc_layers.0.weight"].step


def test_zero_sensitivity_rounds_everything_to_zero(mnist_path, tmp_path):
    plan = allocate(mnist_path, base_step=0.01, sensitivities={"fc_layers.0.weight": 0.0, "conv_layers.3.weight": 1.0})
    zoocodec.compress(mnist_path, tmp_path / "m.zc", plan=plan)
    with zoocodec.Archive(tmp_path / "m.zc") as a:
        assert not np.any(a.read("fc_layers.0.weight"))
        assert np.any(a.read("conv_layers.3.weight"))


def test_row_groups_fall_back_to_a_weighted_mean_step(mnist_path):
    plan = allocate(mnist_path, base_step=0.02, sensitivities={"fc_layers.0.weight": [1.0, 100.0]})
    # the median is the tensor mean 50.5; groups of 128 rows each: steps 0.02*sqrt(50.5/1), 0.02*sqrt(50.5/100)
    expected = 0.02 * (math.sqrt(50.5) + math.sqrt(0.505)) / 2
    assert plan["fc_layers.0.weight"].step == pytest.approx(expected, rel=1e-6)


def test_a_grouped_method_for_one_tensor_takes_its_row_groups(mnist_path):
    """`methods` gives one tensor a method with a step per row group; the others keep `method`'s one step."""
    from zoocodec.methods import parse_spec

    rows = parse_spec("rdoq:lam=0,iters=0,coder=ctx")
    sens = {"fc_layers.0.weight": [1.0, 100.0], "conv_layers.3.weight": 50.5}
    plan = allocate(mnist_path, base_step=0.02, sensitivities=sens, methods={"fc_layers.0.weight": rows})
    fc = plan["fc_layers.0.weight"]
    assert fc.name == "rdoq" and fc.group_steps == pytest.approx((0.02 * math.sqrt(50.5), 0.02 * math.sqrt(0.505)))
    assert fc.step == min(fc.group_steps) and plan["conv_layers.3.weight"].name == "uniform"
    assert plan["conv_layers.3.weight"].step == pytest.approx(0.02, rel=1e-6)  # the median (50.5) keeps the base


@pytest.mark.parametrize("kwargs, message", [
    ({"base_step": 0.01, "target_bpw": 3.0}, "not both"),
    ({"base_step": -1.0}, "positive"),
    ({"target_bpw": 0.001}, "below what the lossless tensors"),
    ({"sensitivities": {"nope": 1.0}}, "not a quantized tensor"),
    ({"sensitivities": {"fc_layers.0.weight": -1.0}}, "non-negative"),
    ({"sensitivities": {"fc_layers.0.weight": float("nan")}}, "non-negative"),
    ({"method": "lossless"}, "no step parameter"),
])
def test_bad_input(mnist_path, kwargs, message):
    with pytest.raises(SpecError, match=message):
        allocate(mnist_path, **kwargs)


@pytest.mark.parametrize("method", ["rdoq:lam=0.3,coder=ans", "dq:coder=ans"])
def test_target_bpw_holds_for_methods_that_do_not_round(mnist_path, tmp_path, method):
    plan = allocate(mnist_path, target_bpw=2.5, method=method)
    assert all(s.name == method.split(":")[0] for s in plan.values())
    report = zoocodec.compress(mnist_path, tmp_path / "m.zc", plan=plan)
    assert 2.4 < report.bits_per_weight < 2.65  # rounding's estimate alone would miss dq by 30%


def test_a_positive_1d_tensor_stays_positive():
    """BatchNorm variances: however coarse the base step, no value rounds to 0 or below."""
    import torch

    from zoocodec.tuning.auto import reconstruct

    g = np.random.default_rng(0)
    weights = {"bn.running_var": torch.from_numpy(g.uniform(0.01, 3.0, 256).astype(np.float32)),
               "bn.bias": torch.from_numpy(g.normal(0, 0.5, 256).astype(np.float32))}
    plan = allocate(weights, base_step=10.0, min_size=64)
    var = reconstruct(weights, plan)["bn.running_var"]
    assert plan["bn.running_var"].step <= float(weights["bn.running_var"].min()) and bool((var > 0).all())
    assert plan["bn.bias"].step > 1.0  # a tensor with negative values is not capped that way


def test_plan_bits_price_the_methods_own_symbols(mnist_path):
    """plan_bits prices the plan: a finer step costs more bits."""
    from zoocodec.eval.evaluate import load_weights
    from zoocodec.tuning.allocate import plan_bits

    weights = load_weights("mnist-cnn")
    coarse, fine = (allocate(weights, base_step=b, method="dq:coder=ctx") for b in (0.02, 0.005))
    assert plan_bits(weights, fine) > plan_bits(weights, coarse) > 0
