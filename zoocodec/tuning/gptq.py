"""Sequential data-aware rounding for causal LMs: GPTQ in the order it was published.

calibrate.DataAware rounds every layer against the inputs the *original* model gives it.
GPTQ as published (Frantar et al. 2023) goes through the decoder layers in order instead:
the calibration tokens' hidden states enter layer i as the layers before it, already
quantized, produce them. Layer i's H = E[x x^T] of each Linear's inputs is measured there
(calibrate.collect, on the layer alone), its planned weights are rounded with error feedback
(calibrate.DataAware: calibrate.gptq, bias correction where a layer has a bias), and the
layer, now holding what the decoder will return, produces the next layer's inputs. Each
layer so corrects for the error that reaches it, not only its own.

The output head is rounded last, against the final norm's outputs on the quantized stack.
A head tied to the token embedding (SmolLM2's) is that one tensor: its rounding is chosen
for its head role, and the layers' inputs start from the original embedding (as in GPTQ,
which leaves the embedding alone).

Tensors of one step (`uniform`, nearest rounding otherwise) are rounded this way: their
indices reach the file as values on their grid (`targets`, as with DataAware; the format and
decoder are unchanged). So are min-max groups with zero points (zoocodec.tuning.groupwise's
candidates, `round_groups`): each group's step and zero point chosen from the weights as the
feedback has left them when it reaches the group, as GPTQ does, and the group's extremes kept at
its end levels, so the method's own min-max finds that grid again. Weights already on such a grid
(SmolLM2's Q4_1 groups at 4 bits, 32 weights) have no error to feed back: they stay as they are.
Held against layer inputs of other text (lee.cor, H measured on 8 windows of the speeches), it
left 3-bit groups of 32 on smollm2's layers 2 and 15 0.67x of min-max rounding's output error on
average, about what it leaves one step (0.60x; bench/bench_gptq_groups.py); so it does not move
automatic mode's choice between them.

One measurement is one pass through the decoder on the calibration tokens (two layer
forwards per layer: the inputs measured, then the quantized layer's outputs), about two
forwards of the model; automatic mode makes it once, as its `sequential` refresh
(zoocodec.tuning.auto), for causal LMs shaped like Llama (`layers_of`); others get the
refresh of calibrate.collect_on.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from zoocodec.methods import MethodSpec
from zoocodec.tuning.calibrate import BLOCK, DataAware, LayerInputs, collect, feedback


class _Catcher(torch.nn.Module):
    """Stands in for the decoder layers during one calibration run: keeps what the first layer would get."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[torch.Tensor, dict]] = []

    def forward(self, hidden: torch.Tensor, **kwargs):
        self.seen.append((hidden.detach(), {k: v for k, v in kwargs.items() if k != "cache"}))
        return hidden


def layers_of(net: torch.nn.Module) -> tuple[str, torch.nn.ModuleList] | None:
    """(parameter-name prefix, decoder layers) of a Hugging Face causal LM shaped like Llama (its base model's
    `layers` and `norm`), or None (another shape: GPT-2's `h`, ...)."""
    base = getattr(net, "base_model", None)
    layers = getattr(base, "layers", None)
    heads = getattr(net, "get_output_embeddings", None)
    if not isinstance(layers, torch.nn.ModuleList) or not hasattr(base, "norm") or heads is None or heads() is None:
        return None
    prefix = next((n for n, m in net.named_modules() if m is layers), None)
    return (f"{prefix}.", layers) if prefix is not None else None


def collect_sequential(net: torch.nn.Module, run: Callable[[torch.nn.Module], object], names: Mapping[str, str],
                       weights: Mapping[str, torch.Tensor], plan: Mapping[str, MethodSpec],
                       rounding: DataAware | None = None) -> dict[str, LayerInputs]:
    """LayerInputs of a causal LM's Linear layers and output head, measured in GPTQ's order under `plan`:
    each decoder layer on the outputs of the layers before it as `plan` quantizes them (one-step tensors
    rounded by DataAware against the inputs measured there, others by their method), the head on the final
    norm's outputs. `rounding`: the DataAware whose settings the final rounding will use (its inputs are not
    read; None: DataAware's defaults). `net` (a float32 causal LM, `run` running it on the calibration tokens,
    `names` its parameter names -> the model's tensor names) holds `weights` again on return.

    DataAware(these inputs).targets(weights, plan) then gives the sequential rounding of `plan` itself;
    automatic mode measures them once, at the step its search found, and rounds the plans near it against them."""
    from zoocodec.tuning.auto import reconstruct

    settings = rounding if rounding is not None else DataAware({})
    found = layers_of(net)
    if found is None:
        raise ValueError(f"{type(net).__name__}: no decoder layers (base_model.layers) to go through")
    prefix, layers = found
    out: dict[str, LayerInputs] = {}
    _load(net, names, weights)
    try:
        seen = _first_inputs(net, layers, run)
        for i, layer in enumerate(layers):
            own = f"{prefix}{i}."
            local = {k[len(own):]: v for k, v in names.items() if k.startswith(own)}
            inputs = collect(layer, lambda m, seen=seen: _through(m, seen), local)
            out.update(inputs)
            rounded = settings.on(inputs).targets(weights, plan)
            mine = {v: plan[v] for v in local.values() if v in plan}
            decoded = reconstruct({**weights, **rounded}, mine)
            layer.load_state_dict({k: decoded[v] for k, v in local.items()}, strict=False)
            with torch.no_grad():
                seen = [(_hidden(layer(h, **kw)), kw) for h, kw in seen]
        out.update(_head_inputs(net, names, seen))
    finally:
        _load(net, names, weights)
    return out


def round_groups(w: np.ndarray, spec: MethodSpec, factors: Callable[[], np.ndarray]) -> np.ndarray | None:
    """float64 values of the rows x d matrix `w` on the grid of `spec` (uniform min-max groups with zero
    points: `bits=B,group=G,zero=true`), rounded column by column with GPTQ's error feedback through
    `factors()` (calibrate.factors of one H); None for other specs, or an H per group of rows (their own
    rounding stands). `factors` is called only for weights off the grid: a Q4_1 model's 4-bit groups are
    on it, and factoring their H would be spent for nothing (about 100 CPU s on smollm2).

    As GPTQ does with groups, each group's step and zero point are chosen when the feedback reaches its
    first column, from the weights as updated so far (min-max, rounded as uniform.group_side rounds them).
    Each row's group minimum takes level 0 and its maximum level 2^B - 1, whatever the feedback did to
    them since: so the method's min-max over these values finds the same step and zero point, and its
    nearest rounding returns these levels (the format and the decoder are unchanged).

    Always in the columns' own order, and without coordinate descent after it (DataAware's act_order and
    sweeps apply to one-step and step-per-row grids only): a group's step and zero point are fixed from its
    columns when the feedback enters it, so every column of the group must come after that and before the next
    group's (act-order would scatter them), and a descent move could shift a group's pinned extremes."""
    from zoocodec.kernels import uniform as K
    from zoocodec.methods.uniform import group_side

    g = getattr(spec, "group", None)
    if spec.name != "uniform" or g is None or not spec.zero or spec.step is not None:
        return None
    w = np.array(w, dtype=np.float64)
    rows, d = w.shape
    top = (1 << spec.bits) - 1
    lo, hi = K.group_ranges(w, g, np)
    steps, zeros = group_side(lo, hi, spec)
    nearest = K.dequantize_groups(K.quantize_groups(w, steps, zeros, g, np), steps, zeros, g, np)
    if np.array_equal(nearest.astype(np.float32), w.astype(np.float32)):  # on the grid (Q4_1's): no error to feed
        return nearest
    u = factors()
    if len(u) != 1:
        return None
    block = max(g, BLOCK // g * g)  # whole groups per block: a group's columns are all updated when it starts
    out = np.zeros_like(w)
    every = np.arange(rows)
    grid: dict[str, np.ndarray] = {}  # the group the feedback is in: its step, zero point and pinned levels

    def on_grid(j: int, column: np.ndarray) -> np.ndarray:
        if j % g == 0:
            part = w[:, j:j + g]
            lo, hi = part.min(axis=1), part.max(axis=1)
            steps, zeros = group_side(lo[:, None], hi[:, None], spec)
            ends = np.full((rows, part.shape[1]), -1)  # per column: the level pinned (-1: none)
            ends[every, part.argmax(axis=1)] = np.where(hi > lo, top, 0)
            ends[every, part.argmin(axis=1)] = 0
            ends[hi == lo] = 0  # one value: every weight at level 0
            grid.update(step=steps[:, 0], zero=zeros[:, 0], ends=ends)
        step, zero, pinned = grid["step"], grid["zero"], grid["ends"][:, j % g]
        k = np.where(pinned >= 0, pinned, np.clip(np.rint((column - zero) / step), 0, top))
        out[:, j] = k * step + zero  # kernels.uniform.dequantize_groups' arithmetic
        return out[:, j]

    feedback(w, u, block, on_grid)
    return out


def _load(net: torch.nn.Module, names: Mapping[str, str], weights: Mapping[str, torch.Tensor]) -> None:
    net.load_state_dict({own: weights[name] for own, name in names.items() if name in weights}, strict=False)


def _first_inputs(net: torch.nn.Module, layers: torch.nn.ModuleList,
                  run: Callable[[torch.nn.Module], object]) -> list[tuple[torch.Tensor, dict]]:
    """(hidden states, keyword arguments) the first decoder layer gets, per calibration batch: one run
    with a stand-in for the layers and none for the head (its logits are not needed)."""
    base, catcher, head = net.base_model, _Catcher(), net.get_output_embeddings()
    attr = next(n for n, m in base.named_children() if m is layers)
    setattr(base, attr, torch.nn.ModuleList([catcher]))
    net.set_output_embeddings(torch.nn.Identity())
    try:
        with torch.no_grad():
            run(net)
    finally:
        setattr(base, attr, layers)
        net.set_output_embeddings(head)
    return catcher.seen


def _head_inputs(net: torch.nn.Module, names: Mapping[str, str],
                 seen: list[tuple[torch.Tensor, dict]]) -> dict[str, LayerInputs]:
    """The output head's LayerInputs: the final norm's outputs (a head without a bias)."""
    head = net.get_output_embeddings()
    # a tied head's parameter has two names; the model's tensor is stored under one of them
    name = next((names[n] for n, p in net.named_parameters(remove_duplicate=False)
                 if p is head.weight and n in names), None)
    if name is None or getattr(head, "bias", None) is not None:
        return {}
    with torch.no_grad():
        x = torch.cat([net.base_model.norm(h).reshape(-1, h.shape[-1]) for h, _ in seen]).double()
    return {name: LayerInputs((x.T @ x / len(x)).numpy()[None], x.mean(0).numpy()[None], len(x))}


def _through(layer: torch.nn.Module, seen: list[tuple[torch.Tensor, dict]]) -> None:
    with torch.no_grad():
        for h, kw in seen:
            layer(h, **kw)


def _hidden(out) -> torch.Tensor:
    """A decoder layer's hidden states (transformers 5 returns the tensor, older versions a tuple)."""
    return out[0] if isinstance(out, tuple) else out

