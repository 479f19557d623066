"""Trained quantization: fine-tune the values a file stores against the original model's outputs.

Rounding chooses each weight's symbol on a grid the allocation fixed; what the format stores
besides the symbols is continuous: each tensor's step (`uniform:step=S`, a float64 in the
header), and the tensors kept lossless, biases and norm parameters among them. Once the grid
is chosen, those are trained by distillation: the loss is KL(original || compressed) of the
outputs on the calibration inputs (1 - cosine for embeddings, relative squared L2 for other
values), never on the inputs the budget is searched or verified on.

- Steps: LSQ (Esser et al. 2020) trains the step through w_hat = round(w / s) * s with a
  straight-through estimator; here the weight is held in step units, u, so that w_hat =
  round(u) * s: the step's gradient is sum dL/dw_hat * round(u), and the step is trained on
  its logarithm (it stays positive, one learning rate fits every tensor).
- Symbols: u starts at the chosen symbols and moves by the straight-through gradient; a
  symbol changes where u crosses a half (`symbols=False` keeps them).
- Biases and norm parameters (1-D tensors stored losslessly) are trained as they are, in
  units of their own RMS.

The result is a plan and quantizer targets in automatic mode's terms (zoocodec.tuning.auto):
each step replaced in the spec, each weight handed to the quantizer as k * s (its rounding
returns k), each trained 1-D tensor as its value: the format and decoder are unchanged. The
caller judges it: fine-tuning lowers the loss on the calibration inputs, which need not hold
on others.

Models: zoo image classifiers and sentence encoders, a state dict with its `--module`, a Hugging
Face encoder or classifier; not ONNX (no torch module to differentiate) nor causal language models.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zoocodec.errors import ZoocodecError
from zoocodec.methods import MethodSpec

STEPS = 60  # optimiser steps, one batch each
# Adam, in relative units: log-steps, 1-D tensors in their RMS. mnist-cnn at 1.19x its 1% step, 60 steps, symbols
# fixed: distillation loss 0.0259 -> 0.0209 at 0.003, -> 0.0173 at 0.01
LR = 0.01
# symbols' learning rate (step units) over LR. At 0.03 step units per step, 3% of mnist-cnn's symbols moved in 60
# steps and the distillation loss rose 20%; at 0.003 none moved. Symbols move only under a steady gradient
SYMBOL_LR = 0.3
# the lossless 1-D tensors' learning rate over LR; 0 leaves them as they are. minilm (fixed plans, judged on held-back
# documents; bench/results/finetune-2026-12-05h-minilm.json): trained at lr 0.003 (steps too) they cut the calibration
# texts' loss by 10-28% and raised the held-back loss up to 18%; at 0 (the steps alone) the calibration loss moved
# by 0.2% at most
ONE_D_LR = 1.0
BATCH = 32  # calibration inputs per step (images); texts: 16
SEED = 0
PROGRESS_EVERY = 10.0  # seconds between two progress lines


@dataclass
class Trainable:
    """A torch module and the calibration inputs it is fine-tuned on, batch by batch."""

    net: torch.nn.Module
    names: dict[str, str]  # the module's state names -> the model's tensor names
    batches: list  # each a forward's input
    forward: Callable[[torch.nn.Module, dict, object], torch.Tensor]  # (net, state, batch) -> outputs, with grad
    kind: str  # logits | embeddings | values: the distillation loss
    about: str  # which inputs, for the header

    @property
    def count(self) -> int:
        return sum(_length(b) for b in self.batches)


@dataclass
class Tuned:
    """What fine-tuning changed, and what it measured on the calibration inputs."""

    plan: dict[str, MethodSpec]
    targets: dict[str, torch.Tensor]
    before: float  # the distillation loss on all calibration inputs, before and after (also where it was dropped)
    after: float
    steps: int
    seconds: float
    moved: float  # the fraction of the planned tensors' symbols that changed
    trained: list[str] = field(default_factory=list)  # empty: dropped, no better than its start

    def describe(self) -> dict[str, object]:
        return {"steps": self.steps, "seconds": round(self.seconds, 2), "loss_before": self.before,
                "loss_after": self.after, "symbols_moved": self.moved, "trained": self.trained}


def trainable(whole, task, weights: dict[str, torch.Tensor], decide_ev=None, source: tuple | None = None,
              batch: int = BATCH) -> Trainable:
    """The module and calibration inputs of the model automatic mode judges with `whole`: a zoo task's
    calibration inputs; a model outside the zoo's `--calib` (source = (model, calib, module, output)),
    else the calibration/search part `decide_ev` (never the held-back part). Refuses with one line a model
    whose module it cannot run."""
    from zoocodec.eval.calibration import _names

    run = getattr(whole, "run", None)
    if run is None:  # a zoo model
        if task.calibration is None:
            raise ZoocodecError(f"fine-tuning needs calibration inputs: task {task.name!r} has none")
        inputs = task.calibration()
        if task.kind == "tokens":
            raise ZoocodecError("fine-tuning does not run causal language models (yet): leave out --finetune")
        if task.kind == "text":
            return _text(whole.folder, weights, list(inputs), False, task.calibration_about, _names)
        from zoocodec.eval.models import build

        net = build(whole.arch, weights)
        x = torch.as_tensor(inputs)
        return Trainable(net, _names(net, weights), _split(x, batch), _image_forward, "logits",
                         task.calibration_about)
    from zoocodec.eval.anymodel import HfRunner, TorchRunner, runner

    if source is not None and source[1] is not None:
        model, calib, module, output = source
        run, about = runner(Path(model), Path(calib), module, output), f"--calib {Path(calib).name}"
    else:
        run, about = decide_ev.run, "the calibration/search part of --inputs"
    kind = whole.task.kind
    if isinstance(run, TorchRunner):
        net = run.module(weights)
        arrays = run.arrays
        n = len(next(iter(arrays.values())))
        batches = [{k: a[s:s + batch] for k, a in arrays.items()} for s in range(0, n, batch)]
        return Trainable(net, _names(net, weights), batches, _array_forward, kind, about)
    if isinstance(run, HfRunner) and kind != "tokens":
        return _text(run.folder, weights, list(run.texts), run.classifier, about, _names)
    raise ZoocodecError("fine-tuning needs the model's torch module: an ONNX graph or a causal language model "
                        "is not fine-tuned; leave out --finetune")


def _split(x: torch.Tensor, batch: int) -> list[torch.Tensor]:
    return [x[i:i + batch] for i in range(0, len(x), batch)]


def _length(b) -> int:
    if isinstance(b, torch.Tensor):
        return len(b)
    if isinstance(b, dict):
        return len(next(iter(b.values())))
    return len(b[0]) if isinstance(b, tuple) else len(b)


def _image_forward(net: torch.nn.Module, state: dict, x: torch.Tensor) -> torch.Tensor:
    device = next(iter(state.values())).device
    return torch.func.functional_call(net, state, (x.to(device).contiguous(memory_format=torch.channels_last),))


def _array_forward(net: torch.nn.Module, state: dict, b: dict) -> torch.Tensor:
    from zoocodec.eval.anymodel import _first

    device = next(iter(state.values())).device
    args = tuple(torch.from_numpy(b[k]).to(device) for k in b if k.startswith("arr_"))
    kwargs = {k: torch.from_numpy(v).to(device) for k, v in b.items() if not k.startswith("arr_")}
    return _first(torch.func.functional_call(net, state, args, kwargs)).float()


def _text(folder, weights, texts: list[str], classifier: bool, about: str, names) -> Trainable:
    """A Hugging Face encoder: batches of texts of similar lengths, tokenised once; outputs as
    zoocodec.eval.text gives them (mean-pooled, normalised embeddings, or a classifier's logits)."""
    from zoocodec.eval.text import TextModel

    enc = TextModel(Path(folder), weights, classifier=classifier)
    lengths = [len(ids) for ids in enc.tok(texts, truncation=True, max_length=enc.max_len)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    batches = []
    for s in range(0, len(order), 16):
        chunk = [texts[i] for i in order[s:s + 16]]
        batches.append(dict(enc.tok(chunk, truncation=True, max_length=enc.max_len, padding=True,
                                    return_tensors="pt")))

    def forward(net: torch.nn.Module, state: dict, b: dict) -> torch.Tensor:
        device = next(iter(state.values())).device
        result = torch.func.functional_call(net, state, (), {k: v.to(device) for k, v in b.items()})
        if classifier:
            return result.logits.float()
        h = result.last_hidden_state
        m = b["attention_mask"].to(device).unsqueeze(-1).to(h.dtype)
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2, dim=1)

    return Trainable(enc.model, names(enc.model, weights), batches, forward,
                     "logits" if classifier else "embeddings", about)


def distortion(kind: str, out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The distillation loss, mean over the batch: KL(ref || out) of logits, 1 - cosine, relative L2^2."""
    n = len(out)
    out, ref = out.reshape(n, -1).float(), ref.reshape(n, -1).float()
    if kind == "logits":
        logp = torch.log_softmax(ref, 1)
        return (logp.exp() * (logp - torch.log_softmax(out, 1))).sum(1).mean()
    if kind == "embeddings":
        return (1 - torch.nn.functional.cosine_similarity(out, ref, dim=1)).mean()
    return ((out - ref).pow(2).sum(1) / ref.pow(2).sum(1).clamp(min=1e-30)).mean()


def tunable(spec: MethodSpec) -> bool:
    """A spec whose step fine-tuning can train: one step, and a quantizer that returns handed-over grid values'
    own symbols (uniform; rdoq and dq choose their own levels)."""
    return spec.rounds_nearest and getattr(spec, "step", None) is not None and not getattr(spec, "group", None)


def finetune(tr: Trainable, weights: Mapping[str, torch.Tensor], plan: Mapping[str, MethodSpec],
             recon: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], steps: int = STEPS,
             lr: float = LR, symbols: bool = True, symbol_lr: float = SYMBOL_LR, seconds: float | None = None,
             one_d_lr: float = ONE_D_LR, step_lr: float = 1.0, device: str | torch.device = "cpu",
             say: Callable[[str], None] | None = None) -> Tuned:
    """Fine-tune `plan`'s steps and symbols and the lossless 1-D tensors for `steps` steps or `seconds`,
    whichever ends first, starting from `recon` (what the decoder returns under `plan` and `targets`, the
    values handed to the quantizers). `one_d_lr`, `symbol_lr` and `step_lr` scale `lr` for the 1-D tensors,
    the symbols and the steps (0 leaves them as they are). Returns the plan and targets to write."""
    start = time.perf_counter()
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(SEED)
    net = tr.net.to(dev).eval()
    own = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    fixed: dict[str, torch.Tensor] = {}
    log_s: dict[str, torch.Tensor] = {}  # per planned tensor: log of its step (trained)
    latent: dict[str, torch.Tensor] = {}  # per planned tensor: the weights in step units (trained)
    start_k: dict[str, torch.Tensor] = {}
    free: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}  # 1-D lossless: (start, delta, rms)
    params = dict(net.named_parameters())
    for key, name in tr.names.items():
        if key not in own:
            continue
        value = recon[name].detach().to(dev).reshape(own[key].shape)
        if not value.is_floating_point():
            fixed[key] = value.to(own[key].dtype)
            continue
        value = value.float()
        spec = plan.get(name)
        if spec is not None and tunable(spec) and key in params:  # a buffer (BatchNorm statistics) stays fixed
            k = torch.round(value.double() / spec.step).float()
            start_k[name] = k
            latent[name] = k.clone().requires_grad_(symbols)
            log_s[name] = torch.tensor(math.log(spec.step), device=dev, requires_grad=True)
        elif one_d_lr > 0 and spec is None and value.dim() == 1 and key in params:
            rms = float(value.pow(2).mean().sqrt()) or 1.0
            free[name] = (value, torch.zeros_like(value, requires_grad=True), rms)
        else:
            fixed[key] = value.to(own[key].dtype)
    if not log_s:
        raise ZoocodecError("fine-tuning found no planned tensor with one step in the module: nothing to train")
    inverse = {name: key for key, name in tr.names.items()}
    trained = {inverse[n] for n in (*latent, *free)}
    for key, t in own.items():  # the module's own tensors the model does not name (position ids, counters)
        if key not in trained:
            fixed.setdefault(key, t.detach())

    def state() -> dict[str, torch.Tensor]:
        out = dict(fixed)
        for name, u in latent.items():
            q = u + (torch.round(u) - u).detach() if symbols else start_k[name]
            out[inverse[name]] = q * log_s[name].exp()
        for name, (v0, d, rms) in free.items():
            out[inverse[name]] = v0 + d * rms
        return out

    with torch.no_grad():
        ref_state = {key: weights[name].detach().to(dev, own[key].dtype).reshape(own[key].shape)
                     for key, name in tr.names.items() if key in own}
        for key, t in own.items():
            ref_state.setdefault(key, t.detach())
        refs = [tr.forward(net, ref_state, b).detach() for b in tr.batches]

    def total() -> float:
        with torch.no_grad():
            s = state()
            n = tr.count
            return sum(float(distortion(tr.kind, tr.forward(net, s, b), r)) * _length(b) / n
                       for b, r in zip(tr.batches, refs, strict=True))

    before = total()
    groups = [(list(log_s.values()), lr * step_lr), ([d for _, d, _ in free.values()], lr * one_d_lr)]
    if symbols:
        groups.append((list(latent.values()), lr * symbol_lr))
    opt = _Adam(groups)
    order = torch.randperm(len(tr.batches), generator=gen).tolist()
    last, done = time.perf_counter(), 0
    for i in range(steps):
        if seconds is not None and time.perf_counter() - start > seconds:
            break
        j = order[i % len(order)]
        loss = distortion(tr.kind, tr.forward(net, state(), tr.batches[j]), refs[j])
        loss.backward()
        opt.step()
        done = i + 1
        now = time.perf_counter()
        if say is not None and now - last >= PROGRESS_EVERY:
            last = now
            per = (now - start) / done
            left = (steps - done) * per if seconds is None else min((steps - done) * per, seconds - (now - start))
            batch = float(loss.detach())
            say(f"fine-tuning: step {done}/{steps}, batch loss {batch:.4g} (about {max(left, 0):.0f} s left)")
    after = total()
    tr.net.to("cpu")
    if not after < before:  # no better on all the calibration inputs: what it started from (after as measured)
        return Tuned(dict(plan), dict(targets), before, after, done, time.perf_counter() - start, 0.0, [])
    out_plan, out_targets, moved, count = dict(plan), dict(targets), 0, 0
    with torch.no_grad():
        for name, u in latent.items():
            step = float(log_s[name].exp())
            k = torch.round(u) if symbols else start_k[name]
            moved += int((k != start_k[name]).sum())
            count += k.numel()
            out_plan[name] = dataclasses.replace(plan[name], step=step)
            w = weights[name]
            out_targets[name] = (k.double().cpu() * step).reshape(w.shape).to(w.dtype)
        for name, (v0, d, rms) in free.items():
            w = weights[name]
            out_targets[name] = (v0 + d * rms).cpu().reshape(w.shape).to(w.dtype)
    return Tuned(out_plan, out_targets, before, after, done, time.perf_counter() - start, moved / max(count, 1),
                 sorted([*latent, *free]))



class _Adam:
    """Adam (Kingma and Ba) over groups of (tensors, learning rate). torch.optim's first use imports the
    compiler stack (seconds on a busy machine) for what is a few lines here."""

    def __init__(self, groups: list[tuple[list[torch.Tensor], float]], betas=(0.9, 0.999), eps: float = 1e-8):
        self.groups, (self.b1, self.b2), self.eps, self.t = groups, betas, eps, 0
        self.m = [[torch.zeros_like(p) for p in ps] for ps, _ in groups]
        self.v = [[torch.zeros_like(p) for p in ps] for ps, _ in groups]

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for (ps, lr), ms, vs in zip(self.groups, self.m, self.v, strict=True):
            for p, m, v in zip(ps, ms, vs, strict=True):
                if p.grad is None:
                    continue
                m.mul_(self.b1).add_(p.grad, alpha=1 - self.b1)
                v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
                p.sub_(lr * (m / c1) / ((v / c2).sqrt() + self.eps))
                p.grad = None
