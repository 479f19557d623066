"""A step per input column, or per classifier row: what could it buy on top of one step a tensor (#26 item 1)?

Automatic mode rounds each weight matrix on one step by GPTQ with act-order (zoocodec/tuning/calibrate.py): the
columns in decreasing diag(H) order, each column's rounding error fed back into the columns after it. Column j's
error in step units then weighs s^2 / u_jj^2 in the output error (u: the upper Cholesky factor of H^-1 in that
order; `rate_price`), so at high rate one step costs distortion in proportion to the arithmetic mean of
d_j = 1 / u_jj^2, and a step per column chosen for equal slope (s_j proportional to u_jj) to their geometric
mean. At equal output error a step per column saves 0.5 log2(AM(d) / GM(d)) bits a weight; this bench measures
that bound per matrix from each zoo model's calibration H (the product of the d_j is det H in any order, so
it is the gain over the best single step's ordering too), and subtracts a column step's side information at
8 bits a column (a log-step on a fine grid, coded: an optimistic price). Grouped convolutions (depthwise) have
one H per group and are left out, as are matrices of fewer than 8 columns.

The same bound for effnet-lite0's classifier with a step per output row, each row weighted as automatic mode
weights a causal LM's head rows (zoocodec.eval.lm.row_weights: the mean predicted probability of its class over
the task's calibration images, floored at 1/32 of the mean, on a 2^(1/2) grid): a row's logit error moves the
output KL in proportion to its class's probability. Rows are the sensitivity here, not H, so the bound is
0.5 log2(AM/GM) of the row weights.

    nice -n 10 python bench/bench_column_steps.py [--models minilm effnet-lite0]

Writes bench/results/column-steps-YYYY-MM-DD.json. No file is written with column steps: this is the bound
that decides whether building them (a format change) could pay.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench_common import machine, save, zoo_layer_inputs

SIDE_BITS = 8  # per column step


def gains(h: np.ndarray) -> tuple[float, float]:
    """(bits a weight a step per column saves at equal output error, high-rate bound; the same bound against
    the diagonal of H alone, which ignores the feedback) for one layer's d x d second moment H."""
    from zoocodec.tuning.calibrate import DAMP, prepare

    p = prepare(h, DAMP, act_order=True)
    d = 1.0 / np.diagonal(p.u[0]) ** 2
    diag = np.diagonal(p.h[0])
    bound = lambda x: 0.5 * (np.log2(x.mean()) - np.log2(x).mean())  # noqa: E731
    return float(bound(d)), float(bound(diag))


def model_rows(model: str) -> dict:
    start = time.process_time()
    w, cal, inputs = zoo_layer_inputs(model)
    rows, total, weighted = [], 0, {"gain": 0.0, "net": 0.0, "diag": 0.0}
    for name, li in inputs.items():
        if li.h.shape[0] != 1 or li.h.shape[-1] < 8:
            continue
        n, out_rows = w[name].numel(), w[name].shape[0]
        gain, diag = gains(li.h)
        net = gain - SIDE_BITS / out_rows
        rows.append({"tensor": name, "shape": list(w[name].shape), "gain": round(gain, 4), "side": SIDE_BITS / out_rows,
                     "net": round(net, 4), "diag_only": round(diag, 4)})
        total += n
        for key, v in (("gain", gain), ("net", net), ("diag", diag)):
            weighted[key] += n * v
    params = sum(v.numel() for v in w.values() if v.dtype.is_floating_point)
    return {"model": model, "calibration": cal.about, "matrices": len(rows), "weights_in_them": total,
            "weights": params,
            "gain_per_weight_of_them": weighted["gain"] / total, "net_per_weight_of_them": weighted["net"] / total,
            "diag_only_per_weight_of_them": weighted["diag"] / total,
            "net_per_weight_of_model": weighted["net"] / params, "rows": rows,
            "cpu_seconds": time.process_time() - start}


def classifier_rows(model: str, layer: str) -> dict:
    """The bound for a step per row of classifier `layer`, rows weighted by predicted probability."""
    import torch

    from zoocodec.eval.evaluate import evaluator, load_weights, tasks_of
    from zoocodec.eval.lm import row_weights
    from zoocodec.eval.models import build

    w = load_weights(model)
    task = tasks_of(model, None)[0]
    net = build(evaluator(model, task, None).arch, w).eval()
    x = torch.as_tensor(task.calibration())
    with torch.no_grad():
        p = torch.cat([torch.softmax(net(x[i:i + 32]).double(), -1) for i in range(0, len(x), 32)]).mean(0).numpy()
    r = row_weights(p, 2)
    gain = 0.5 * (np.log2(r.mean()) - np.log2(r).mean())
    mass = np.cumsum(np.sort(p)[::-1])
    params = sum(v.numel() for v in w.values() if v.dtype.is_floating_point)
    return {"model": model, "layer": layer, "calibration_inputs": len(x),
            "classes_holding_50_90_99pct": [int(np.searchsorted(mass, q)) + 1 for q in (0.5, 0.9, 0.99)],
            "gain_per_weight_of_it": float(gain), "gain_per_weight_of_model": float(gain * w[layer].numel() / params)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["minilm", "effnet-lite0"])
    a = p.parse_args(argv)
    out = {"machine": machine(), "side_bits_per_column": SIDE_BITS, "models": []}
    for m in a.models:
        r = model_rows(m)
        out["models"].append(r)
        print(f"{m}: {r['matrices']} matrices, {r['weights_in_them']:,} of {r['weights']:,} weights; a step per column "
              f"saves at most {r['gain_per_weight_of_them']:.3f} bits/weight of them ({r['net_per_weight_of_them']:.3f}"
              f" net of side information), {r['net_per_weight_of_model']:.3f} of the model; against diag(H) alone "
              f"{r['diag_only_per_weight_of_them']:.3f}", flush=True)
    if "effnet-lite0" in a.models:
        out["classifier_rows"] = r = classifier_rows("effnet-lite0", "_fc.weight")
        print(f"effnet-lite0 classifier rows by predicted probability: {r['classes_holding_50_90_99pct']} classes "
              f"hold 50/90/99% of the mass; at most {r['gain_per_weight_of_it']:.3f} bits/weight of the layer, "
              f"{r['gain_per_weight_of_model']:.3f} of the model", flush=True)
    print(save("column-steps", out))
    return out


if __name__ == "__main__":
    main()
