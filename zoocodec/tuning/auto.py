"""Automatic mode: the smallest file whose task metric stays within a loss budget.

0. Split the task's inputs (a model outside the zoo: the user's `--inputs`), seeded, into a
   calibration/search part and a held-back part (HELD_BACK of them; a photo's views stay on
   one side). Nothing below decides on the held-back part: it only verifies the budget.
   Calibration inputs are never judged ones: a zoo task's come from other data, a model
   outside the zoo's from `--calib` or else from the calibration/search part.
1. Measure each tensor's sensitivity (zoocodec.tuning.sensitivity) on the calibration/search
   part (per row group for embedding tables; 1-D tensors with noise that keeps positive
   values positive). A text model's word-embedding table gets one step per row: a row moves
   the outputs only where its token occurs, so its sensitivity is the table's measured one
   times its token's add-one count over calibration texts the search never judges (a zoo
   task's, or `--calib`), relative to the mean (`token_rows`; written with `rdoq:lam=0`,
   which is uniform rounding with a step per row).
2. For a base step, zoocodec.tuning.allocate gives every tensor its step at one
   Lagrangian slope (step_t = base * sqrt(median_s / s_t)): the smallest size for the
   distortion it predicts. A 1-D tensor (bias, norm scale) is coded lossily only where
   that takes fewer bytes than its lossless coding.
3. Search that base step (doubling to bracket, then bisection on its logarithm) for the
   largest one whose metric loss, measured on the task's search inputs (a subset of the
   calibration/search part), is within budget;
   once per allocation strength: the measured sensitivities to the power 1, 3/4 and 1/2, and none
   (one step for all: measured sensitivities are noisy, and a flatter allocation sometimes
   wins). The smallest result, priced by the coder's entropy model, is kept.
   Where calibration inputs exist (zoocodec.eval.calibration) and the method is uniform or dq,
   every search step is judged on data-aware rounding (zoocodec.tuning.calibrate: error
   feedback through each layer's measured inputs, then bias correction) instead of
   nearest rounding: the same grid and decoder, other indices; the file holds exactly them.
   dq is then written with each column a walk of its state machine at lam 0 (`axis=0,lam=0`),
   the one form whose own trellis returns the levels the rounding chose (calibrate.gptq_walks).
4. Where the method takes a coder, price the chosen steps under each context coder
   (`ctx`, `cabac`; and `ans`, the default, when the user named none) and keep the cheapest.
5. Search again on the whole calibration/search part, with room for the held-back part's
   wider interval; then verify once on the held-back part. A step that fails there is
   shrunk and verified again, and the header counts how often (its interval is then no
   longer out of sample). A held-back part too small to resolve the budget is said so.
6. Give each planned tensor the coder (`ans`, `ctx`, `cabac`) that writes it in the fewest bytes,
   encoded (the entropy model of step 4 leaves out a small tensor's table), where the user named
   no coder; the values, hence the verified metric, do not change.
7. Write the container with the decisions (split, sensitivities, strength, coder, base step,
   rounding and its calibration inputs, search trace) and the held-back metric with its 95%
   interval in its header (`meta["auto"]`).

Progress lines carry the time spent and an estimate of the time left over every phase, the
making of a zoo task's calibration images on a first run (effnet-lite0's distilled ones)
included, as a phase of its own whose steps are counted; so are the calibration inputs while
data-aware rounding's layer inputs are measured (calibrate.collect's progress).
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

from zoocodec.codecs import CODERS, parse_coder
from zoocodec.errors import SpecError, ZoocodecError
from zoocodec.kernels.backend import to_numpy
from zoocodec.methods import MethodSpec, parse_spec
from zoocodec.methods.base import Coded, digest
from zoocodec.methods.lossless import Lossless
from zoocodec.pipeline.core import DEFAULT_MIN_SIZE, Report, compress
from zoocodec.pipeline.modelio import to_tensordata, to_torch
from zoocodec.pipeline.policy import auto_min_size, for_decoder, small_share
from zoocodec.tuning.allocate import DEFAULT_BASE_STEP, allocate, plan_bits
from zoocodec.tuning.calibrate import RATE_LAM, DataAware, collect, collect_on, eligible, for_rounding
from zoocodec.tuning.gptq import collect_sequential, layers_of
from zoocodec.tuning.sequential import collect_in_order

BISECTIONS = 3  # the search on the search inputs brackets by 2, ends within 2**(1/8) of the largest step that passes
FINAL_FACTOR, FINAL_ROUNDS = 2 ** (1 / 8), 2  # the search again on the whole calibration/search part: within 2**(1/32)
FINAL_DOWN = 16  # ... and gives up (unresolvable) 4x below the step the search inputs passed
STRENGTHS = (1.0, 0.75, 0.5, 0.0)  # allocation by sensitivity**strength (0: one step for all; minilm: 3/4 wins)
CONTEXT_CODERS = tuple(n for n, c in CODERS.items() if c.context_model)  # priced against each other (codecs/base.py)


def context_coders(decode_on: str) -> tuple[str, ...]:
    """The context coders automatic mode prices: all of them, or those the GPU decodes (`--decode-on gpu`)."""
    return tuple(c for c in CONTEXT_CODERS if decode_on == "any" or CODERS[c].gpu_decode)
ROUNDINGS = ("gptq", "nearest")  # data-aware where calibration inputs exist, or each method's own
HELD_BACK = 0.5  # of the inputs, never seen by calibration or search: the budget is verified on them alone
SPLIT_SEED = 0
# final rounding against the quantized model's layer inputs: no win measured (fmnist-cnn at 1%, one refresh, one
# run each: 1.756 bits/weight with it, 1.734 without; bench/results/auto-rounding-sequential-2026-12-04.json;
# effnet-lite0 in the forward's order, at five fixed plans: 0.2-0.3% larger at KL 0.008, h2h-levers-2026-12-05.json)
SEQUENTIAL = False
PROGRESS_SECONDS = 10.0  # at most one progress line this often while sensitivities are measured
RUNS_PER_SEARCH = 3  # runs one allocation strength's search takes, about (time-left estimate; minilm at 1%: 2-4)
RUNS_PER_FINAL = 4  # ... and the search again (a bracket, FINAL_ROUNDS bisections; effnet-lite0 at 1%: 5)
FINETUNE_FACTOR, FINETUNE_TRIES = 2 ** (1 / 8), 4  # fine-tuning tries base steps up to sqrt(2)x the one found
AIM = 0.97  # the search aims each next step where the bound would be this share of the budget
ROUNDED_KEPT = 4  # plans whose data-aware rounding is kept (minilm: a full copy of the weights each)
FINETUNE_SECONDS = 120.0  # fine-tuning's share of automatic mode's time (2 cores: minilm's whole run <= 5 min)
# a word-embedding row's weight (its token's count + TOKEN_PRIOR, over the mean) is rounded to a power of
# 2**(1/2), so its step lies on a 2**(1/4) grid: few distinct steps, a small header
TOKEN_PRIOR, TOKEN_GRID = 1.0, 2.0
# a causal LM's word-embedding rows (tied head) weighted by its mean predicted probabilities (_predicted_rows): off.
# smollm2-135m, 12-05d: KL 0.1 4.220 bits/weight (judged bound 0.049) against 4.119 without, KL 0.05 4.304 (0.028)
# against 4.312 (0.038): lower KL at equal size, but wider intervals per document, so no smaller file within budget
PREDICTED_ROWS = False


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
    finetune: dict = field(default_factory=dict)  # what fine-tuning tried and whether it was kept (asked for only)


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


def token_row_weights(ids: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(a weight per row of a word-embedding table, mean 1 before rounding: its token's count in `ids` +
    TOKEN_PRIOR over the mean, rounded to a power of 2**(1/TOKEN_GRID); the counts)."""
    counts = np.bincount(ids[(ids >= 0) & (ids < rows)], minlength=rows).astype(np.float64)
    r = (counts + TOKEN_PRIOR) / (counts + TOKEN_PRIOR).mean()
    return np.exp2(np.round(np.log2(r) * TOKEN_GRID) / TOKEN_GRID), counts


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
    happen. The runs still to come are counted per phase (search runs are estimated: RUNS_PER_SEARCH).
    Work that counts its own steps (a task's calibration images made on a first run) is a phase of its own,
    its steps left priced at its own steps' mean time so far."""

    def __init__(self, say: Callable[[str], None]):
        self.say, self.start = say, time.perf_counter()
        self.doing = "running the original model on the inputs"  # what the heartbeat says is running
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self.todo: dict[str, list] = {}  # phase -> [runs left, inputs per run, rounds a plan]
        self.work: dict[str, tuple[float, int, int]] = {}  # phase -> (its start, steps done, steps in all)
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

    def stepped(self, phase: str, done: int, total: int) -> None:
        """`done` of the `total` steps of work `phase` (0 when it starts): its own count replaces the runs
        expected of it."""
        start = self.work[phase][0] if phase in self.work else time.perf_counter()
        self.work[phase] = (start, done, total)
        self.todo.pop(phase, None)

    def done(self, phase: str) -> None:
        self.todo.pop(phase, None)
        self.work.pop(phase, None)

    def left(self) -> float | None:
        """Seconds left, or None while no model run or no step of the work under way is measured yet."""
        now, todo, work = time.perf_counter(), list(self.todo.values()), list(self.work.values())  # the heartbeat
        if not self.inputs or any(not done for _, done, _ in work):  # thread reads them as the run changes them
            return None
        per_input, per_plan = self.model_s / self.inputs, self.plan_s / max(self.plans, 1)
        return sum(runs * (per_input * inputs + (per_plan if plan else 0.0)) for runs, inputs, plan in todo) + \
            sum((now - start) / done * (total - done) for start, done, total in work)

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
                  min_size: int | None = None, log: Callable[[str], None] | None = None,
                  sensitivities: dict[str, float | np.ndarray] | None = None, inputs: str | os.PathLike | None = None,
                  module: str | None = None, output: str | None = None, choose_coder: bool = True,
                  rounding: str = "gptq", rate_lam: float = RATE_LAM, calib: str | os.PathLike | None = None,
                  seed: int = SPLIT_SEED, sequential: bool = SEQUENTIAL, finetune: bool = False,
                  finetune_steps: int | None = None, finetune_seconds: float = FINETUNE_SECONDS,
                  device: str = "cpu", decode_on: str = "any", token_rows: bool = True) -> AutoResult:
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
    quantized at the step found, and the final rounding is against them: layer by layer in the forward's order
    where the calibration runs in one batch (zoo image classifiers: zoocodec.tuning.sequential), decoder layer
    by decoder layer for causal LMs shaped like Llama (zoocodec.tuning.gptq), else one refresh
    (zoocodec.tuning.calibrate.collect_on).
    `device`: the model's runs (sensitivities, search, verification) and fine-tuning run there (an ONNX graph is
    refused: onnxruntime runs it on the CPU here); data-aware rounding's NumPy work stays on the CPU.
    `finetune`: after the search again, larger steps are tried with their steps, symbols and lossless 1-D
    tensors fine-tuned (zoocodec.tuning.finetune, `finetune_steps` optimiser steps each, on torch `device`,
    `finetune_seconds` in all);
    the cheapest that passes on the calibration/search part is kept, and the held-back part verifies it.
    `decode_on="gpu"`: only methods and coders with a GPU decoder (pipeline/policy.for_decoder) are priced.
    `token_rows=False` keeps one step for a text model's word-embedding table (to measure what a step per row gains).
    `min_size`: tensors with fewer weights stay lossless; None: policy.auto_min_size (64 where small tensors hold
    0.5% of the weights or more, as in a CNN with BatchNorm; else 4,096, compress's default).
    """
    say = log or (lambda _msg: None)
    with _Clock(say) as clock:
        if not 0 < target_loss < 1:
            raise ZoocodecError(f"target loss must be a fraction in (0, 1), got {target_loss}")
        if rounding not in ROUNDINGS:
            raise ZoocodecError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
        if calib is not None and inputs is None:
            raise ZoocodecError("--calib gives the calibration inputs of a model judged on --inputs: add --inputs")
        spec = for_decoder(parse_spec(method or "uniform"), decode_on, choose_coder)
        if rounding == "gptq":
            spec = for_rounding(spec)
        asked = Asked(model, target_loss, task, reference, spec, min_size, inputs, module, output, choose_coder,
                      rounding, rate_lam, calib, seed, sequential, finetune, finetune_steps, finetune_seconds, device,
                      decode_on, token_rows)
        if finetune and not asked.spec.rounds_nearest:
            raise ZoocodecError(f"fine-tuning trains the steps of a method that rounds to nearest (uniform): "
                                f"{asked.spec.name} chooses its own levels; leave out --finetune")
        run = _Search(clock, asked)
        run.phases(sensitivities)
        return run.write(out)


@dataclass(frozen=True)
class Asked:
    """What the caller of auto_compress asked for (its parameters, as it documents them)."""

    model: str | os.PathLike | dict
    target_loss: float
    task: str | None
    reference: str | None
    spec: MethodSpec
    min_size: int | None
    inputs: str | os.PathLike | None
    module: str | None
    output: str | None
    choose_coder: bool
    rounding: str
    rate_lam: float
    calib: str | os.PathLike | None
    seed: int
    sequential: bool
    finetune: bool = False
    finetune_steps: int | None = None
    finetune_seconds: float = FINETUNE_SECONDS
    device: str = "cpu"
    decode_on: str = "any"
    token_rows: bool = True


class _Search:
    """One automatic-mode run: the task split into its parts, and what each phase decided, in the order
    auto_compress runs them (sensitivities, calibration, search, strength and coder, search again on the
    whole calibration/search part, verification on the held-back part, writing)."""

    def __init__(self, clock: _Clock, asked: Asked):
        """Load the model, find its task (a zoo one, or output fidelity on the user's inputs) and split
        its inputs into the calibration/search part and the held-back part."""
        from zoocodec.eval.evaluate import evaluator, identify, load_weights, tasks_of
        from zoocodec.eval.tasks import subset
        from zoocodec.pipeline import zoo

        self.clock, self.say, self.asked = clock, clock.say, asked
        self.model, self.target_loss, self.spec = asked.model, asked.target_loss, asked.spec
        model, task, reference, seed = asked.model, asked.task, asked.reference, asked.seed
        self.weights = weights = load_weights(model)
        self.min_size = asked.min_size if asked.min_size is not None else self._min_size()
        if asked.inputs is not None:
            from zoocodec.eval.anymodel import PairEvaluator

            if task is not None or reference is not None:
                raise ZoocodecError("a model judged on --inputs has no zoo task or reference: drop --task/--reference")
            self.whole = PairEvaluator(model, asked.inputs, asked.module, asked.output, asked.device)
            t = self.whole.task
        else:
            if reference is None:
                reference = (
                    str(model) if isinstance(model, str) and model in zoo.registry() else identify(weights, model)
                )
            t = tasks_of(reference, task)[0]
            self.whole = evaluator(reference, t, None, asked.device)
        self.t, self.reference = t, reference
        self.feeds = self._token_tables()
        from zoocodec.tuning.sensitivity import EMBEDDING_GROUPS, embedding_groups

        # word-embedding tables, measured per row group: by name, and an ONNX graph's by structure
        self.tables = embedding_groups(weights) | {k: EMBEDDING_GROUPS for k in self.feeds
                                                   if weights[k].shape[0] >= EMBEDDING_GROUPS}
        n = len(self.whole.ref_out)
        own = self.whole.compare(None)
        if any(p.n != n for p in own.values()):
            raise ZoocodecError(f"automatic mode splits the inputs of task {t.name!r}, which is judged on pairs of "
                                f"them, not input by input: choose another --task")
        self.n = n
        self.decide, self.held = decide, held = split(n, own[t.primary].groups, seed)
        self.unit = "inputs" if own[t.primary].groups is None else "documents" if t.kind == "tokens" else "photos"
        self.decide_ev, self.held_ev = self.whole.part(decide), self.whole.part(held)
        self.search_ev = self.decide_ev if t.search_limit is None or t.search_limit >= len(decide) else \
            self.whole.part(decide[subset(len(decide), t.search_limit).numpy()])
        self.where = (f"seeded split (seed {seed}) of the {n:,} inputs: {len(decide):,} for calibration and search, "
                      f"{len(held):,} held back to verify the budget"
                      + ("" if self.unit == "inputs" else f" (whole {self.unit})"))
        self.say(self.where)
        if self.whole.device.is_gpu:
            self.say(f"the model runs on {self.whole.device.label} (data-aware rounding on the CPU)")
        # the held-back part's interval is wider than the calibration/search part's by sqrt(their sizes): a step
        # passes on the calibration/search part only with room for it, so that it passes there too (9 times in 10)
        self.wider = math.sqrt(len(decide) / len(held))
        self.trace: list[dict[str, float]] = []
        self.tuning: dict[str, object] = {}
        self.coders: dict[str, int] = {}  # coder -> planned tensors written with it (coder_per_tensor)
        self.streams: dict[str, tuple[MethodSpec, Coded]] = {}  # ... and its streams as coded there, for the writer
        self.untuned: tuple = ()  # (base, plan, recon, targets) before fine-tuning, where it was kept
        self.exact_bytes: dict[str, int] = {}
        self.calibrates = asked.rounding == "gptq" and eligible(self.spec)
        self.groupwise = _groupwise(t, self.spec, weights)
        self._rounded: dict[tuple, dict[str, torch.Tensor]] = {}  # plan steps -> data-aware rounding's targets
        self.prepared = False  # the task's calibration inputs are made (prepare)

    def _min_size(self) -> int:
        """policy.auto_min_size of the model's tensors, said where it takes the small ones."""
        from zoocodec.pipeline.modelio import torch_dtypes

        names = torch_dtypes()
        sizes = {k: (names.get(v.dtype, str(v.dtype)), v.numel()) for k, v in self.weights.items()}
        got = auto_min_size(sizes)
        if got < DEFAULT_MIN_SIZE:
            self.say(f"tensors of {got} weights or more are measured and quantized where they pay: those under "
                     f"{DEFAULT_MIN_SIZE:,} hold {small_share(sizes):.1%} of the weights (--min-size sets it)")
        return got

    def _token_tables(self) -> dict[str, str]:
        """An ONNX graph's word-embedding tables -> the graph input of their token ids (onnxcapture.token_tables);
        {} for any other model."""
        from zoocodec.eval.anymodel import OnnxRunner

        run = getattr(self.whole, "run", None)
        if not isinstance(run, OnnxRunner):
            return {}
        from zoocodec.eval.onnxcapture import token_tables

        return token_tables(run.graph, self.weights)

    @property
    def name(self) -> str:
        """The model as the messages name it."""
        return self.reference or self.model

    def phases(self, sensitivities: dict[str, float | np.ndarray] | None) -> None:
        """Every phase before writing, in order (auto_compress's `sensitivities`)."""
        if self.asked.finetune:
            self.trainable()  # a model fine-tuning cannot run is refused before any search
        # calibration first: the time left the sensitivities' progress states then counts what it measured
        # (a first run's distilled images, the layer inputs) instead of a guess
        self.calibrate()
        self.sensitivities(sensitivities)
        self.search()
        self.choose()
        self.search_again()
        if self.asked.finetune:
            self.fine_tune()
        self.verify()
        self.coder_per_tensor()

    # ---- phase 2: sensitivities ----------------------------------------------------------------------------
    def sensitivities(self, given: dict[str, float | np.ndarray] | None) -> None:
        """Measure each tensor's sensitivity on (a subset of) the calibration/search part, or take `given`."""
        from zoocodec.eval.tasks import subset
        from zoocodec.tuning.sensitivity import measure, quantized_names

        weights, t, clock = self.weights, self.t, self.clock
        sens = given
        if sens is None:
            names = quantized_names(weights, self.min_size)
            groups = self.tables
            sens_ev = self.decide_ev if t.sensitivity_limit is None or t.sensitivity_limit >= len(self.decide) else \
                self.whole.part(self.decide[subset(len(self.decide), t.sensitivity_limit).numpy()])
            runs = sum(groups.get(k, 1) for k in names)
            clock.expect("sensitivities", runs, len(sens_ev.ref_out), plan=False)
            self._expect_search()
            clock.doing = "measuring sensitivities"
            self.say(f"measuring sensitivities on {self.name}/{t.name}: {runs} runs on "
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
            self._expect_search()
        # a tensor whose noise broke the model (non-finite) is left out of the plan: it stays lossless. So does
        # one missing from given sensitivities: the header stores only the usable ones, and reusing them must
        # not quantize a tensor the first run found broken
        self.usable = {k: v for k, v in sens.items() if np.isfinite(np.asarray(v, dtype=np.float64)).all()}
        self.broken = set(quantized_names(weights, self.min_size)) - set(self.usable)
        self.token_rows, self.token_about = self._token_rows()

    def _token_rows(self) -> tuple[dict[str, np.ndarray], dict]:
        """name -> a weight per row (mean 1) of a text model's word-embedding table, from its tokens' counts over
        calibration texts the search never judges (a zoo task's, or `--calib`): the search then measures the loss
        on texts whose tokens were not counted, as the held-back part's are not, so it stays an honest estimate
        of the held-back loss (counting the search's own texts made it optimistic: 0.87% there, 1.33% held back,
        minilm at 1%). An ONNX graph's tables are those of self.feeds, counted on the `--calib` arrays that feed
        their Gathers. {} where the model is no text encoder, no such texts exist, or the method is not uniform."""
        t, spec, a = self.t, self.spec, self.asked
        names = [k for k in self.tables if k in self.usable and self.weights[k].dim() == 2]
        if not a.token_rows or not names or spec.name != "uniform" or not hasattr(spec, "coder"):
            return {}, {}
        if t.kind == "tokens":  # a causal LM: rows by its own predictions, where asked (PREDICTED_ROWS)
            return self._predicted_rows(names) if PREDICTED_ROWS and t.calibration is not None else ({}, {})
        got = self._calibration_ids(names)
        if got is None:
            return {}, {}
        ids_of, count, about = got
        out, described = {}, {}
        for name, ids in ids_of.items():
            rows = self.weights[name].shape[0]
            out[name], counts = token_row_weights(ids, rows)
            described[name] = {"texts": count, "about": about, "tokens": int(counts.sum()),
                               "rows_seen": int((counts > 0).sum()), "rows": rows, "prior": TOKEN_PRIOR}
        self.say("word-embedding rows weighted by their tokens' counts over "
                 + ", ".join(f"{name} ({d['tokens']:,} tokens of {d['texts']:,} texts, {about}; {d['rows_seen']:,} "
                             f"of {d['rows']:,} rows seen)" for name, d in described.items()))
        return out, described

    def _calibration_ids(self, names: list[str]) -> tuple[dict[str, np.ndarray], int, str] | None:
        """(table of `names` -> the token ids of calibration texts the search never judges, how many texts, what
        they are), or None where there are none: a zoo text task's calibration texts, a Hugging Face encoder's
        `--calib` texts, the `--calib` arrays that feed an ONNX graph's word-embedding Gathers (self.feeds)."""
        t, a = self.t, self.asked
        run = getattr(self.whole, "run", None)
        if run is None and t.kind == "text" and t.calibration is not None:  # a zoo text task: its calibration texts
            folder, texts, about = self.whole.folder, list(t.calibration()), t.calibration_about
        elif getattr(run, "texts", None) is not None and getattr(run, "scorer", None) is None and a.calib is not None:
            from zoocodec.eval.anymodel import runner

            calib = runner(Path(a.model), Path(a.calib), a.module, a.output)
            folder, about = run.folder, f"--calib {Path(a.calib).name}"
            texts = list(getattr(calib, "texts", None) or ())
        elif self.feeds and a.calib is not None and any(k in self.feeds for k in names):
            from zoocodec.eval.anymodel import runner
            from zoocodec.eval.onnxcapture import token_ids

            calib = runner(Path(a.model), Path(a.calib), a.module, a.output)
            return ({k: token_ids(calib.arrays, self.feeds[k]) for k in names if k in self.feeds}, calib.n,
                    f"--calib {Path(a.calib).name}")
        else:
            if self.feeds:
                self.say(f"word-embedding table {', '.join(self.feeds)}: one step (--calib token ids never judged "
                         f"would give it a step per row)")
            return None
        from zoocodec.eval.text import _max_len, _tokenizer

        ids = _tokenizer(folder)(texts, truncation=True, max_length=_max_len(folder))["input_ids"] if texts else []
        ids = np.concatenate([np.asarray(x, dtype=np.int64) for x in ids]) if ids else np.zeros(0, np.int64)
        return dict.fromkeys(names, ids), len(texts), about

    def _predicted_rows(self, names: list[str]) -> tuple[dict[str, np.ndarray], dict]:
        """A causal LM's word-embedding rows (its head's too, when tied) weighted by the model's mean predicted
        probability of their tokens over its calibration windows (zoocodec.eval.lm.predicted_rows)."""
        from zoocodec.eval import lm

        t = self.t
        p = lm.predicted_rows(self.whole.folder, list(t.calibration()), self.weights, lm.CALIBRATION_WINDOWS)
        out = {name: lm.row_weights(p, TOKEN_GRID) for name in names if self.weights[name].shape[0] == len(p)}
        about = {name: {"about": f"the model's mean predicted probability of each token over "
                                 f"{lm.CALIBRATION_WINDOWS} {t.calibration_about}", "floor": lm.ROW_FLOOR,
                        "rows": len(p)} for name in out}
        if out:
            self.say("word-embedding rows weighted by the model's mean predicted probability of their tokens: "
                     + ", ".join(out))
        return out, about

    def _expect_search(self) -> None:
        """The runs still to come after the sensitivities, for the time-left estimate."""
        clock = self.clock
        clock.expect("search", RUNS_PER_SEARCH * len(STRENGTHS), len(self.search_ev.ref_out))
        clock.expect("choose", len(STRENGTHS), 0)  # each strength's plan rounded again to price it
        clock.expect("final", RUNS_PER_FINAL, len(self.decide_ev.ref_out))
        clock.expect("verify", 1, len(self.held_ev.ref_out), plan=False)

    # ---- phase 1: calibration ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """What a zoo task's calibration inputs are made of, made on a first run (effnet-lite0's distilled
        images: minutes) as a phase of its own whose steps the clock counts; nothing where the zoo cache has it."""
        t, clock = self.t, self.clock
        if self.prepared or t.prepare is None:
            return
        self.prepared = True

        def progress(done: int, total: int) -> None:
            if not done:
                self.say(f"{t.prepare_about}: {total} steps, this once (then read from the zoo cache)")
            clock.stepped("making", done, total)
            clock.doing = f"{t.prepare_about}: step {done}/{total}"  # the heartbeat prints it
        t.prepare(progress)
        clock.done("making")

    def calibrate(self) -> None:
        """Data-aware rounding's layer inputs (or nearest rounding, said why)."""
        a = self.asked
        if self.calibrates:
            self.prepare()
        self.clock.doing = "measuring layer inputs for data-aware rounding"
        seen = [0]

        def progress(n: int, total: int) -> None:  # calibration inputs through the model so far
            seen[0] = min(seen[0] + n, total)
            self.clock.stepped("calibration", seen[0], total)
            self.clock.doing = f"measuring layer inputs for data-aware rounding: {seen[0]:,} of {total:,} inputs"
        self.rounder, self.calibration, self.cal = _rounder(
            a.rounding, a.rate_lam, self.spec, self.whole, self.decide_ev, self.t, self.weights, self.say, a.calib,
            (self.model, a.module, a.output), progress)
        self.clock.done("calibration")

    # ---- the plans and their judgement ---------------------------------------------------------------------
    def decoded(self, plan: dict[str, MethodSpec]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(what the decoder returns under `plan`, the values handed to the quantizers in place of
        the originals)."""
        targets = self.rounded(plan)
        return reconstruct({**self.weights, **targets}, plan), targets

    def rounded(self, plan: dict[str, MethodSpec]) -> dict[str, torch.Tensor]:
        """Data-aware rounding's targets for `plan` ({} without it), kept for the last few plans' steps: pricing
        the coders, and the first check of the search again, round a plan the search already rounded."""
        if not self.rounder:
            return {}
        key = tuple((k, v.name, getattr(v, "step", None)) for k, v in sorted(plan.items()))  # the grid, not the coder
        if key not in self._rounded:
            while len(self._rounded) >= ROUNDED_KEPT:
                self._rounded.pop(next(iter(self._rounded)))
            self._rounded[key] = self.rounder.targets(self.weights, plan)
        return self._rounded[key]

    def plan_for(self, base: float, strength: float, coded: MethodSpec | None = None) -> dict[str, MethodSpec]:
        spec = self.spec if coded is None else coded
        sens = self.usable | {k: float(np.mean(self.usable[k])) * r for k, r in self.token_rows.items()}
        rows = {k: dataclasses.replace(parse_spec("rdoq:lam=0,iters=0"), coder=spec.coder) for k in self.token_rows}
        plan = allocate(self.weights, sensitivities=_flatten(sens, strength), base_step=base,
                        method=spec, min_size=self.min_size, methods=rows)
        plan = {k: v for k, v in plan.items() if k not in self.broken}
        plan = _one_d_where_it_pays(self.weights, plan, self.exact_bytes)
        return self.groupwise.plan(plan, _flatten(self.usable, strength)) if self.groupwise else plan

    def judged(self, phase: str, ev, plan: dict[str, MethodSpec]):
        """(recon, targets, paired metrics, primary Metric) of `plan` on `ev`'s inputs, timed for the clock."""
        from zoocodec.eval.evaluate import metric_row

        t = self.t
        t0 = time.perf_counter()
        recon, targets = self.decoded(plan)
        t1 = time.perf_counter()
        paired = ev.compare(recon)
        m = metric_row("", t.name, t.primary, paired[t.primary], t.primary in t.lower_is_better, True)
        self.clock.ran(phase, time.perf_counter() - t1, len(ev.ref_out), t1 - t0)
        return recon, targets, paired, m

    def price(self, plan: dict[str, MethodSpec]) -> float:
        """Bits of the planned tensors, plus those of the 1-D tensors the plan leaves lossless."""
        targets = self.rounded(plan)
        return plan_bits({**self.weights, **targets}, plan) + 8 * sum(
            b for k, b in self.exact_bytes.items() if k not in plan)

    def unresolvable(self, ev) -> str:
        """Why no file can pass on `ev`'s inputs, or "": the original model itself (no changed
        output: the narrowest interval those inputs allow) must be within the budget."""
        m = ev.judge(self.weights)
        if m.loss_high <= self.target_loss:
            return ""
        return (
            f"the {self.t.primary} loss within {100 * self.target_loss:g}% on {self.name} is not resolvable with "
            f"{m.n:,} inputs (with no output changed, the 95% bound is {100 * m.loss_high:.3g}%)"
        )

    # ---- phase 3: the search on the search inputs ----------------------------------------------------------
    def bound(self, ev, base: float, strength: float) -> float:
        """The pessimistic end of the loss's 95% interval at `base`, `strength` on `ev`'s inputs."""
        m = self.judged("search", ev, self.plan_for(base, strength))[3]
        self.trace.append({"strength": strength, "base_step": base, "loss": m.loss, "loss_high": m.loss_high})
        self.clock.line(f"strength {strength:g}, base step {base:.3g}: loss {100 * m.loss:.3f}% "
                        f"(95% bound {100 * m.loss_high:.3f}%)")
        return m.loss_high

    def search_on(self, ev) -> dict[float, float]:
        """strength -> the largest base step that passes on `ev`'s inputs."""
        found: dict[float, float] = {}
        start_at = DEFAULT_BASE_STEP
        for strength in STRENGTHS:
            base = _search(lambda b, s=strength: self.bound(ev, b, s), start_at, self.target_loss)
            if base is None:  # even 2**-24 times the step fails: no allocation will pass
                break
            found[strength] = start_at = base
        if not found:
            raise ZoocodecError(
                f"no step keeps the {self.t.primary} loss within {100 * self.target_loss:g}% on {self.name}"
                f"{_unresolved(ev, self.decoded(self.plan_for(DEFAULT_BASE_STEP / 2**24, 1.0))[0], self.target_loss)}"
            )
        return found

    def search(self) -> None:
        """Each allocation strength's largest base step on the search inputs (all of the calibration/search
        part where the subset cannot resolve the budget)."""
        self.held_why = self.unresolvable(self.held_ev)
        if self.held_why:
            self.say(f"the held-back part cannot verify this budget: {self.held_why}; the file is searched on the "
                     f"calibration/search part and the held-back result reported as it is")
        why = self.unresolvable(self.search_ev)
        if why and self.search_ev is not self.decide_ev:
            self.say(f"{why}: searching on all of the calibration/search part instead")
            # slower, but a budget the search subset cannot resolve may be resolvable on all
            self.search_ev = self.decide_ev
            self._expect_search()
            why = self.unresolvable(self.search_ev)
        if why:
            raise ZoocodecError(why)
        self.clock.doing = "searching the base step"
        self.found = self.search_on(self.search_ev)
        self.clock.done("search")

    # ---- phase 4: strength and coder -----------------------------------------------------------------------
    def choose(self) -> None:
        """The cheapest allocation strength and coder at the steps found; with `sequential`, the layer inputs
        measured again on the model quantized there."""
        self.clock.doing = "pricing allocation strengths and coders"
        priced = {st: self.price(self.plan_for(b, st)) for st, b in self.found.items()}
        self.strength = min(priced, key=priced.get)
        self.base = self.found[self.strength]
        self.say(
            "allocation strengths priced: "
            + ", ".join(f"{st:g}: {bits / 8 / 1024:.1f} KiB" for st, bits in priced.items())
        )
        self.coded = _cheapest_coder(self.spec, lambda c: self.price(self.plan_for(self.base, self.strength, c)),
                                     self.say, self.asked.choose_coder,
                                     context_coders(self.asked.decode_on))
        if self.rounder is not None and self.asked.sequential:
            t0 = time.perf_counter()
            self.clock.doing = "measuring layer inputs of the quantized model"
            cal, plan = self.cal, self.plan_for(self.base, self.strength, self.coded)
            layered = cal.net is not None and layers_of(cal.net) is not None  # a causal LM shaped like Llama
            if cal.sequential is not None:  # an ONNX graph: captured with onnxruntime, topological group by group
                inputs_q = cal.sequential(self.weights, plan, self.rounder, self.rounder.inputs)
                how = "sequential, by topological groups of layers"
            elif layered:
                inputs_q = collect_sequential(cal.net, cal.run, cal.names, self.weights, plan, self.rounder)
                how = "sequential, layer by layer"
            elif cal.whole is not None:
                inputs_q = collect_in_order(cal.net, cal.whole, cal.names, self.weights, plan, self.rounder.inputs,
                                            self.rounder.lam, self.rounder.damp)
                how = "sequential, in the forward's order"
            else:
                inputs_q = collect_on(cal.net, cal.run, cal.names, self.decoded(plan)[0])
                how = "sequential, one refresh"
            self.rounder = self.rounder.on(inputs_q)
            self._rounded.clear()
            self.calibration["layer_inputs"] = f"of the model quantized at base step {self.base:.4g} ({how})"
            self.say(f"rounding: layer inputs measured again on the model quantized at base step {self.base:.3g} "
                     f"({time.perf_counter() - t0:.1f} s)")
        self.clock.done("choose")

    # ---- phase 5: the search again on the whole calibration/search part ------------------------------------
    def search_again(self) -> None:
        """The largest step near the one found that passes on all of the calibration/search part, with room
        for the held-back part's wider interval (so that it passes there too, about 9 times in 10)."""
        target_loss, t = self.target_loss, self.t
        decide_ev = self.decide_ev
        wider = self.wider
        checked: dict[float, tuple] = {}

        def bound_decide(b: float) -> float:
            plan = self.plan_for(b, self.strength, self.coded)
            recon, targets, _, m = self.judged("final", decide_ev, plan)
            bound = m.loss_high + wider * (m.loss_high - m.loss)
            self.trace.append({"strength": self.strength, "base_step": b, "loss": m.loss, "loss_high": m.loss_high,
                               "with_room": bound, "all_search_inputs": 1})
            self.clock.line(f"check on the {m.n:,} calibration/search inputs at base step {b:.3g}: loss "
                            f"{100 * m.loss:.3f}% (95% bound {100 * m.loss_high:.3f}%, {100 * bound:.3f}% with room "
                            f"for the held-back part)")
            checked[b] = plan, recon, targets
            return bound

        # again on the whole part, also where the search ran on it: the coder chosen since can move dq's levels
        m0 = decide_ev.judge(self.weights)  # no output changed: the narrowest bound, plus its room, must be within
        if m0.loss_high + wider * (m0.loss_high - m0.loss) > target_loss:
            raise ZoocodecError(
                f"the {t.primary} loss within {100 * target_loss:g}% is not resolvable with a held-back "
                f"part of {len(self.held):,} inputs: with no output changed, the 95% bound on the "
                f"{len(self.decide):,} calibration/search inputs plus room for the held-back part's interval "
                f"is {100 * (m0.loss_high + wider * (m0.loss_high - m0.loss)):.3g}%"
            )
        self.clock.doing = "searching again on the whole calibration/search part"
        final = _search(bound_decide, self.base, target_loss, FINAL_FACTOR, FINAL_ROUNDS, FINAL_DOWN)
        if final is None:
            raise ZoocodecError(
                f"the {t.primary} loss stays above {100 * target_loss:g}% on the calibration/search part of "
                f"{t.name}'s inputs{_unresolved(decide_ev, self.weights, target_loss)}"
            )
        self.clock.done("final")
        self.base = final
        self.plan, self.recon, self.targets = checked[final]

    # ---- phase 5b: trained quantization --------------------------------------------------------------------
    def trainable(self) -> None:
        """The module and calibration inputs fine-tuning runs on (refuses a model it cannot run)."""
        from zoocodec.tuning.finetune import trainable

        a = self.asked
        self.prepare()
        self.tr = trainable(self.whole, self.t, self.weights, self.decide_ev,
                            (self.model, a.calib, a.module, a.output) if a.inputs is not None else None)

    def fine_tune(self) -> None:
        """Larger base steps (FINETUNE_FACTOR apart, at most FINETUNE_TRIES), each with its steps, symbols and
        lossless 1-D tensors fine-tuned on the calibration inputs (zoocodec.tuning.finetune); the cheapest
        that passes on the calibration/search part, with room for the held-back part, replaces the file's
        plan where it is smaller. Stops at the first that fails, or when its seconds are spent."""
        from zoocodec.tuning.finetune import STEPS, finetune

        a, clock, t0, tr, base = self.asked, self.clock, time.perf_counter(), self.tr, self.base
        steps = a.finetune_steps or STEPS
        best = self.price(self.plan)
        tries: list[dict[str, float]] = []
        self.say(f"fine-tuning: up to {FINETUNE_TRIES} larger steps, {steps} optimiser steps each on the "
                 f"{tr.count:,} calibration inputs ({tr.about}), on {a.device}, at most {a.finetune_seconds:.0f} s")
        last = 0.0  # the last try's seconds: a try starts only with that much time left
        for j in range(1, FINETUNE_TRIES + 1):
            left = a.finetune_seconds - (time.perf_counter() - t0)
            if left <= last:
                self.say(f"fine-tuning: its time is spent ({left:.0f} s left, the last try took {last:.0f} s)")
                break
            b = base * FINETUNE_FACTOR**j
            clock.doing = f"fine-tuning at base step {b:.3g}"
            plan = self.plan_for(b, self.strength, self.coded)
            recon, targets = self.decoded(plan)
            t1 = time.perf_counter()
            tuned = finetune(tr, self.weights, plan, recon, targets, steps=steps, seconds=left, device=a.device,
                             say=lambda msg: clock.line(msg))
            last = time.perf_counter() - t1
            recon = reconstruct({**self.weights, **tuned.targets}, tuned.plan)
            m = self.decide_ev.judge(recon)
            bound = m.loss_high + self.wider * (m.loss_high - m.loss)
            bits = plan_bits({**self.weights, **tuned.targets}, tuned.plan) + 8 * sum(
                n for k, n in self.exact_bytes.items() if k not in tuned.plan)
            tries.append({"base_step": b, "loss": m.loss, "loss_high": m.loss_high, "with_room": bound,
                          "bits": bits, **tuned.describe()})
            self.trace.append({"strength": self.strength, "base_step": b, "loss": m.loss, "loss_high": m.loss_high,
                               "with_room": bound, "all_search_inputs": 1, "finetuned": 1})
            clock.line(f"fine-tuned at base step {b:.3g} ({tuned.steps} steps, {tuned.seconds:.0f} s, distillation "
                       f"loss {tuned.before:.3g} -> {tuned.after:.3g}, {100 * tuned.moved:.2f}% symbols moved): "
                       f"{bits / 8 / 1024:.1f} KiB, loss {100 * m.loss:.3f}% ({100 * bound:.3f}% with room)")
            if bound > self.target_loss or not tuned.trained:  # failed, or fine-tuning did not lower its loss
                break
            if bits < best:
                best = bits
                self.untuned = self.untuned or (self.base, self.plan, self.recon, self.targets)
                self.base, self.plan, self.recon, self.targets = b, tuned.plan, recon, tuned.targets
        kept = bool(self.untuned)
        self.tuning = {"kept": kept, "tries": tries, "calibration": tr.about, "calibration_inputs": tr.count,
                       "device": str(a.device), "seconds": round(time.perf_counter() - t0, 2)}
        self.say(f"fine-tuning: {'kept at base step ' + format(self.base, '.3g') if kept else 'not kept'} "
                 f"({time.perf_counter() - t0:.0f} s)")

    # ---- phase 6: verification on the held-back part -------------------------------------------------------
    def verify(self) -> None:
        """The budget on the held-back part: a step that fails there is shrunk and checked again, and the
        header counts how often (the interval is then no longer out of sample)."""
        from zoocodec.eval.evaluate import metric_row

        t, target_loss, held_why = self.t, self.target_loss, self.held_why
        shrunk = 0
        self.clock.doing = "verifying on the held-back part"
        while True:
            t0 = time.perf_counter()
            paired = self.held_ev.compare(self.recon)
            m = metric_row("", t.name, t.primary, paired[t.primary], t.primary in t.lower_is_better, True)
            self.clock.ran("verify", time.perf_counter() - t0, len(self.held))
            self.trace.append({"strength": self.strength, "base_step": self.base, "loss": m.loss,
                               "loss_high": m.loss_high, "held_back": 1})
            self.clock.line(f"verified on the {m.n:,} held-back inputs at base step {self.base:.3g}: loss "
                            f"{100 * m.loss:.3f}% (95% interval {100 * m.loss_low:.3f}% .. {100 * m.loss_high:.3f}%)")
            if m.loss_high <= target_loss or held_why or shrunk == FINAL_DOWN:
                break
            if self.untuned:  # the fine-tuned file fails where the one without passed the same check: back to it
                self.base, self.plan, self.recon, self.targets = self.untuned
                self.untuned = ()
                self.tuning.update(kept=False, failed_held_back=True)
                self.say("fine-tuning: the held-back part rejects the fine-tuned file; verifying the one without "
                         "(the held-back part was looked at twice)")
                continue
            shrunk += 1
            self.base /= FINAL_FACTOR
            self.plan = self.plan_for(self.base, self.strength, self.coded)
            self.recon, self.targets = self.decoded(self.plan)
        if m.loss_high > target_loss:
            self.say(f"the budget is not verified: the held-back part's 95% bound is {100 * m.loss_high:.3g}% > "
                     f"{100 * target_loss:g}%" + ("" if held_why else f" after shrinking the step {shrunk} times"))
        elif shrunk:
            self.say(f"the held-back part failed the first step: the step was shrunk {shrunk} times on it, so its "
                     f"interval is not out of sample")
        self.m = m
        self.verified = {"value": m.value, "baseline": m.baseline, "loss": m.loss, "loss_low": m.loss_low,
                         "loss_high": m.loss_high, "delta_low": m.low, "delta_high": m.high, "inputs": m.n,
                         "interval": m.interval, "judged_by": "loss_high", "on": "held_back",
                         "within": m.loss_high <= target_loss,
                         "resolvable": not held_why, "shrunk_on_held_back": shrunk,
                         "metrics": {k: p.value for k, p in paired.items()}}

    # ---- phase 6b: a coder per tensor -------------------------------------------------------------------------
    def coder_per_tensor(self) -> None:
        """Each planned tensor of a method that rounds to nearest gets the coder that writes it in the fewest bytes
        (encoded, not priced): the entropy model the plan was priced by leaves out a small tensor's table, and
        one coder for all is not the cheapest for each (effnet-lite0 at 1%: cabac writes its 1-D tensors 18%
        smaller than ans, whose model priced lower; smollm2-135m at KL 0.01: ctx its tied embedding 3.4% smaller,
        ans its 4-bit groups). A word-embedding table's rows (rdoq with lam=0, exactly uniform rounding on a step
        per row) take part too: smollm2's at KL 0.05 with predicted rows, cabac 0.5% below ctx. The values, hence
        the verified metric, stay the same. The winner's streams are kept for the writer, which takes them instead
        of coding them again."""
        a = self.asked
        if not a.choose_coder:
            return
        self.clock.doing = "choosing a coder per tensor"
        t0 = time.perf_counter()
        before = after = 0
        tensors = {**self.weights, **self.targets}
        plan = dict(self.plan)
        for name, spec in self.plan.items():
            if not (eligible(spec) or name in self.token_rows) or "coder" not in {f.name for f in
                                                                               dataclasses.fields(spec)} or \
                    spec.coder.name not in CONTEXT_CODERS + ("ans",):
                continue
            coded = _coded(spec, to_tensordata(name, tensors[name]),
                           (spec.coder.name, "ans") + context_coders(a.decode_on))
            best = min(coded, key=lambda c: coded[c][0])
            before, after = before + coded[spec.coder.name][0], after + coded[best][0]
            plan[name] = spec if best == spec.coder.name else dataclasses.replace(spec, coder=parse_coder(best))
            self.streams[name] = plan[name], coded[best][1]
        self.plan = plan
        counts: dict[str, int] = {}
        for spec in plan.values():
            name = getattr(getattr(spec, "coder", None), "name", None)
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
        self.coders = counts
        self.say(f"a coder per tensor: {before / 1024:.1f} -> {after / 1024:.1f} KiB of payload ("
                 + ", ".join(f"{c}: {n}" for c, n in sorted(counts.items())) + f" tensors; "
                 f"{time.perf_counter() - t0:.0f} s)")

    # ---- phase 7: writing ----------------------------------------------------------------------------------
    def write(self, out: str | os.PathLike) -> AutoResult:
        """The container with the decisions and the held-back metric in its header (`meta["auto"]`)."""
        from zoocodec.header import f32s

        t, m, plan, targets = self.t, self.m, self.plan, self.targets
        a = self.asked
        split_info = {"seed": a.seed, "held_back": HELD_BACK, "unit": self.unit, "inputs": self.n,
                      "calibration_search": len(self.decide), "held_back_inputs": len(self.held), "about": self.where}
        auto = {"task": t.name, "metric": t.primary, "target_loss": self.target_loss, "method": str(self.coded),
                "verified": self.verified, "split": split_info, "base_step": self.base, "strength": self.strength,
                "search_inputs": len(self.search_ev.ref_out), "search": f32s(self.trace),
                "one_d_lossy": sorted(k for k in plan if self.weights[k].dim() < 2),
                "rounding": self.rounder.describe(sorted(targets)) | self.calibration if self.rounder
                else self.calibration,
                "sensitivities": {k: np.atleast_1d(v).tolist() for k, v in self.usable.items()}}
        if self.token_about:
            auto["token_rows"] = self.token_about
        if self.coders:
            auto["coders"] = self.coders
        if self.whole.device.is_gpu:  # where the judged runs ran (a GPU's last digits differ)
            auto["device"] = self.whole.device.label
        if self.tuning:
            auto["finetune"] = self.tuning
        if self.groupwise:
            from zoocodec.tuning.groupwise import describe

            auto["groupwise"] = describe(plan, self.weights)
        # a model outside the zoo: its original and inputs stand where a zoo name would
        meta = {"zoo": self.reference, "auto": auto} if self.reference else \
            {"auto": auto | {"original": str(self.model), "inputs": str(a.inputs), "module": a.module,
                             "output": a.output, "calib": None if a.calib is None else str(a.calib)}}
        # the quantizers get the chosen grid values (their rounding returns the chosen indices); errors are
        # measured against the original weights; every tensor outside the plan stays exact, as it was when the
        # file was verified (not the model-wide default spec)
        self.clock.doing = "writing"
        report = compress(self.model, out, "lossless", plan=plan, min_size=self.min_size, meta=meta,
                          targets={k: to_tensordata(k, v).array for k, v in targets.items()}, coded=self.streams)
        self.clock.line("written")
        return AutoResult(report, self.reference or str(self.model), t.name, t.primary, self.target_loss, m.value,
                          m.baseline, m.loss, m.loss_high, m.n, self.base, self.strength, str(self.coded),
                          auto["rounding"]["rounding"], self.trace, time.perf_counter() - self.clock.start,
                          split_info, m.loss_high <= self.target_loss, self.tuning)


def _groupwise(task, spec: MethodSpec, weights: dict[str, torch.Tensor]):
    """Group-wise candidates (zoocodec.tuning.groupwise) for a causal LM's plain-uniform plans, else None."""
    from zoocodec.tuning import groupwise

    return groupwise.Groupwise(weights) if task.kind == "tokens" and groupwise.applies(spec) else None


def _search(bound: Callable[[float], float], start: float, target: float, factor: float = 2.0,
            rounds: int = BISECTIONS, down: int = 24) -> float | None:
    """The largest base step whose `bound` (the loss's pessimistic end) is within `target`, to the resolution
    of bracketing by `factor` and `rounds` bisections of log2(base) (factor**(2**-rounds)); None when `down`
    factors below `start` still fail.

    Each next step is aimed where the bound would reach the target if it grew as the step squared (the
    quantization noise's variance), from the nearest steps measured (log-log interpolation once bracketed,
    kept inside the middle of the bracket); a passing step whose bound is within that resolution of the target
    (loss as step**2: target * resolution**-2) ends the search: two to four runs where bisection takes five
    or six (minilm at 1%)."""
    resolution = factor ** (2.0 ** -rounds)
    close = target * resolution**-2
    floor = start / factor**down  # all failed down to here: None
    lo: tuple[float, float] | None = None  # (step, bound): the largest that passed
    hi: tuple[float, float] | None = None  # the smallest that failed
    b, inside = start, 0
    while True:
        value = bound(b)
        if value <= target:
            lo = (b, value) if lo is None or b > lo[0] else lo
            if value >= close:
                return lo[0]
        else:
            hi = (b, value) if hi is None or b < hi[0] else hi
        if lo is not None and hi is not None:
            inside += 1
            if hi[0] / lo[0] <= resolution * (1 + 1e-9) or inside > rounds + 2:
                return lo[0]
            b = _aim(lo, hi, target, (hi[0] / lo[0]) ** 0.25)
        elif lo is not None:  # all passed so far: up, by at most the bracketing factor
            if lo[0] >= start * factor**16:
                return lo[0]
            b = lo[0] * min(factor, max(resolution, _scale(lo[1], target)))
        else:  # all failed so far: down, by the bracketing factor or more (at most its fourth power)
            if hi[0] <= floor * (1 + 1e-9):
                return None
            b = max(floor, hi[0] / max(factor, min(factor**4, 1 / _scale(hi[1], target))))


def _scale(value: float, target: float) -> float:
    """The factor on the step that would bring `value` to AIM x `target` if the loss grew as the step
    squared (a value at or below 0: the largest factor)."""
    return math.sqrt(AIM * target / value) if value > 0 else math.inf


def _aim(lo: tuple[float, float], hi: tuple[float, float], target: float, margin: float) -> float:
    """A step between a passing `lo` and a failing `hi` (step, bound): where the log-log line through them
    reaches AIM x target, kept `margin` (a factor) away from either end."""
    (b0, v0), (b1, v1) = lo, hi
    if v0 > 0 and v1 > v0:
        t = (math.log(AIM * target) - math.log(v0)) / (math.log(v1) - math.log(v0))
        b = math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
    else:
        b = math.sqrt(b0 * b1)
    return min(max(b, b0 * margin), b1 / margin)


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
             weights: dict[str, torch.Tensor], say, calib, source: tuple,
             progress: Callable[[int, int], None] | None = None) -> tuple[DataAware | None, dict, object]:
    """Data-aware rounding from calibration inputs, or None (nearest), with what the header says of it
    and the calibration it measured (zoocodec.eval.calibration.Calibration, for measuring again);
    `progress(inputs, of all)` as a torch module's calibration inputs go through it.
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
            why = "no calibration inputs for this model (a task judged on all the data it has)"
    start = time.perf_counter()
    if why is None:
        if cal.measure:
            inputs = cal.measure(weights)
        else:
            if progress:
                progress(0, cal.count)
            inputs = collect(cal.net, cal.run, cal.names, progress and (lambda n: progress(n, cal.count)))
        if not inputs and cal.measure:
            why = "no MatMul/Gemm/Conv weight in the ONNX graph that one node alone reads"
    if why is not None:
        say(f"rounding: nearest ({why})")
        return None, {"rounding": "nearest", "why": why}, None
    say(f"rounding: gptq on {len(inputs)} layers, inputs measured on {cal.about} ({time.perf_counter() - start:.1f} s)")
    record = {"calibration": cal.about, "calibration_inputs": cal.count}
    if cal.skipped:  # an ONNX graph's initializers that keep nearest rounding
        shown = list(cal.skipped.items())[:5]
        say(f"rounding: nearest for {len(cal.skipped)} initializers: " + "; ".join(f"{k} ({v})" for k, v in shown)
            + (f"; and {len(cal.skipped) - len(shown)} more (the header lists them)" if len(cal.skipped) > 5 else ""))
        record["nearest"] = dict(cal.skipped)
    return ((cal.rounder or DataAware)(inputs, lam=rate_lam, kind_damp=dict(getattr(task, "rounding_damp", ()))),
            record, cal)


def _cheapest_coder(spec: MethodSpec, price: Callable[[MethodSpec], float], say, choose: bool = True,
                    coders: tuple[str, ...] = CONTEXT_CODERS) -> MethodSpec:
    """`spec`, or the same method with another of `coders` where that one's entropy model
    prices the planned tensors lower; a spec with the default coder `ans` (none named) is priced too.
    A coder that cannot code the planned levels (cabac beyond 2^29: SpecError) is left out."""
    if not choose or "coder" not in {f.name for f in dataclasses.fields(spec)} or \
            spec.coder.name not in CONTEXT_CODERS + ("ans",):
        return spec  # a coder the user named, or video, is kept
    options = [spec] + [dataclasses.replace(spec, coder=parse_coder(c)) for c in coders
                        if c in CODERS and c != spec.coder.name]
    priced = {}
    for o in options:
        try:
            priced[str(o)] = (price(o), o)
        except SpecError as e:
            if o is spec:
                raise
            say(f"coder {o.coder} left out: {e}")
    say("coders priced: " + ", ".join(f"{k}: {b / 8 / 1024:.1f} KiB" for k, (b, _) in priced.items()))
    return min(priced.values(), key=lambda bo: bo[0])[1]


def _coded(spec: MethodSpec, t, coders: tuple[str, ...]) -> dict[str, tuple[int, Coded]]:
    """coder -> (bytes of `t` under `spec` with that coder for its level streams, its streams as coded):
    quantized once, and the streams the coder does not write (a group's steps and zero points, raw arrays)
    coded once, not once per coder. A coder that cannot code the levels (cabac beyond 2^29: SpecError) is
    left out."""
    q = spec.quantize(t)
    symbols = {k: to_numpy(v) for k, v in q.symbols.items()}
    levels = [k for k in symbols if spec.coder_for(k) == spec.coder]
    fixed = {k: _stream(spec, k, v, spec.coder_for(k)) for k, v in symbols.items() if k not in levels}
    arrays = sum(len(bytes(v)) for v in q.arrays.values())
    out = {}
    for c in dict.fromkeys(coders):
        coder = parse_coder(c)
        try:
            streams = fixed | {k: _stream(spec, k, symbols[k], coder) for k in levels}
        except SpecError:  # cabac beyond 2^29
            continue
        out[c] = arrays + sum(len(data) for _, data in streams.values()), streams
    return out


def _stream(spec: MethodSpec, stream: str, symbols: np.ndarray, coder) -> tuple[tuple, bytes]:
    data, coded = spec.code_stream(stream, symbols, coder)
    return digest(coded), data


def _unresolved(ev, recon: dict[str, torch.Tensor], target_loss: float) -> str:
    """': not resolvable with N inputs (...)' when the loss's interval at `recon` (the finest step tried, or
    the original) is wider than the budget."""
    m = ev.judge(recon)
    if m.loss_high is not None and m.loss_high - m.loss_low > target_loss:
        return (f": not resolvable with {m.n:,} inputs (the 95% interval of the loss is "
                f"{100 * (m.loss_high - m.loss_low):.3g}% wide)")
    return ""

