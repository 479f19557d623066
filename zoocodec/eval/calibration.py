"""Calibration: a model's torch module and a run of it on inputs, for data-aware rounding.

zoocodec.tuning.calibrate hooks the module's Linear/Conv2d layers during `run(net)` to
measure what each layer sees. Sources, by the kind of model:
- zoo image classifiers and sentence encoders: their task's calibration inputs
  (zoocodec.eval.tasks), never the judged ones: Fashion-MNIST train images for fmnist-cnn
  (judged on the test set); scikit-learn's 8x8 digits for mnist-cnn (judged on opencv-doc's);
  gensim texts other than the judged lee_background.cor for minilm and smollm2-135m; random crops of 34
  photos that ship with scikit-learn, matplotlib, scikit-image and two Debian wallpaper packages, and 32 images
  distilled from its BatchNorm statistics, for effnet-lite0 (judged on opencv-doc's);
- a state dict with the user's `--module`, or a Hugging Face folder: the user's `--calib`, or
  the calibration/search part of a seeded split of `--inputs` (zoocodec.tuning.auto), never
  the held-back part the budget is verified on;
- ONNX models (run by onnxruntime, no torch module): the same inputs as a state dict's; each layer's inputs
  are captured with onnxruntime (zoocodec.eval.onnxcapture: `measure`, and `sequential` for GPTQ's order).
None means the caller keeps nearest rounding.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from zoocodec.eval.models import build
from zoocodec.eval.tasks import Task, _logits


@dataclass
class Calibration:
    net: torch.nn.Module
    run: Callable[[torch.nn.Module], object]
    names: dict[str, str]  # the module's parameter names -> the model's tensor names
    about: str
    count: int
    # the same run in one batch, where the inputs allow it (images): what sequential rounding's hooks need
    # (zoocodec.tuning.sequential: each layer rounded inside the forward, on all calibration inputs at once)
    whole: Callable[[torch.nn.Module], object] | None = None
    # a graph without a torch module (ONNX; `net` None): its layer inputs measured on given weights, what rounds
    # them (a DataAware subclass that knows their layout), the same layers measured in GPTQ's sequential order
    # (weights, plan, rounding, original inputs), and the initializers that keep nearest rounding -> why
    measure: Callable[[Mapping[str, torch.Tensor]], dict] | None = None
    rounder: Callable[..., object] | None = None
    sequential: Callable[..., dict] | None = None
    skipped: dict[str, str] = field(default_factory=dict)


def for_zoo(arch: str, folder, task: Task, weights: dict[str, torch.Tensor]) -> Calibration | None:
    """The zoo model `arch` with `weights`, run on `task`'s calibration inputs (None: the task has none)."""
    if task.calibration is None:
        return None
    inputs = task.calibration()
    if task.kind == "tokens":
        from zoocodec.eval import lm

        net, run, count = lm.calibration(folder, inputs, weights, lm.CALIBRATION_WINDOWS)
        return Calibration(net, run, _names(net, weights), f"{count} {task.calibration_about}", count)
    if task.kind == "text":
        from zoocodec.eval.text import TextModel

        enc = TextModel(folder, weights)
        return Calibration(
            enc.model, lambda _net: enc.encode(inputs), _names(enc.model, weights), task.calibration_about, len(inputs)
        )
    net = build(arch, weights)
    # batches of ~2M input values (a layer's inputs are summed in blocks of about calibrate.SCRATCH values)
    batch = max(1, min(256, 2**21 // inputs[0].numel()))
    return Calibration(net, lambda n: _logits(lambda: inputs, batch)(n, None), _names(net, weights),
                       task.calibration_about, len(inputs), lambda n: _logits(lambda: inputs, len(inputs))(n, None))


def for_runner(run, weights: dict[str, torch.Tensor], about: str) -> Calibration | None:
    """A model outside the zoo on the inputs of `run` (a zoocodec.eval.anymodel runner: calibration
    inputs, never the held-back ones), where it has a torch module; `about` says which inputs they are."""
    from zoocodec.eval.anymodel import HfRunner, OnnxRunner, TorchRunner

    if isinstance(run, HfRunner) and run.kind == "tokens":
        from zoocodec.eval import lm

        net, go, count = lm.calibration(run.folder, run.texts, weights, None)
        return Calibration(net, go, _names(net, weights), f"{count:,} windows of {about}", count)
    if isinstance(run, HfRunner):
        from zoocodec.eval.text import TextModel

        enc = TextModel(run.folder, weights, classifier=run.classifier)
        go = (lambda _n: enc.logits(run.texts)) if run.classifier else (lambda _n: enc.encode(run.texts))
        return Calibration(enc.model, go, _names(enc.model, weights), about, run.n)
    if isinstance(run, TorchRunner):
        net = run.module(weights)
        return Calibration(net, run.forward, _names(net, weights), about, run.n)
    if isinstance(run, OnnxRunner):
        return _onnx(run, weights, about)
    return None


def _onnx(run, weights: dict[str, torch.Tensor], about: str) -> Calibration:
    """An ONNX graph's calibration: layer inputs captured with onnxruntime on the runner's inputs."""
    from functools import partial

    from zoocodec.eval import onnxcapture as O

    found, skipped = O.layers(run.graph, weights)
    g, arrays, batch, fixed = run.graph, run.arrays, run.batch, run.fixed
    return Calibration(
        None, None, {k: k for k in weights}, about, run.n,
        measure=lambda now: O.capture(g, now, arrays, found, batch, fixed),
        rounder=partial(O.OnnxDataAware, transposed=frozenset(x.weight for x in found if x.transposed)),
        sequential=lambda now, plan, rounding, original: O.sequential(g, now, arrays, found, batch, fixed, plan,
                                                                      rounding, original),
        skipped=skipped)


def _names(net: torch.nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, str]:
    """The module's state names -> the model's tensor names (a wrapper's prefix, bert. or mpnet., may differ)."""
    prefix = getattr(net, "base_model_prefix", "") + "."
    own = set(net.state_dict())
    out = {}
    for name in weights:
        for key in (name, prefix + name, name.removeprefix(prefix)):
            if key in own:
                out[key] = name
                break
    return out
