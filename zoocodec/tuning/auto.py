"""Automatic mode: the smallest file whose task metric stays within a loss budget.

0. Split the task's inputs (a model outside the zoo: the user's `--inputs`), seeded, into a
   calibration/search part and a held-back part (HELD_BACK of them; a photo's views stay on
   one side). Nothing below decides on the held-back part: it only verifies the budget.
   Calibration inputs are never judged ones: a zoo task's come from other data, a model
   outside the zoo's from `--calib` or else from the calibration/search part.
1. Measure each tensor's sensitivity (zoocodec.tuning.sensitivity) on the calibration/search
   part (per row group for embedding tables; 1-D tensors with noise that keeps positive
   values positive).
2. For a base step, zoocodec.tuning.allocate gives every tensor its step at one
   Lagrangian slope (step_t = base * sqrt(median_s / s_t)): the smallest size for the
   distortion it predicts. A 1-D tensor (bias, norm scale) is coded lossily only where
   that takes fewer bytes than its lossless coding.
3. Search that base step (doubling to bracket, then bisection on its logarithm) for the
   largest one whose metric loss, measured on the task's search inputs (a subset of the
   calibration/search part), is within budget;
   once per allocation strength: the measured sensitivities, their square root and none
   (one step for all: measured sensitivities are noisy, and a flatter allocation sometimes
   wins). The smallest result, priced by the coder's entropy model, is kept.
   Where calibration inputs exist (zoocodec.eval.calibration) and the method is uniform,
   every search step is judged on data-aware rounding (zoocodec.tuning.calibrate: error
   feedback through each layer's measured inputs, then bias correction) instead of
   nearest rounding: the same grid and decoder, other indices; the file holds exactly them.
4. Where the method takes a coder, price the chosen steps under each context coder
   (`ctx`, `cabac`; and `ans`, the default, when the user named none) and keep the cheapest.
5. Search again on the whole calibration/search part, with room for the held-back part's
   wider interval; then verify once on the held-back part. A step that fails there is
   shrunk and verified again, and the header counts how often (its interval is then no
   longer out of sample). A held-back part too small to resolve the budget is said so.
6. Write the container with the decisions (split, sensitivities, strength, coder, base step,
   rounding and its calibration inputs, search trace) and the held-back metric with its 95%
   interval in its header (`meta["auto"]`).

Progress lines carry the time spent and an estimate of the time left over every phase.
Every "within budget" is judged by the pessimistic end of the loss's 95% interval from
the paired inputs (zoocodec.eval.stats). A budget the search subset cannot resolve is
searched on the whole calibration/search part; one that this cannot resolve either ends in
an error that says so. A model outside the zoo is judged by output
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zoocodec.codecs import CODERS
from zoocodec.errors import ZoocodecError
from zoocodec.methods import MethodSpec, parse_spec
from zoocodec.methods.lossless import Lossless
from zoocodec.pipeline.core import DEFAULT_MIN_SIZE, Report, compress
from zoocodec.pipeline.modelio import to_tensordata, to_torch
from zoocodec.pipeline.policy import for_decoder
from zoocodec.tuning.allocate import DEFAULT_BASE_STEP, allocate, plan_bits
from zoocodec.tuning.calibrate import RATE_LAM, DataAware, collect, collect_on, eligible

BISECTIONS = 3  # the search on the search inputs brackets by 2, ends within 2**(1/8) of the largest step that passes
FINAL_FACTOR, FINAL_ROUNDS = 2 ** (1 / 8), 2  # the search again on the whole calibration/search part: within 2**(1/32)
FINAL_DOWN = 16  # ... and gives up (unresolvable) 4x below the step the search inputs passed
STRENGTHS = (1.0, 0.5, 0.0)  # allocation by sensitivity**strength: measured, square root, one step for all
CONTEXT_CODERS = tuple(n for n, c in CODERS.items() if c.context_model)  # priced against each other (codecs/base.py)
ROUNDINGS = ("gptq", "nearest")  # data-aware where calibration inputs exist, or each method's own
HELD_BACK = 0.5  # of the inputs, never seen by calibration or search: the budget is verified on them alone
SPLIT_SEED = 0
# final rounding against the quantized model's layer inputs: no win measured (fmnist-cnn at 1%, one run each:
# 1.756 bits/weight with it, 1.734 without; bench/results/auto-rounding-sequential-2026-12-04.json)
SEQUENTIAL = False
PROGRESS_SECONDS = 10.0  # at most one progress line this often while sensitivities are measured
RUNS_PER_SEARCH = 6  # runs one allocation strength's search takes, about (for the time-left estimate)
RUNS_PER_FINAL = 4


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
    split: dict = field(default_factory=dict)  # how the inputs were split (inputs: the held-back part's size)
    within: bool = True  # the held-back part's 95% bound is within the budget


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


def split(n: int, groups: np.ndarray | None = None, seed: int = SPLIT_SEED,
          held_back: float = HELD_BACK) -> tuple[np.ndarray, np.ndarray]:
    """(calibration/search indices, held-back indices) of n inputs: a seeded draw of `held_back` of the
    groups (a photo's views stay on one side; no groups: each input is its own)."""
    g = np.arange(n) if groups is None else np.asarray(groups)
    ids = np.unique(g)
    k = min(len(ids) - 1, max(1, round(held_back * len(ids))))
    if k < 1:
        raise ZoocodecError(f"automatic mode splits the inputs into calibration/search and held-back parts: "
                            f"give at least 2 inputs, not {n}")
    held = np.isin(g, ids[np.random.default_rng(seed).permutation(len(ids))[:k]])
    return np.flatnonzero(~held), np.flatnonzero(held)


class _Clock:
    """Time spent and an estimate of the time left, over every phase. A model run costs `per_input` x its
    inputs, plus `per_plan` where a plan is rounded and reconstructed first; both are measured as the runs
    happen. The runs still to come are counted per phase (search runs are estimated: RUNS_PER_SEARCH)."""

    def __init__(self, say: Callable[[str], None]):
        self.say, self.start = say, time.perf_counter()
        self.doing = "running the original model on the inputs"  # what the heartbeat says is running
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self.todo: dict[str, list] = {}  # phase -> [runs left, inputs per run, rounds a plan]
        self.model_s = self.inputs = 0.0
        self.plan_s, self.plans = 0.0, 0
        self.last_line = self.start

    def __enter__(self) -> _Clock:
        self._beat.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._beat.join()

    def _heartbeat(self) -> None:
        """A line every PROGRESS_SECONDS that nothing else printed one: a long step still shows it runs."""
        while not self._stop.wait(PROGRESS_SECONDS / 2):
            self.line(self.doing, every=PROGRESS_SECONDS)

    def expect(self, phase: str, runs: int, inputs: int, plan: bool = True) -> None:
        self.todo[phase] = [runs, inputs, plan]

    def ran(self, phase: str, model_s: float, inputs: int, plan_s: float | None = None) -> None:
        self.model_s, self.inputs = self.model_s + model_s, self.inputs + inputs
        if plan_s is not None:
            self.plan_s, self.plans = self.plan_s + plan_s, self.plans + 1
        if phase in self.todo:
            self.todo[phase][0] = max(self.todo[phase][0] - 1, 0)

    def done(self, phase: str) -> None:
        self.todo.pop(phase, None)

    def left(self) -> float | None:
        if not self.inputs:
            return None
        per_input, per_plan = self.model_s / self.inputs, self.plan_s / max(self.plans, 1)
        return sum(
            runs * (per_input * inputs + (per_plan if plan else 0.0)) for runs, inputs, plan in self.todo.values()
        )

    def stamp(self) -> str:
        spent, left = time.perf_counter() - self.start, self.left()
        return f"{_duration(spent)} spent" + ("" if not left else f", about {_duration(left)} left")

    def line(self, msg: str, every: float = 0.0) -> None:
        """`msg` with the times; with `every`, at most one such line per that many seconds."""
        now = time.perf_counter()
        if now - self.last_line >= every:
            self.last_line = now
            self.say(f"{msg} ({self.stamp()})")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def auto_compress(model: str | os.PathLike | dict, out: str | os.PathLike, target_loss: float,
                  task: str | None = None, reference: str | None = None, method: str | MethodSpec | None = None,
                  min_size: int = DEFAULT_MIN_SIZE, log: Callable[[str], None] | None = None,
                  sensitivities: dict[str, float | np.ndarray] | None = None, inputs: str | os.PathLike | None = None,
                  module: str | None = None, output: str | None = None, choose_coder: bool = True,
                  rounding: str = "gptq", rate_lam: float = RATE_LAM, calib: str | os.PathLike | None = None,
                  seed: int = SPLIT_SEED, sequential: bool = SEQUENTIAL, decode_on: str = "any") -> AutoResult:
    """Compress `model` into `out` as small as the allocation allows within `target_loss` (a fraction).

    The task's inputs (the user's `inputs` for a model outside the zoo) are split, seeded by `seed`,
    into a calibration/search part and a held-back part (HELD_BACK of them, whole groups): sensitivities,
    calibration (where it comes from those inputs) and the search decide on the first; the budget is
    verified, and the reported interval measured, on the second alone.
    `choose_coder=False` keeps the method's coder (one the user named); otherwise a method
    whose coder is a context coder gets the cheaper of them.
    `sensitivities` (from zoocodec.tuning.sensitivity.measure, or a file's
    `meta["auto"]["sensitivities"]`) skips their measurement, e.g. when one model is compressed
    at several budgets; a tensor they leave out or give a non-finite value stays lossless.
    `inputs` (with `module`, `output` as for zoocodec.eval.anymodel) judges a model outside the
    zoo by its outputs on them; `calib` (same format) gives its calibration inputs apart
    (default: the calibration/search part of `inputs`).
    `rounding="gptq"` chooses the indices of a uniform method's grid with calibration inputs
    (`rate_lam` > 0: rate-aware, zoocodec.tuning.calibrate); "nearest" keeps the method's own.
    `sequential`: before the final search, each layer's inputs are measured again on the model
    quantized at the step found (zoocodec.tuning.calibrate.collect_on), and the final rounding is against them.
    `decode_on="gpu"`: only methods and coders with a GPU decoder (pipeline/policy.for_decoder) are priced.
    """
    from zoocodec.eval.evaluate import evaluator, identify, load_weights, metric_row, tasks_of
    from zoocodec.eval.tasks import subset
    from zoocodec.pipeline import zoo
    from zoocodec.tuning.sensitivity import embedding_groups, measure, quantized_names

    say = log or (lambda _msg: None)
    with _Clock(say) as clock:
        if not 0 < target_loss < 1:
            raise ZoocodecError(f"target loss must be a fraction in (0, 1), got {target_loss}")
        if rounding not in ROUNDINGS:
            raise ZoocodecError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
        if calib is not None and inputs is None:
            raise ZoocodecError("--calib gives the calibration inputs of a model judged on --inputs: add --inputs")
        weights = load_weights(model)
        if inputs is not None:
            from zoocodec.eval.anymodel import PairEvaluator

            if task is not None or reference is not None:
                raise ZoocodecError("a model judged on --inputs has no zoo task or reference: drop --task/--reference")
            whole = PairEvaluator(model, inputs, module, output)
            t = whole.task
        else:
            if reference is None:
                reference = (
                    str(model) if isinstance(model, str) and model in zoo.registry() else identify(weights, model)
                )
            t = tasks_of(reference, task)[0]
            whole = evaluator(reference, t, None)
        n = len(whole.ref_out)
        own = whole.compare(None)
        if any(p.n != n for p in own.values()):
            raise ZoocodecError(f"automatic mode splits the inputs of task {t.name!r}, which is judged on pairs of "
                                f"them, not input by input: choose another --task")
        decide, held = split(n, own[t.primary].groups, seed)
        unit = "inputs" if own[t.primary].groups is None else "documents" if t.kind == "tokens" else "photos"
        decide_ev, held_ev = whole.part(decide), whole.part(held)
        search_ev = decide_ev if t.search_limit is None or t.search_limit >= len(decide) else \
            whole.part(decide[subset(len(decide), t.search_limit).numpy()])
        where = (f"seeded split (seed {seed}) of the {n:,} inputs: {len(decide):,} for calibration and search, "
                 f"{len(held):,} held back to verify the budget" + ("" if unit == "inputs" else f" (whole {unit})"))
        say(where)
        spec = for_decoder(parse_spec(method or "uniform"), decode_on, choose_coder)
        calibrates = rounding == "gptq" and eligible(spec)

        sens = sensitivities
        if sens is None:
            names = quantized_names(weights, min_size)
            groups = embedding_groups(weights)
            sens_ev = decide_ev if t.sensitivity_limit is None or t.sensitivity_limit >= len(decide) else \
                whole.part(decide[subset(len(decide), t.sensitivity_limit).numpy()])
            runs = sum(groups.get(k, 1) for k in names)
            clock.expect("sensitivities", runs, len(sens_ev.ref_out), plan=False)
            _expect_search(clock, search_ev, decide_ev, held_ev, calibrates)
            clock.doing = "measuring sensitivities"
            say(f"measuring sensitivities on {reference or model}/{t.name}: {runs} runs on "
                f"{len(sens_ev.ref_out):,} inputs")
            tick = [time.perf_counter(), 0]

            def measured(name: str) -> None:
                now = time.perf_counter()
                runs_now = groups.get(name, 1)
                for _ in range(runs_now):
                    clock.ran("sensitivities", (now - tick[0]) / runs_now, len(sens_ev.ref_out))
                tick[0], tick[1] = now, tick[1] + runs_now
                clock.doing = f"measuring sensitivities: {tick[1]}/{runs} runs"  # the heartbeat prints it
            sens = measure(sens_ev, weights, names, groups=groups, progress=measured)
            clock.done("sensitivities")
        else:
            _expect_search(clock, search_ev, decide_ev, held_ev, calibrates)
        # a tensor whose noise broke the model (non-finite) is left out of the plan: it stays lossless. So does
        # one missing from given sensitivities: the header stores only the usable ones, and reusing them must
        # not quantize a tensor the first run found broken
        usable = {k: v for k, v in sens.items() if np.isfinite(np.asarray(v, dtype=np.float64)).all()}
        broken = set(quantized_names(weights, min_size)) - set(usable)
        exact_bytes: dict[str, int] = {}
        clock.doing = "measuring layer inputs for data-aware rounding"
        rounder, calibration, cal = _rounder(rounding, rate_lam, spec, whole, decide_ev, t, weights, say, calib,
                                             (model, module, output))
        clock.done("calibration")

        def decoded(plan: dict[str, MethodSpec]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
            """(what the decoder returns under `plan`, the values handed to the quantizers in place of
            the originals)."""
            targets = rounder.targets(weights, plan) if rounder else {}
            return reconstruct({**weights, **targets}, plan), targets

        def plan_for(base: float, strength: float, coded: MethodSpec = spec) -> dict[str, MethodSpec]:
            plan = allocate(weights, sensitivities=_flatten(usable, strength), base_step=base, method=coded,
                            min_size=min_size)
            plan = {k: v for k, v in plan.items() if k not in broken}
            return _one_d_where_it_pays(weights, plan, exact_bytes)

        def judged(phase: str, ev, plan: dict[str, MethodSpec]):
            """(recon, targets, paired metrics, primary Metric) of `plan` on `ev`'s inputs, timed for the clock."""
            t0 = time.perf_counter()
            recon, targets = decoded(plan)
            t1 = time.perf_counter()
            paired = ev.compare(recon)
            m = metric_row("", t.name, t.primary, paired[t.primary], t.primary in t.lower_is_better, True)
            clock.ran(phase, time.perf_counter() - t1, len(ev.ref_out), t1 - t0)
            return recon, targets, paired, m

        trace: list[dict[str, float]] = []

        def passes(ev, base: float, strength: float) -> bool:
            m = judged("search", ev, plan_for(base, strength))[3]
            trace.append({"strength": strength, "base_step": base, "loss": m.loss, "loss_high": m.loss_high})
            clock.line(f"strength {strength:g}, base step {base:.3g}: loss {100 * m.loss:.3f}% "
                       f"(95% bound {100 * m.loss_high:.3f}%)")
            return m.loss_high <= target_loss

        def unresolvable(ev) -> str:
            """Why no file can pass on `ev`'s inputs, or "": the original model itself (no changed
            output: the narrowest interval those inputs allow) must be within the budget."""
            m = ev.judge(weights)
            if m.loss_high <= target_loss:
                return ""
            return (
                f"the {t.primary} loss within {100 * target_loss:g}% on {reference or model} is not resolvable with "
                f"{m.n:,} inputs (with no output changed, the 95% bound is {100 * m.loss_high:.3g}%)"
            )

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

        held_why = unresolvable(held_ev)
        if held_why:
            say(f"the held-back part cannot verify this budget: {held_why}; the file is searched on the "
                f"calibration/search part and the held-back result reported as it is")
        why = unresolvable(search_ev)
        if why and search_ev is not decide_ev:
            say(f"{why}: searching on all of the calibration/search part instead")
            search_ev = decide_ev  # slower, but a budget the search subset cannot resolve may be resolvable on all
            _expect_search(clock, search_ev, decide_ev, held_ev, calibrates)
            why = unresolvable(search_ev)
        if why:
            raise ZoocodecError(why)
        clock.doing = "searching the base step"
        found = search(search_ev)
        clock.done("search")

        def price(plan: dict[str, MethodSpec]) -> float:
            """Bits of the planned tensors, plus those of the 1-D tensors the plan leaves lossless."""
            targets = rounder.targets(weights, plan) if rounder else {}
            return plan_bits({**weights, **targets}, plan) + 8 * sum(b for k, b in exact_bytes.items() if k not in plan)

        clock.doing = "pricing allocation strengths and coders"
        priced = {st: price(plan_for(b, st)) for st, b in found.items()}
        strength = min(priced, key=priced.get)
        base = found[strength]
        say(
            "allocation strengths priced: "
            + ", ".join(f"{st:g}: {bits / 8 / 1024:.1f} KiB" for st, bits in priced.items())
        )
        coded = _cheapest_coder(spec, lambda c: price(plan_for(base, strength, c)), say, choose_coder,
                                CONTEXT_CODERS if decode_on == "any" else ())
        if rounder is not None and sequential:
            t0 = time.perf_counter()
            clock.doing = "measuring layer inputs of the quantized model"
            inputs_q = collect_on(cal.net, cal.run, cal.names, decoded(plan_for(base, strength, coded))[0])
            rounder = dataclasses.replace(rounder, inputs=inputs_q, _factors={})
            calibration["layer_inputs"] = f"of the model quantized at base step {base:.4g} (sequential, one refresh)"
            say(f"rounding: layer inputs measured again on the model quantized at base step {base:.3g} "
                f"({time.perf_counter() - t0:.1f} s)")

        # the held-back part's interval is wider than the calibration/search part's by sqrt(their sizes): a
        # step passes the final search only with room for it, so that it passes there too (about 9 times in 10)
        wider = math.sqrt(len(decide) / len(held))
        checked: dict[float, tuple] = {}

        def passes_decide(b: float) -> bool:  # the search again on all of the calibration/search part, from there
            plan = plan_for(b, strength, coded)
            recon, targets, _, m = judged("final", decide_ev, plan)
            bound = m.loss_high + wider * (m.loss_high - m.loss)
            trace.append({"strength": strength, "base_step": b, "loss": m.loss, "loss_high": m.loss_high,
                          "with_room": bound, "all_search_inputs": 1})
            clock.line(f"check on the {m.n:,} calibration/search inputs at base step {b:.3g}: loss {100 * m.loss:.3f}% "
                       f"(95% bound {100 * m.loss_high:.3f}%, {100 * bound:.3f}% with room for the held-back part)")
            checked[b] = plan, recon, targets
            return bound <= target_loss

        # again on the whole part, also where the search ran on it: the coder chosen since can move dq's levels
        m0 = decide_ev.judge(weights)  # no output changed: the narrowest bound, plus its room, must be within budget
        if m0.loss_high + wider * (m0.loss_high - m0.loss) > target_loss:
            raise ZoocodecError(
                f"the {t.primary} loss within {100 * target_loss:g}% is not resolvable with a held-back "
                f"part of {len(held):,} inputs: with no output changed, the 95% bound on the "
                f"{len(decide):,} calibration/search inputs plus room for the held-back part's interval "
                f"is {100 * (m0.loss_high + wider * (m0.loss_high - m0.loss)):.3g}%"
            )
        clock.doing = "searching again on the whole calibration/search part"
        final = _search(passes_decide, base, FINAL_FACTOR, FINAL_ROUNDS, FINAL_DOWN)
        if final is None:
            raise ZoocodecError(
                f"the {t.primary} loss stays above {100 * target_loss:g}% on the calibration/search part of "
                f"{t.name}'s inputs{_unresolved(decide_ev, weights, target_loss)}"
            )
        clock.done("final")
        base = final
        plan, recon, targets = checked[final]

        # verification on the held-back part: a step that fails there is shrunk and checked again, and the
        # header counts how often (the interval is then no longer out of sample)
        shrunk = 0
        clock.doing = "verifying on the held-back part"
        while True:
            t0 = time.perf_counter()
            paired = held_ev.compare(recon)
            m = metric_row("", t.name, t.primary, paired[t.primary], t.primary in t.lower_is_better, True)
            clock.ran("verify", time.perf_counter() - t0, len(held))
            trace.append(
                {"strength": strength, "base_step": base, "loss": m.loss, "loss_high": m.loss_high, "held_back": 1}
            )
            clock.line(f"verified on the {m.n:,} held-back inputs at base step {base:.3g}: loss {100 * m.loss:.3f}% "
                       f"(95% interval {100 * m.loss_low:.3f}% .. {100 * m.loss_high:.3f}%)")
            if m.loss_high <= target_loss or held_why or shrunk == FINAL_DOWN:
                break
            shrunk += 1
            base /= FINAL_FACTOR
            plan = plan_for(base, strength, coded)
            recon, targets = decoded(plan)
        if m.loss_high > target_loss:
            say(f"the budget is not verified: the held-back part's 95% bound is {100 * m.loss_high:.3g}% > "
                f"{100 * target_loss:g}%" + ("" if held_why else f" after shrinking the step {shrunk} times"))
        elif shrunk:
            say(f"the held-back part failed the first step: the step was shrunk {shrunk} times on it, so its interval "
                f"is not out of sample")

        verified = {"value": m.value, "baseline": m.baseline, "loss": m.loss, "loss_low": m.loss_low,
                    "loss_high": m.loss_high, "delta_low": m.low, "delta_high": m.high, "inputs": m.n,
                    "interval": m.interval, "judged_by": "loss_high", "on": "held_back",
                    "within": m.loss_high <= target_loss,
                    "resolvable": not held_why, "shrunk_on_held_back": shrunk,
                    "metrics": {k: p.value for k, p in paired.items()}}
        split_info = {"seed": seed, "held_back": HELD_BACK, "unit": unit, "inputs": n,
                      "calibration_search": len(decide), "held_back_inputs": len(held), "about": where}
        auto = {"task": t.name, "metric": t.primary, "target_loss": target_loss, "method": str(coded),
                "verified": verified, "split": split_info, "base_step": base, "strength": strength,
                "search_inputs": len(search_ev.ref_out), "search": trace,
                "one_d_lossy": sorted(k for k in plan if weights[k].dim() < 2),
                "rounding": rounder.describe(sorted(targets)) | calibration if rounder else calibration,
                "sensitivities": {k: np.atleast_1d(v).tolist() for k, v in usable.items()}}
        # a model outside the zoo: its original and inputs stand where a zoo name would
        meta = {"zoo": reference, "auto": auto} if reference else \
            {"auto": auto | {"original": str(model), "inputs": str(inputs), "module": module, "output": output,
                             "calib": None if calib is None else str(calib)}}
        # the quantizers get the chosen grid values (their rounding returns the chosen indices); errors are
        # measured against the original weights; every tensor outside the plan stays exact, as it was when the
        # file was verified (not the model-wide default spec)
        clock.doing = "writing"
        report = compress(model, out, "lossless", plan=plan, min_size=min_size, meta=meta,
                          targets={k: to_tensordata(k, v).array for k, v in targets.items()})
        clock.line("written")
        return AutoResult(report, reference or str(model), t.name, t.primary, target_loss, m.value, m.baseline, m.loss,
                          m.loss_high, m.n, base, strength, str(coded), auto["rounding"]["rounding"], trace,
                          time.perf_counter() - clock.start, split_info, m.loss_high <= target_loss)


def _expect_search(clock: _Clock, search_ev, decide_ev, held_ev, calibrates: bool) -> None:
    """The runs still to come after the sensitivities, for the time-left estimate (calibration: one run of
    about as many inputs as the calibration/search part, until it is measured)."""
    if calibrates:
        clock.expect("calibration", 1, len(decide_ev.ref_out), plan=False)
    clock.expect("search", RUNS_PER_SEARCH * len(STRENGTHS), len(search_ev.ref_out))
    clock.expect("final", RUNS_PER_FINAL, len(decide_ev.ref_out))
    clock.expect("verify", 1, len(held_ev.ref_out), plan=False)


def _search(passes: Callable[[float], bool], start: float, factor: float = 2.0, rounds: int = BISECTIONS,
            down: int = 24) -> float | None:
    """The largest base step that passes: bracket [ok, bad] from `start` by `factor`, then `rounds`
    bisections on log2(base) (it ends within factor**(2**-rounds)); None when `down` factors below
    `start` still fail."""
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


def _rounder(rounding: str, rate_lam: float, spec: MethodSpec, whole, decide_ev, task,
             weights: dict[str, torch.Tensor], say, calib, source: tuple) -> tuple[DataAware | None, dict, object]:
    """Data-aware rounding from calibration inputs, or None (nearest), with what the header says of it
    and the calibration it measured (zoocodec.eval.calibration.Calibration, for measuring again).
    A zoo model's come from its task (never judged); a model outside the zoo's from `calib`, else from
    the calibration/search part of its inputs (`decide_ev`)."""
    from zoocodec.eval import calibration as C

    why = None
    if rounding == "nearest":
        why = "asked for"
    elif not eligible(spec):
        why = f"method {spec.name} chooses its own levels"
    if why is None:
        if getattr(whole, "run", None) is None:
            cal = C.for_zoo(whole.arch, whole.folder, task, weights)
        elif calib is not None:
            from zoocodec.eval.anymodel import runner

            model, module, output = source
            run = runner(Path(model), Path(calib), module, output)
            cal = C.for_runner(run, weights, f"the {run.n:,} inputs of --calib {Path(calib).name}")
        else:
            cal = C.for_runner(decide_ev.run, weights, f"the {decide_ev.run.n:,} --inputs of the calibration/search "
                                                       "part (never the held-back ones)")
        if cal is None:
            why = "no calibration inputs for this model (ONNX, or a task judged on all the data it has)"
    if why is not None:
        say(f"rounding: nearest ({why})")
        return None, {"rounding": "nearest", "why": why}, None
    start = time.perf_counter()
    inputs = collect(cal.net, cal.run, cal.names)
    say(f"rounding: gptq on {len(inputs)} layers, inputs measured on {cal.about} ({time.perf_counter() - start:.1f} s)")
    return DataAware(inputs, lam=rate_lam), {"calibration": cal.about, "calibration_inputs": cal.count}, cal


def _cheapest_coder(spec: MethodSpec, price: Callable[[MethodSpec], float], say, choose: bool = True,
                    coders: tuple[str, ...] = CONTEXT_CODERS) -> MethodSpec:
    """`spec`, or the same method with another of `coders` where that one's entropy model
    prices the planned tensors lower; a spec with the default coder `ans` (none named) is priced too."""
    from zoocodec.codecs import CODERS, parse_coder

    if not choose or "coder" not in {f.name for f in dataclasses.fields(spec)} or \
            spec.coder.name not in CONTEXT_CODERS + ("ans",):
        return spec  # a coder the user named, or video, is kept
    options = [spec] + [dataclasses.replace(spec, coder=parse_coder(c)) for c in coders
                        if c in CODERS and c != spec.coder.name]
    priced = {str(o): (price(o), o) for o in options}
    say("coders priced: " + ", ".join(f"{k}: {b / 8 / 1024:.1f} KiB" for k, (b, _) in priced.items()))
    return min(priced.values(), key=lambda bo: bo[0])[1]


def _unresolved(ev, recon: dict[str, torch.Tensor], target_loss: float) -> str:
    """': not resolvable with N inputs (...)' when the loss's interval at `recon` (the finest step tried, or
    the original) is wider than the budget."""
    m = ev.judge(recon)
    if m.loss_high is not None and m.loss_high - m.loss_low > target_loss:
        return (f": not resolvable with {m.n:,} inputs (the 95% interval of the loss is "
                f"{100 * (m.loss_high - m.loss_low):.3g}% wide)")
    return ""

