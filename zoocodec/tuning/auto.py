"""Automatic mode: the smallest file whose task metric stays within a loss budget.

1. Measure each tensor's sensitivity (zoocodec.tuning.sensitivity) on the model's task.
2. For a base step, zoocodec.tuning.allocate gives every tensor its step at one
   Lagrangian slope (step_t = base * sqrt(median_s / s_t)): the smallest size for the
   distortion it predicts. One number is left to choose.
3. Search that base step (doubling to bracket, then bisection on its logarithm) for the
   largest one whose metric loss, measured on the task's search inputs, is within budget.
4. Check the result on the whole task; while it misses the budget, shrink the step.
5. Write the container with the decisions (sensitivities, base step, search trace) and the
   verified metric with its 95% interval in its header (`meta["auto"]`).

Every "within budget" is judged by the pessimistic end of the loss's 95% interval from
the paired inputs (zoocodec.eval.stats), so a budget narrower than what the inputs can
resolve ends in an error that says so. A model outside the zoo is judged by output
fidelity on the user's inputs (`inputs=`, zoocodec.eval.anymodel): the budget is then on
KL (absolute, nats), 1 - cosine or relative L2 against the original.

The loss is relative to the uncompressed model's value of the task's primary metric:
1% on minilm's `lee` task means a mean embedding cosine of at least 0.99 against the
original; on mnist-cnn's `digits` a top-1 of at least 0.99 x 0.970.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from zoocodec.errors import ZoocodecError
from zoocodec.methods import MethodSpec
from zoocodec.pipeline.core import DEFAULT_MIN_SIZE, Report, compress
from zoocodec.pipeline.modelio import to_tensordata, to_torch
from zoocodec.tuning.allocate import DEFAULT_BASE_STEP, allocate

BISECTIONS = 5  # the base step ends within a factor 2**(1/32) of the largest that passes
MAX_SHRINK = 8  # final-check retries, each shrinking the step by 2**(-1/8)


@dataclass
class AutoResult:
    report: Report
    reference: str
    task: str
    metric: str
    target_loss: float
    value: float  # verified on the whole task, from the written file's tensors
    baseline: float
    loss: float
    loss_high: float  # the pessimistic end of the loss's 95% interval: <= target_loss
    inputs: int
    base_step: float
    search: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def parse_loss(text: str | float) -> float:
    """'1%', '1' or 1.0 (percent) -> 0.01."""
    raw = str(text).strip().removesuffix("%")
    try:
        value = float(raw) / 100
    except ValueError:
        raise ZoocodecError(f"--target-loss must be a percentage like 1% or 0.5, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value < 1):
        raise ZoocodecError(f"--target-loss must be between 0% and 100%, got {text!r}")
    return value


def reconstruct(weights: dict[str, torch.Tensor], plan: dict[str, MethodSpec]) -> dict[str, torch.Tensor]:
    """The weights as the decoder will return them under `plan` (other tensors stay exact),
    from quantizing alone: nothing is entropy-coded during the search."""
    out = dict(weights)
    for name, spec in plan.items():
        t = to_tensordata(name, weights[name])
        out[name] = to_torch(spec.reconstruct(t), t.dtype)
    return out


def auto_compress(model: str | os.PathLike | dict, out: str | os.PathLike, target_loss: float,
                  task: str | None = None, reference: str | None = None, method: str | MethodSpec | None = None,
                  min_size: int = DEFAULT_MIN_SIZE, log: Callable[[str], None] | None = None,
                  sensitivities: dict[str, float | np.ndarray] | None = None, inputs: str | os.PathLike | None = None,
                  module: str | None = None, output: str | None = None) -> AutoResult:
    """Compress `model` into `out` as small as the allocation allows within `target_loss` (a fraction).

    `sensitivities` (from zoocodec.tuning.sensitivity.measure) skips their measurement, e.g.
    when one model is compressed at several budgets. `inputs` (with `module`, `output` as
    for zoocodec.eval.anymodel) judges a model outside the zoo by its outputs on them.
    """
    from zoocodec.eval.evaluate import evaluator, identify, load_weights, metric_row, tasks_of  # noqa: PLC0415
    from zoocodec.tuning.sensitivity import embedding_groups, measure, quantized_names  # noqa: PLC0415
    from zoocodec.pipeline import zoo  # noqa: PLC0415

    say = log or (lambda _msg: None)
    start = time.perf_counter()
    if not 0 < target_loss < 1:
        raise ZoocodecError(f"target loss must be a fraction in (0, 1), got {target_loss}")
    weights = load_weights(model)
    if inputs is not None:
        from zoocodec.eval.anymodel import PairEvaluator  # noqa: PLC0415

        if task is not None or reference is not None:
            raise ZoocodecError("a model judged on --inputs has no zoo task or reference: drop --task/--reference")
        search_ev = full_ev = sens_ev = PairEvaluator(model, inputs, module, output)
        t = full_ev.task
    else:
        if reference is None:
            reference = str(model) if isinstance(model, str) and model in zoo.registry() else identify(weights, model)
        t = tasks_of(reference, task)[0]
        search_ev = evaluator(reference, t, t.search_limit)
        full_ev = evaluator(reference, t, None)
        sens_ev = None

    sens = sensitivities
    if sens is None:
        say(f"measuring sensitivities on {reference or model}/{t.name}")
        sens_ev = sens_ev or evaluator(reference, t, t.sensitivity_limit)
        sens = measure(sens_ev, weights, quantized_names(weights, min_size), groups=embedding_groups(weights))

    def plan_for(base: float) -> dict[str, MethodSpec]:
        return allocate(weights, sensitivities=sens, base_step=base, method=method, min_size=min_size)

    trace: list[dict[str, float]] = []

    def loss_at(base: float) -> float:
        m = search_ev.judge(reconstruct(weights, plan_for(base)))
        trace.append({"base_step": base, "loss": m.loss, "loss_high": m.loss_high})
        say(f"base step {base:.3g}: loss {100 * m.loss:.3f}% (95% bound {100 * m.loss_high:.3f}%)")
        return m.loss_high

    # bracket [ok, bad] on log2(base), then bisect
    lo = hi = DEFAULT_BASE_STEP
    if loss_at(lo) <= target_loss:
        for _ in range(16):
            hi = lo * 2
            if loss_at(hi) > target_loss:
                break
            lo = hi
    else:
        for _ in range(24):
            hi, lo = lo, lo / 2
            if loss_at(lo) <= target_loss:
                break
        else:
            raise ZoocodecError(f"no step keeps the {t.primary} loss within {100 * target_loss:g}% on "
                                f"{reference or model}{_unresolved(search_ev, weights, plan_for(lo), target_loss)}")
    for _ in range(BISECTIONS):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if loss_at(mid) <= target_loss else (lo, mid)

    base = lo
    for _ in range(MAX_SHRINK + 1):  # the final check on all of the task's inputs
        plan = plan_for(base)
        recon = reconstruct(weights, plan)
        paired = full_ev.compare(recon)
        m = metric_row("", t.name, t.primary, paired[t.primary], t.primary in t.lower_is_better, True)
        say(f"check on all inputs at base step {base:.3g}: loss {100 * m.loss:.3f}% "
            f"(95% interval {100 * m.loss_low:.3f}% .. {100 * m.loss_high:.3f}%, {m.n:,} inputs)")
        if m.loss_high <= target_loss:
            break
        base *= 2 ** (-1 / 8)
    else:
        raise ZoocodecError(f"the {t.primary} loss stays above {100 * target_loss:g}% on all of {t.name}'s inputs"
                            f"{_unresolved(full_ev, weights, plan, target_loss)}")

    verified = {"value": m.value, "baseline": m.baseline, "loss": m.loss, "loss_low": m.loss_low,
                "loss_high": m.loss_high, "delta_low": m.low, "delta_high": m.high, "inputs": m.n,
                "interval": m.interval, "judged_by": "loss_high", "metrics": {k: p.value for k, p in paired.items()}}
    auto = {"task": t.name, "metric": t.primary, "target_loss": target_loss, "method": str(method or "uniform"),
            "verified": verified, "base_step": base, "search_inputs": t.search_limit, "search": trace,
            "sensitivities": {k: np.atleast_1d(v).tolist() for k, v in sens.items()}}
    # a model outside the zoo: its original and inputs stand where a zoo name would
    meta = {"zoo": reference, "auto": auto} if reference else \
        {"auto": auto | {"original": str(model), "inputs": str(inputs), "module": module, "output": output}}
    report = compress(model, out, plan=plan, min_size=min_size, meta=meta)
    return AutoResult(report, reference or str(model), t.name, t.primary, target_loss, m.value, m.baseline, m.loss,
                      m.loss_high, m.n, base, trace, time.perf_counter() - start)


def _unresolved(ev, weights: dict[str, torch.Tensor], plan: dict[str, MethodSpec], target_loss: float) -> str:
    """': not resolvable with N inputs (...)' when the loss's interval at the finest step tried is wider than the budget."""
    m = ev.judge(reconstruct(weights, plan))
    if m.loss_high is not None and m.loss_high - m.loss_low > target_loss:
        return (f": not resolvable with {m.n:,} inputs (the 95% interval of the loss is "
                f"{100 * (m.loss_high - m.loss_low):.3g}% wide)")
    return ""

