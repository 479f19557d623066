"""Sequential data-aware rounding for torch modules in general: GPTQ's order in one forward pass.

calibrate.DataAware rounds every layer against the inputs the *original* model gives it; GPTQ as
published rounds layer i against the inputs the already-quantized layers before it produce, so that
each layer corrects the error that reaches it, not only its own (zoocodec.tuning.gptq does this for
causal LMs, decoder layer by decoder layer). A CNN has no such chain of identical blocks, but its
layers run in one order: here the whole calibration set goes through the model in *one* batch, and a
forward pre-hook on each Linear/Conv2d (depthwise and grouped included) measures that layer's H and
mean on the batch it is given (the quantized layers before it produced it), rounds its weight with
error feedback (calibrate.DataAware) under the plan, writes the decoded weight, and the corrected bias
or BatchNorm running mean after it, into the module, and lets the forward go on. One forward of the
calibration set, against the one-layer-at-a-time re-runs the order would otherwise take.

The bias correction then also takes out the drift of the layer's mean input (the original model's mean
minus the quantized model's, LayerInputs.drift): W mean_original - W_hat mean_quantized, the empirical
bias correction of Nagel et al. (2019), where the original-input correction leaves (W - W_hat) mean.

Measured on effnet-lite0 (bench/bench_h2h_levers.py, five fixed plans around its 1% step, loss on the
calibration/search photos): 0.2-0.3% *larger* at equal KL than rounding every layer against the original
model's inputs, so automatic mode uses it only when asked (`sequential=True`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from zoocodec.methods import MethodSpec
from zoocodec.tuning.calibrate import DAMP, RATE_LAM, DataAware, LayerInputs, _supported, accumulate, inputs_of


def collect_in_order(net: torch.nn.Module, run_whole: Callable[[torch.nn.Module], object], names: Mapping[str, str],
                     weights: Mapping[str, torch.Tensor], plan: Mapping[str, MethodSpec],
                     original: Mapping[str, LayerInputs], lam: float = RATE_LAM,
                     damp: float = DAMP) -> dict[str, LayerInputs]:
    """LayerInputs of `net`'s Linear/Conv2d layers, each measured on what the layers before it, rounded under
    `plan` in the order the forward calls them, give it.

    `run_whole(net)` runs the calibration set in one batch; `names` maps the module's parameter names to the
    model's tensor names; `original` (calibrate.collect on the original model) gives each layer's bias
    target and original mean input (for the drift). `net` holds `weights` again on return.
    DataAware(these inputs).targets(weights, plan) gives the same rounding for `plan` itself."""
    from zoocodec.tuning.auto import reconstruct

    own_of = {v: k for k, v in names.items()}
    out: dict[str, LayerInputs] = {}
    hooks = []

    def hook(mod, args, key):
        if key in out:  # called again in the same forward (a shared layer): it is rounded already
            return
        acc: list = [None, None, 0]
        accumulate(acc, mod, args[0])
        was = original.get(key)
        li = inputs_of(acc, was.bias if was else None)
        if was is not None and was.mean.shape == li.mean.shape:
            li.drift = was.mean - li.mean
        out[key] = li
        rounded = DataAware({key: li}, lam=lam, damp=damp).targets(weights, plan)
        moved = {key, *rounded}
        decoded = reconstruct({**weights, **rounded}, {k: plan[k] for k in moved if k in plan})
        _load(net, {own_of[k]: decoded[k] for k in moved})

    for mname, mod in net.named_modules():
        pname = f"{mname}.weight" if mname else "weight"
        if pname in names and _supported(mod):
            hooks.append(mod.register_forward_pre_hook(lambda m, args, key=names[pname]: hook(m, args, key)))
    _load(net, {own: t for own, t in _as_own(names, reconstruct(dict(weights), dict(plan))).items()})
    try:
        with torch.no_grad():
            run_whole(net)
    finally:
        for h in hooks:
            h.remove()
        _load(net, _as_own(names, weights))
    return out


def _as_own(names: Mapping[str, str], tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {own: tensors[name] for own, name in names.items() if name in tensors}


def _load(net: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy `tensors` (the module's own names) into its parameters and buffers in place (a forward may be
    running: the modules keep their tensors, only the values change)."""
    state = net.state_dict(keep_vars=True)
    with torch.no_grad():
        for own, t in tensors.items():
            state[own].copy_(t.to(state[own].dtype))
