"""Per-channel steps on effnet-lite0: does giving each output channel its own step pay?

Automatic mode gives every tensor one step (equal slope over measured per-tensor sensitivities). This
bench tries one step per output channel (row), from a per-row share of each tensor's sensitivity, and
compares at one base step, nearest rounding, on the calibration/search half of the photos task (the 180
views automatic mode searches on; the held-back half is not looked at):

- `tensor`: per-tensor sensitivities from the Fisher diagonal (the mean over the tensor);
- `fisher`: per row, the Fisher diagonal's row mean (a row measured ~0 floored at 1e-3 of the tensor's mean);
- `fisher16`: the same, floored at 1/16 of the tensor's mean (a row's step at most 4x the tensor's);
- `fisher16_nofc`: the same, the classifier kept at one step;
- `bn`: per row, the squared gain gamma / sqrt(var + eps) of the BatchNorm after the convolution (no data).

The Fisher diagonal is measured on the task's calibration inputs (256 crops of three photos, never judged),
two labels drawn per crop from the model's own softmax, per-sample gradients (torch.func.vmap). Bits are
the order-0 entropy of each tensor's symbols, plus 32 bits per row for a per-row step and 32 bits per
value of the tensors left exact. Per-channel steps lost in every variant measured (results JSON).

    nice -n 10 python bench/bench_channel_steps.py [--modes tensor,fisher16_nofc] [--base 0.004]

Writes bench/results/channel-steps-YYYY-MM-DD.json.
"""
from __future__ import annotations

import argparse
import datetime
import math
import time

import numpy as np
import torch

from bench_common import machine, save

MODEL = "effnet-lite0"
BN_AFTER = {"_conv_stem": "_bn0", "_conv_head": "_bn1", "_expand_conv": "_bn0", "_depthwise_conv": "_bn1",
            "_project_conv": "_bn2"}


def fisher(net, x: torch.Tensor, draws: int = 2, batch: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Mean squared per-sample gradient of log p(y | x), y drawn from the model's softmax: the Fisher diagonal."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = dict(net.named_buffers())

    def logp(p, xi, onehot):
        return (torch.log_softmax(functional_call(net, (p, buffers), (xi[None],)), -1)[0] * onehot).sum()

    gen = torch.Generator().manual_seed(seed)
    out = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in params.items()}
    n = 0
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        with torch.no_grad():
            p = torch.softmax(net(xb), -1)
        for _ in range(draws):
            y = torch.nn.functional.one_hot(torch.multinomial(p, 1, generator=gen)[:, 0], p.shape[-1]).float()
            for k, g in vmap(grad(logp), in_dims=(None, 0, 0))(params, xb, y).items():
                out[k] += g.double().pow(2).sum(0)
            n += len(xb)
    return {k: (v / n).numpy() for k, v in out.items()}


def relative_steps(mode: str, name: str, f: np.ndarray, weights, median: float, mean: float) -> np.ndarray:
    """step / base for each row of tensor `name` (Fisher diagonal `f`, rows x rest; `mean`: its tensor's)."""
    one = np.full(f.shape[0], math.sqrt(median / mean))
    if mode == "tensor" or (mode.endswith("_nofc") and name.startswith("_fc")):
        return one
    if mode == "bn":
        pre, _, last = name.removesuffix(".weight").rpartition(".")
        if last not in BN_AFTER:
            return one
        bn = (pre + "." if pre else "") + BN_AFTER[last]
        gain = (weights[bn + ".weight"].double() / (weights[bn + ".running_var"].double() + 1e-3).sqrt()).numpy() ** 2
        share = np.maximum(gain / gain.mean(), 1e-3)
    else:
        floor = 1 / 16 if mode.startswith("fisher16") else 1e-3
        share = np.maximum(f.mean(1) / f.mean(), floor)
    return np.sqrt(median / (mean * share))


def main(argv: list[str] | None = None) -> dict:
    from zoocodec.codecs.base import Order0
    from zoocodec.eval.calibration import _names
    from zoocodec.eval.evaluate import evaluator, load_weights, tasks_of
    from zoocodec.eval.models import build
    from zoocodec.tuning.auto import split

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", default="tensor,fisher,fisher16,fisher16_nofc,bn")
    p.add_argument("--base", type=float, default=0.004)
    a = p.parse_args(argv)
    start = time.process_time()
    w = load_weights(MODEL)
    t = tasks_of(MODEL, None)[0]
    whole = evaluator(MODEL, t, None)
    decide, _ = split(len(whole.ref_out), whole.compare(None)[t.primary].groups, 0)
    search = whole.part(decide)
    net = build(whole.arch, w).eval()
    names = _names(net, w)
    fd = {names[k]: v for k, v in fisher(net, torch.as_tensor(t.calibration())).items() if k in names}
    quantized = [k for k, v in fd.items() if v.ndim >= 2 and v.size >= 256]
    mean = {k: float(fd[k].mean()) for k in quantized}
    median = float(np.median(list(mean.values())))
    params = sum(v.numel() for v in w.values() if v.dtype.is_floating_point)
    rows = []
    for mode in a.modes.split(","):
        recon, bits, side = dict(w), 0.0, 0.0
        for k in quantized:
            x = w[k].double().numpy().reshape(w[k].shape[0], -1)
            f = fd[k].reshape(x.shape[0], -1)
            d = (a.base * relative_steps(mode, k, f, w, median, mean[k])).astype(np.float32).astype(np.float64)
            q = np.rint(x / d[:, None])
            bits += Order0().bits(q.astype(np.int64))
            side += 0 if mode == "tensor" else 32 * x.shape[0]
            recon[k] = torch.from_numpy(q * d[:, None]).float().reshape(w[k].shape)
        exact = 32 * (params - sum(fd[k].size for k in quantized))
        m = search.judge(recon)
        rows.append({"mode": mode, "base_step": a.base, "bits_per_weight": (bits + side + exact) / params,
                     "side_bits_per_weight": side / params, "kl": m.loss, "kl_high": m.loss_high, "inputs": m.n})
        print(rows[-1], flush=True)
    result = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "machine": machine(),
              "model": MODEL, "judged_on": f"the {len(decide)} views of the calibration/search half (seed 0)",
              "rounding": "nearest", "rows": rows, "cpu_seconds": time.process_time() - start}
    save("channel-steps", result)
    return result


if __name__ == "__main__":
    main()
