"""Calibration: a model's torch module and a run of it on inputs, for data-aware rounding.

zoocodec.tuning.calibrate hooks the module's Linear/Conv2d layers during `run(net)` to
measure what each layer sees. Sources, by the kind of model:
- zoo image classifiers and sentence encoders: their task's calibration inputs
  (zoocodec.eval.tasks: Fashion-MNIST train images for fmnist-cnn, disjoint from the
  judged test set; a seeded subset of the 5,000 judged digits for mnist-cnn; gensim
  texts other than the judged lee_background.cor for minilm; random crops of three photos
  that ship with scikit-learn and matplotlib for effnet-lite0, judged on opencv-doc's);
- a state dict with the user's `--module`, or a Hugging Face folder: the user's `--inputs`,
  i.e. calibration on the judged inputs;
- ONNX models (run by onnxruntime, no torch module): none.
None means the caller keeps nearest rounding.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


def for_zoo(arch: str, folder, task: Task, weights: dict[str, torch.Tensor]) -> Calibration | None:
    """The zoo model `arch` with `weights`, run on `task`'s calibration inputs (None: the task has none)."""
    if task.calibration is None:
        return None
    inputs = task.calibration()
    if task.kind == "text":
        from zoocodec.eval.text import TextModel

        enc = TextModel(folder, weights)
        return Calibration(
            enc.model, lambda _net: enc.encode(inputs), _names(enc.model, weights), task.calibration_about, len(inputs)
        )
    net = build(arch, weights)
    # batches of ~2M input values: the hooks unfold each convolution's input (k*k times its size)
    batch = max(1, min(256, 2**21 // inputs[0].numel()))
    return Calibration(net, lambda n: _logits(lambda: inputs, batch)(n, None), _names(net, weights),
                       task.calibration_about, len(inputs))


def for_runner(run, weights: dict[str, torch.Tensor]) -> Calibration | None:
    """A model outside the zoo on its user's inputs (zoocodec.eval.anymodel runners), where it has a torch module."""
    from zoocodec.eval.anymodel import HfRunner, TorchRunner

    if isinstance(run, HfRunner):
        from zoocodec.eval.text import TextModel

        enc = TextModel(run.folder, weights, classifier=run.classifier)
        go = (lambda _n: enc.logits(run.texts)) if run.classifier else (lambda _n: enc.encode(run.texts))
        return Calibration(enc.model, go, _names(enc.model, weights), f"the {run.n:,} judged --inputs", run.n)
    if isinstance(run, TorchRunner):
        net = run.module(weights)
        return Calibration(net, run.forward, _names(net, weights), f"the {run.n:,} judged --inputs", run.n)
    return None


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
