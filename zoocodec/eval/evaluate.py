"""evaluate(): run a (compressed) model on its zoo tasks next to the uncompressed original.

The reference is the zoo entry the model belongs to (named, or recognised by its tensor
names). Its outputs and metrics are computed once per process and cached, so the
baseline is measured in the same run, with the same code, and a loss is a true
difference. An image or text task's reference outputs are also stored in the zoo cache
(`eval-reference/`), keyed by a hash of the weights' contents, the task, the limit, the device
type, the thread count and the library versions: the next process skips the original's run (minilm's 300
documents: about 50 s on 2 cores). Every delta carries a 95% interval from the paired inputs
(zoocodec.eval.stats), and a loss budget is judged by its pessimistic bound. Evaluation
is deterministic: fixed input order, fixed bootstrap seed.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zoocodec.device import Device, resolve
from zoocodec.errors import ZoocodecError
from zoocodec.eval import refcache
from zoocodec.eval.models import build, kind
from zoocodec.eval.stats import Paired, loss_bounds, verdict
from zoocodec.eval.tasks import TASKS, Task
from zoocodec.pipeline import zoo


@dataclass(frozen=True)
class Metric:
    """One evaluation result, a row of a results table.

    `low`/`high` bound the 95% interval of `delta`; `loss`, `loss_low`, `loss_high` are the
    same as a loss (a fraction of |baseline|, absolute where the baseline is 0; positive is
    worse), `loss_high` the pessimistic bound that budgets are judged by. None: no interval.
    """

    model: str
    task: str
    metric: str
    value: float
    baseline: float
    delta: float  # value - baseline
    low: float | None = None
    high: float | None = None
    n: int = 0  # inputs the metric was computed on
    interval: str = ""  # how the interval was computed
    p_value: float | None = None  # exact McNemar test of the flips (0/1 outcomes)
    loss: float = 0.0
    loss_low: float | None = None
    loss_high: float | None = None
    primary: bool = False  # the task's primary metric (the one budgets apply to)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def verdict(self, budget: float) -> str:
        """'within', 'over' or 'not resolvable with N inputs' for a loss budget (a fraction)."""
        return verdict(self.loss_low, self.loss_high, budget, self.n)


def metric_row(model: str, task: str, name: str, paired: Paired, lower_is_better: bool, primary: bool) -> Metric:
    """A Metric from a paired comparison: value, baseline, delta and their intervals."""
    value, base = paired.value, paired.baseline
    iv = paired.interval()
    worse = value - base if lower_is_better else base - value
    loss_low, loss_high = loss_bounds(iv.low, iv.high, base, lower_is_better)
    return Metric(model, task, name, value, base, value - base, iv.low, iv.high, paired.n, iv.method, iv.p_value,
                  worse / abs(base) if base else worse, loss_low, loss_high, primary)


def entry(name: str) -> dict[str, Any]:
    """The zoo entry of a model zoocodec can evaluate (it has `arch` and `tasks`)."""
    e = zoo.registry().get(name)
    if e is None:
        zoo.resolve(name)  # the registry's own unknown-model error
    if not e.get("arch") or not e.get("tasks"):
        raise ZoocodecError(f"zoo model {name!r} has no arch/tasks in its zoo entry, so it cannot be evaluated")
    kind(e["arch"])
    return e


def tasks_of(name: str, task: str | None = None) -> list[Task]:
    """The named task (checked against the model's tasks), or all of the model's tasks."""
    names = list(entry(name)["tasks"])
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ZoocodecError(f"zoo model {name!r} names unknown task {unknown[0]!r} (tasks: {', '.join(TASKS)})")
    if task is None:
        return [TASKS[t] for t in names]
    if task not in names:
        raise ZoocodecError(f"unknown task {task!r} for model {name!r} (its tasks: {', '.join(names)})")
    return [TASKS[task]]


def load_weights(model: str | os.PathLike | dict, device: str | Device = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a model (path, zoo name, dict) or of a .zc container (decoded in memory, on `device`)."""
    from zoocodec.pipeline.core import decompress, load
    from zoocodec.pipeline.modelio import to_torch

    dev = resolve(device)
    if isinstance(model, dict):
        return {k: v.to(dev.torch) for k, v in model.items()}
    if _is_container(model):
        return decompress(model, device=dev)
    return {t.name: to_torch(t.array, t.dtype).to(dev.torch) for t in load(model).tensors()}


def _is_container(model: Any) -> bool:
    if isinstance(model, dict) or not Path(model).is_file():
        return False
    from zoocodec.container import MAGIC

    with open(model, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


_NAMES: dict[str, frozenset[str]] = {}


def identify(weights: dict[str, torch.Tensor], model: Any = None) -> str:
    """The zoo model whose tensor names these weights have (from a .zc's meta first)."""
    from zoocodec.pipeline.core import Archive, load

    if model is not None and _is_container(model):
        with Archive(model) as a:
            named = a.head.meta.get("zoo")
        if named:
            return named
    names = frozenset(weights)
    for name, e in zoo.registry().items():
        if not e.get("arch") or (("packages" in e or "convert" in e) and not (zoo.cache_dir() / name).is_dir()):
            # not evaluable, or a split zip never extracted / a model never converted (not worth it to compare names)
            continue
        if name not in _NAMES:
            try:
                _NAMES[name] = frozenset(load(name).names)
            except ZoocodecError:
                _NAMES[name] = frozenset()
        if _NAMES[name] == names:
            return name
    raise ZoocodecError(f"{_label(model)}: its tensors match no installed zoo model; name one with --reference, "
                        f"or judge it against its original: zoocodec evaluate ORIGINAL COMPRESSED --inputs PATH")


def _label(model: Any) -> str:
    return "<dict of tensors>" if isinstance(model, dict) else str(model)


class Evaluator:
    """A zoo model's task with the reference outputs and baseline metrics computed once."""

    def __init__(self, reference: str, task: Task, limit: int | None = None, device: str | Device = "cpu"):
        self.reference, self.task, self.limit = reference, task, limit
        self.device = resolve(device)
        e = entry(reference)
        if kind(e["arch"]) != task.kind:
            raise ZoocodecError(f"task {task.name!r} needs a {task.kind} model; {reference!r} is {kind(e['arch'])}")
        self.arch = e["arch"]
        self.folder = zoo.resolve(reference) if task.kind in ("text", "tokens") else None
        ref_weights = load_weights(reference, self.device)
        if task.kind == "tokens":  # a causal LM: the scorer keeps what the original's logits need
            from zoocodec.eval.lm import Scorer

            self.scorer = Scorer(self.folder, task.texts(), limit, self.device)
            self.ref_out = self.scorer.reference(ref_weights)
        else:
            path = _reference_path(reference, task, limit, self.device, ref_weights)
            self.ref_out = _read_reference(path)
            if self.ref_out is None:
                self.ref_out = self.outputs(ref_weights)
                refcache.write(path, {"outputs": self.ref_out})
        self.baseline = task.metrics(self.ref_out, self.ref_out)

    def outputs(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """The task's outputs (on the host) with the model run on the evaluator's device."""
        if self.task.kind == "tokens":
            return self.scorer.outputs(weights)
        return run_on(self.device, weights, lambda w: self.task.outputs(build(self.arch, w, self.folder), self.limit))

    def score(self, weights: dict[str, torch.Tensor]) -> dict[str, float]:
        return self.task.metrics(self.outputs(weights), self.ref_out)

    def compare(self, weights: dict[str, torch.Tensor] | None) -> dict[str, Paired]:
        """Every metric of `weights` (None: the reference itself) paired with the reference's."""
        return self.task.compare(self.ref_out if weights is None else self.outputs(weights), self.ref_out)

    def part(self, indices) -> Evaluator:
        """The same task on the inputs at `indices` only (one side of a split): the model runs on them alone."""
        return Part(self, indices)

    def judge(self, weights: dict[str, torch.Tensor], label: str = "") -> Metric:
        """The task's primary metric of `weights` with its 95% interval: what budgets are judged by."""
        p = self.task.primary
        return metric_row(label, self.task.name, p, self.compare(weights)[p], p in self.task.lower_is_better, True)

    def loss(self, scores: dict[str, float], metric: str | None = None) -> float:
        """Relative loss of `metric` (default: the task's primary) vs the baseline, as a fraction.

        A metric whose baseline is 0 (KL) counts its absolute increase.
        """
        metric = metric or self.task.primary
        value, base = scores[metric], self.baseline[metric]
        worse = value - base if metric in self.task.lower_is_better else base - value
        return worse / abs(base) if base else worse


def run_on(device: Device, weights: dict[str, torch.Tensor], run) -> torch.Tensor:
    """`run(weights)`'s outputs, on the host, with the weights and every tensor the model code creates on
    `device` (torch's default device inside: a tokenizer's tensors too; inputs made from NumPy arrays go to
    torch.get_default_device())."""
    if not device.is_gpu:
        return run(weights)
    with torch.device(device.torch):
        return run({k: v.to(device.torch) for k, v in weights.items()}).cpu()


def _reference_path(reference: str, task: Task, limit: int | None, device: Device,
                    weights: dict[str, torch.Tensor]) -> Path:
    import numpy as np

    import zoocodec

    try:
        import transformers
        versions = f"{transformers.__version__}"
    except ImportError:
        versions = "-"
    return refcache.path("eval-reference",
                         f"{zoocodec.__version__} {torch.__version__} {np.__version__} {versions} "
                         f"{torch.device(device.torch).type} {torch.get_num_threads()} "  # threads: a sum's order
                         f"{reference} {task.name} {task.about} {limit}", weights)


def _read_reference(path: Path) -> torch.Tensor | None:
    """The outputs stored for these weights and task, or None (absent, unreadable, not a float tensor)."""
    kept = refcache.read(path, ("outputs",))
    out = kept[0] if kept else None
    return out if out is not None and out.is_floating_point() and out.dim() >= 1 and len(out) else None


class Part(Evaluator):
    """A zoo task on some of its inputs. Metrics are paired over them: the outputs go where those inputs
    sit among the reference's, the task pairs all, and each metric keeps the pairs of the part (so labels
    and photo groups stay aligned). A task whose metrics are not per input (word pairs) cannot be split."""

    def __init__(self, whole: Evaluator, indices):
        if whole.limit is not None:
            raise ZoocodecError("a part is taken of an evaluator on all of the task's inputs")
        self.__dict__.update(whole.__dict__)
        self.whole, self.limit = whole, tuple(int(i) for i in indices)  # the task runs these inputs (tasks.subset)
        if whole.task.kind == "tokens":  # a causal LM's inputs are tokens: its scorer runs their windows
            self.scorer = whole.scorer.part(self.limit)
        self.ref_out = whole.ref_out[list(self.limit)]
        self.baseline = {k: p.baseline for k, p in self.compare(None).items()}

    def score(self, weights: dict[str, torch.Tensor]) -> dict[str, float]:
        return {k: p.value for k, p in self.compare(weights).items()}

    def compare(self, weights: dict[str, torch.Tensor] | None) -> dict[str, Paired]:
        rows = torch.tensor(self.limit, dtype=torch.long)
        full = self.whole.ref_out.clone()
        if weights is not None:
            full[rows] = self.outputs(weights)
        paired = self.task.compare(full, self.whole.ref_out)
        if any(p.n != len(full) for p in paired.values()):
            raise ZoocodecError(f"task {self.task.name!r} is not judged input by input: it cannot be split")
        keep = rows.numpy()
        return {k: dataclasses.replace(p, x=p.x[keep], r=p.r[keep],
                                       target=None if p.target is None else p.target[keep],
                                       groups=None if p.groups is None else p.groups[keep])
                for k, p in paired.items()}


_EVALUATORS: dict[tuple[str, str, int | None, Device], Evaluator] = {}


def evaluator(reference: str, task: Task, limit: int | None = None, device: str | Device = "cpu") -> Evaluator:
    """The cached Evaluator of (reference, task, limit, device): one baseline per process and device."""
    dev = resolve(device)
    key = (reference, task.name, limit, dev)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(reference, task, limit, dev)
    return _EVALUATORS[key]


def evaluate(model: str | os.PathLike | dict, task: str | None = None, reference: str | None = None,
             limit: int | None = None, device: str | Device = "cpu") -> list[Metric]:
    """Evaluate `model` (zoo name, model path, .zc path or dict of tensors) on its zoo tasks.

    `reference` names the zoo model it derives from (default: recognised from its tensor
    names); `task` picks one of that model's tasks (default: all of them); `limit` uses
    that many inputs, evenly spread (quick checks). Returns one Metric per (task, metric),
    each delta with its 95% interval. `device` (cpu, gpu, cuda:N, auto) decodes the weights and
    runs both models there; the reference is measured on the same device.
    """
    dev = resolve(device)
    is_zoo_name = isinstance(model, str) and model in zoo.registry()
    weights = None if is_zoo_name else load_weights(model, dev)
    reference = reference or (model if is_zoo_name else identify(weights, model))
    results = []
    for t in tasks_of(reference, task):
        ev = evaluator(reference, t, limit, dev)
        # the reference itself needs no second run (a file of the same weights gets one)
        paired = ev.compare(None if model == reference else weights or load_weights(model, dev))
        results += [metric_row(_label(model), t.name, k, p, k in t.lower_is_better, k == t.primary)
                    for k, p in paired.items()]
    return results
