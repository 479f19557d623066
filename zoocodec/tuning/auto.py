"""Automatic mode: the smallest file whose task metric stays within a loss budget.

1. Measure each tensor's sensitivity (zoocodec.tuning.sensitivity) on the model's task
   (per row group for embedding tables; 1-D tensors with noise that keeps positive
   values positive).
2. For a base step, zoocodec.tuning.allocate gives every tensor its step at one
   Lagrangian slope (step_t = base * sqrt(median_s / s_t)): the smallest size for the
   distortion it predicts. A 1-D tensor (bias, norm scale) is coded lossily only where
   that takes fewer bytes than its lossless coding.
3. Search that base step (doubling to bracket, then bisection on its logarithm) for the
   largest one whose metric loss, measured on the task's search inputs, is within budget;
   once per allocation strength: the measured sensitivities, their square root and none
   (one step for all: measured sensitivities are noisy, and a flatter allocation sometimes
   wins). The smallest result, priced by the coder's entropy model, is kept.
   Where calibration inputs exist (zoocodec.eval.calibration) and the method is uniform,
   every search step is judged on data-aware rounding (zoocodec.tuning.calibrate: error
   feedback through each layer's measured inputs, then bias correction) instead of
   nearest rounding: the same grid and decoder, other indices; the file holds exactly them.
4. Where the method takes a coder, price the chosen steps under each context coder
   (`ctx`, `cabac`; and `ans`, the default, when the user named none) and keep the cheapest.
5. Check the result on the whole task; while it misses the budget, shrink the step.
6. Write the container with the decisions (sensitivities, strength, coder, base step,
   rounding and its calibration inputs, search trace) and the verified metric with its 95%
   interval in its header (`meta["auto"]`).

Every "within budget" is judged by the pessimistic end of the loss's 95% interval from
the paired inputs (zoocodec.eval.stats). A budget the search subset cannot resolve is
searched on all of the task's inputs; one that those cannot resolve either ends in an
error that says so. A model outside the zoo is judged by output
fidelity on the user's inputs (`inputs=`, zoocodec.eval.anymodel): the budget is then on
KL (absolute, nats), 1 - cosine or relative L2 against the original.

The loss is relative to the uncompressed model's value of the task's primary metric:
1% on minilm's `lee` task means a mean embedding cosine of at least 0.99 against the
original; on mnist-cnn's `digits` a top-1 of at least 0.99 x 0.970.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from zoocodec.errors import ZoocodecError
from zoocodec.methods import MethodSpec, parse_spec
from zoocodec.methods.lossless import Lossless
from zoocodec.pipeline.core import DEFAULT_MIN_SIZE, Report, compress
from zoocodec.pipeline.modelio import to_tensordata, to_torch
from zoocodec.tuning.allocate import DEFAULT_BASE_STEP, allocate, plan_bits
from zoocodec.tuning.calibrate import RATE_LAM, DataAware, collect, eligible

BISECTIONS = 5  # the base step ends within a factor 2**(1/32) of the largest that passes
FINAL_ROUNDS = 3  # the search again on all inputs: brackets by 2**(1/4), ends within 2**(1/32)
FINAL_DOWN = 8  # ... and gives up (unresolvable) 4x below the step the search inputs passed
STRENGTHS = (1.0, 0.5, 0.0)  # allocation by sensitivity**strength: measured, square root, one step for all
CONTEXT_CODERS = ("ctx", "cabac")  # priced against each other where the method takes a coder
ROUNDINGS = ("gptq", "nearest")  # data-aware where calibration inputs exist, or each method's own


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
    strength: float = 1.0
    method: str = ""
    rounding: str = "nearest"
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
                  module: str | None = None, output: str | None = None, choose_coder: bool = True,
                  rounding: str = "gptq", rate_lam: float = RATE_LAM) -> AutoResult:
    """Compress `model` into `out` as small as the allocation allows within `target_loss` (a fraction).

    `choose_coder=False` keeps the method's coder (one the user named); otherwise a method
    whose coder is a context coder gets the cheaper of them.
    `sensitivities` (from zoocodec.tuning.sensitivity.measure, or a file's
    `meta["auto"]["sensitivities"]`) skips their measurement, e.g. when one model is compressed
    at several budgets; a tensor they leave out or give a non-finite value stays lossless.
    `inputs` (with `module`, `output` as for zoocodec.eval.anymodel) judges a model outside the
    zoo by its outputs on them.
    `rounding="gptq"` chooses the indices of a uniform method's grid with calibration inputs
    (`rate_lam` > 0: rate-aware, zoocodec.tuning.calibrate); "nearest" keeps the method's own.
    """
    from zoocodec.eval.evaluate import evaluator, identify, load_weights, metric_row, tasks_of
    from zoocodec.pipeline import zoo
    from zoocodec.tuning.sensitivity import embedding_groups, measure, quantized_names

    say = log or (lambda _msg: None)
    start = time.perf_counter()
    if not 0 < target_loss < 1:
        raise ZoocodecError(f"target loss must be a fraction in (0, 1), got {target_loss}")
    if rounding not in ROUNDINGS:
        raise ZoocodecError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    weights = load_weights(model)
    if inputs is not None:
        from zoocodec.eval.anymodel import PairEvaluator

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
    # a tensor whose noise broke the model (non-finite) is left out of the plan: it stays lossless. So does
    # one missing from given sensitivities: the header stores only the usable ones, and reusing them must
    # not quantize a tensor the first run found broken
    usable = {k: v for k, v in sens.items() if np.isfinite(np.asarray(v, dtype=np.float64)).all()}
    broken = set(quantized_names(weights, min_size)) - set(usable)
    spec = parse_spec(method or "uniform")
    exact_bytes: dict[str, int] = {}
    rounder, calibration = _rounder(rounding, rate_lam, spec, full_ev, t, weights, say)

    def decoded(plan: dict[str, MethodSpec]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(what the decoder returns under `plan`, the values handed to the quantizers in place of the originals)."""
        targets = rounder.targets(weights, plan) if rounder else {}
        return reconstruct({**weights, **targets}, plan), targets

    def plan_for(base: float, strength: float, coded: MethodSpec = spec) -> dict[str, MethodSpec]:
        plan = allocate(weights, sensitivities=_flatten(usable, strength), base_step=base, method=coded,
                        min_size=min_size)
        plan = {k: v for k, v in plan.items() if k not in broken}
        return _one_d_where_it_pays(weights, plan, exact_bytes)

    trace: list[dict[str, float]] = []

    def passes(ev, base: float, strength: float) -> bool:
        m = ev.judge(decoded(plan_for(base, strength))[0])
        trace.append({"strength": strength, "base_step": base, "loss": m.loss, "loss_high": m.loss_high})
        say(f"strength {strength:g}, base step {base:.3g}: loss {100 * m.loss:.3f}% "
            f"(95% bound {100 * m.loss_high:.3f}%)")
        return m.loss_high <= target_loss

    def unresolvable(ev) -> str:
        """Why no file can pass on `ev`'s inputs, or "": the original model itself (no changed
        output: the narrowest interval those inputs allow) must be within the budget."""
        m = ev.judge(weights)
        if m.loss_high <= target_loss:
            return ""
        return (f"the {t.primary} loss within {100 * target_loss:g}% on {reference or model} is not resolvable with "
                f"{m.n:,} inputs (with no output changed, the 95% bound is {100 * m.loss_high:.3g}%)")

    def search(ev) -> dict[float, float]:
        """strength -> the largest base step that passes on `ev`'s inputs."""
        found: dict[float, float] = {}
        start_at = DEFAULT_BASE_STEP
        for strength in STRENGTHS:
            base = _search(lambda b, s=strength: passes(ev, b, s), start_at)
            if base is None:  # even 2**-24 times the step fails: no allocation will pass
                break
            found[strength] = start_at = base
        if not found:
            raise ZoocodecError(
                f"no step keeps the {t.primary} loss within {100 * target_loss:g}% on {reference or model}"
                f"{_unresolved(ev, decoded(plan_for(DEFAULT_BASE_STEP / 2**24, 1.0))[0], target_loss)}"
            )
        return found

    why = unresolvable(search_ev)
    if why and search_ev is not full_ev:
        say(f"{why}: searching on all of the task's inputs instead")
        search_ev = full_ev  # slower, but a budget the search subset cannot resolve may be resolvable on all
        why = unresolvable(search_ev)
    if why:
        raise ZoocodecError(why)
    found = search(search_ev)

    def price(plan: dict[str, MethodSpec]) -> float:
        """Bits of the planned tensors, plus those of the 1-D tensors the plan leaves lossless."""
        targets = rounder.targets(weights, plan) if rounder else {}
        return plan_bits({**weights, **targets}, plan) + 8 * sum(b for k, b in exact_bytes.items() if k not in plan)

    priced = {st: price(plan_for(b, st)) for st, b in found.items()}
    strength = min(priced, key=priced.get)
    base = found[strength]
    say(
        "allocation strengths priced: " + ", ".join(f"{st:g}: {bits / 8 / 1024:.1f} KiB" for st, bits in priced.items())
    )
    coded = _cheapest_coder(spec, lambda c: price(plan_for(base, strength, c)), say, choose_coder)

    checked: dict[float, tuple] = {}

    def passes_all(b: float) -> bool:  # the same search again on all of the task's inputs, from there
        plan = plan_for(b, strength, coded)
        recon, targets = decoded(plan)
        paired = full_ev.compare(recon)
        m = metric_row("", t.name, t.primary, paired[t.primary], t.primary in t.lower_is_better, True)
        trace.append({"strength": strength, "base_step": b, "loss": m.loss, "loss_high": m.loss_high, "all_inputs": 1})
        say(f"check on all inputs at base step {b:.3g}: loss {100 * m.loss:.3f}% "
            f"(95% interval {100 * m.loss_low:.3f}% .. {100 * m.loss_high:.3f}%, {m.n:,} inputs)")
        checked[b] = plan, paired, m, targets
        return m.loss_high <= target_loss

    # again on all inputs, also where the search ran on them: the coder chosen since can move dq's levels
    final = _search(passes_all, base, rounds=FINAL_ROUNDS, down=FINAL_DOWN)
    if final is None:
        raise ZoocodecError(f"the {t.primary} loss stays above {100 * target_loss:g}% on all of {t.name}'s inputs"
                            f"{_unresolved(full_ev, decoded(plan_for(base / 2**24, strength, coded))[0], target_loss)}")
    base = final
    plan, paired, m, targets = checked[final]

    verified = {"value": m.value, "baseline": m.baseline, "loss": m.loss, "loss_low": m.loss_low,
                "loss_high": m.loss_high, "delta_low": m.low, "delta_high": m.high, "inputs": m.n,
                "interval": m.interval, "judged_by": "loss_high", "metrics": {k: p.value for k, p in paired.items()}}
    auto = {"task": t.name, "metric": t.primary, "target_loss": target_loss, "method": str(coded),
            "verified": verified, "base_step": base, "strength": strength,
            "search_inputs": None if search_ev is full_ev else t.search_limit,
            "search": trace, "one_d_lossy": sorted(k for k in plan if weights[k].dim() < 2),
            "rounding": rounder.describe(sorted(targets)) | calibration if rounder else calibration,
            "sensitivities": {k: np.atleast_1d(v).tolist() for k, v in usable.items()}}
    # a model outside the zoo: its original and inputs stand where a zoo name would
    meta = {"zoo": reference, "auto": auto} if reference else \
        {"auto": auto | {"original": str(model), "inputs": str(inputs), "module": module, "output": output}}
    # the quantizers get the chosen grid values (their rounding returns the chosen indices); errors are
    # measured against the original weights; every tensor outside the plan stays exact, as it was when the
    # file was verified (not the model-wide default spec)
    report = compress(model, out, "lossless", plan=plan, min_size=min_size, meta=meta,
                      targets={k: to_tensordata(k, v).array for k, v in targets.items()})
    return AutoResult(report, reference or str(model), t.name, t.primary, target_loss, m.value, m.baseline, m.loss,
                      m.loss_high, m.n, base, strength, str(coded), auto["rounding"]["rounding"], trace,
                      time.perf_counter() - start)


def _search(passes: Callable[[float], bool], start: float, rounds: int = BISECTIONS,
            down: int = 24) -> float | None:
    """The largest base step that passes: bracket [ok, bad] on log2(base) from `start` by
    factors of 2**(2**(rounds - BISECTIONS)) (2 for a full search), then `rounds` bisections
    (both end within 2**(1/32)); None when `down` factors below `start` still fail."""
    factor = 2.0 ** (2.0 ** (rounds - BISECTIONS))
    lo = hi = start
    if passes(lo):
        for _ in range(16):
            hi = lo * factor
            if not passes(hi):
                break
            lo = hi
    else:
        for _ in range(down):
            hi, lo = lo, lo / factor
            if passes(lo):
                break
        else:
            return None
    for _ in range(rounds):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return lo


def _flatten(sens: dict[str, float | np.ndarray], strength: float) -> dict[str, float | np.ndarray]:
    """Sensitivities raised to `strength` (0: all equal, one step for all); 0 stays 0 (a tensor that
    does not matter)."""
    out = {}
    for k, v in sens.items():
        a = np.asarray(v, dtype=np.float64)
        f = np.where(a > 0, np.power(np.maximum(a, 1e-300), strength), 0.0)
        out[k] = f if a.ndim else float(f)
    return out


def _one_d_where_it_pays(weights: dict[str, torch.Tensor], plan: dict[str, MethodSpec],
                         exact_bytes: dict[str, int]) -> dict[str, MethodSpec]:
    """The plan without the 1-D tensors whose lossy coding takes as many bytes as their lossless coding."""
    out = {}
    for name, spec in plan.items():
        if weights[name].dim() < 2:
            t = to_tensordata(name, weights[name])
            if name not in exact_bytes:
                exact_bytes[name] = sum(len(v) for v in Lossless().encode(t).segments.values())
            if sum(len(v) for v in spec.encode(t).segments.values()) >= exact_bytes[name]:
                continue
        out[name] = spec
    return out


def _rounder(rounding: str, rate_lam: float, spec: MethodSpec, ev, task, weights: dict[str, torch.Tensor],
             say) -> tuple[DataAware | None, dict]:
    """Data-aware rounding from the model's calibration inputs, or None (nearest), with what the header says of it."""
    from zoocodec.eval import calibration as C

    why = None
    if rounding == "nearest":
        why = "asked for"
    elif not eligible(spec):
        why = f"method {spec.name} chooses its own levels"
    if why is None:
        run = getattr(ev, "run", None)
        cal = C.for_runner(run, weights) if run is not None else C.for_zoo(ev.arch, ev.folder, task, weights)
        if cal is None:
            why = "no calibration inputs for this model (ONNX, or a task judged on all the data it has)"
    if why is not None:
        say(f"rounding: nearest ({why})")
        return None, {"rounding": "nearest", "why": why}
    start = time.perf_counter()
    inputs = collect(cal.net, cal.run, cal.names)
    say(f"rounding: gptq on {len(inputs)} layers, inputs measured on {cal.about} ({time.perf_counter() - start:.1f} s)")
    return DataAware(inputs, lam=rate_lam), {"calibration": cal.about, "calibration_inputs": cal.count}


def _cheapest_coder(spec: MethodSpec, price: Callable[[MethodSpec], float], say, choose: bool = True) -> MethodSpec:
    """`spec`, or the same method with another context coder where that one's entropy model
    prices the planned tensors lower; a spec with the default coder `ans` (none named) is priced too."""
    from zoocodec.codecs import CODERS, parse_coder

    if not choose or "coder" not in {f.name for f in dataclasses.fields(spec)} or \
            spec.coder.name not in CONTEXT_CODERS + ("ans",):
        return spec  # a coder the user named, or video, is kept
    options = [spec] + [dataclasses.replace(spec, coder=parse_coder(c)) for c in CONTEXT_CODERS
                        if c in CODERS and c != spec.coder.name]
    priced = {str(o): (price(o), o) for o in options}
    say("coders priced: " + ", ".join(f"{k}: {b / 8 / 1024:.1f} KiB" for k, (b, _) in priced.items()))
    return min(priced.values(), key=lambda bo: bo[0])[1]


def _unresolved(ev, recon: dict[str, torch.Tensor], target_loss: float) -> str:
    """': not resolvable with N inputs (...)' when the loss's interval at the finest step tried is wider
    than the budget."""
    m = ev.judge(recon)
    if m.loss_high is not None and m.loss_high - m.loss_low > target_loss:
        return (f": not resolvable with {m.n:,} inputs (the 95% interval of the loss is "
                f"{100 * (m.loss_high - m.loss_low):.3g}% wide)")
    return ""

