"""GPTQ inside min-max groups, per tensor, on smollm2-135m: output error held against other text.

For the 7 matrices of decoder layers 2 and 15, H = E[x x^T] of each layer's inputs is measured
on three sets of calibration windows (zoocodec.eval.lm.calibration, original model):
8 windows of gensim's lee.cor (A, the judge), 8 and 32 windows of the 2012 convention speeches
(B8, C32: what the rounding sees). Each tensor is rounded by nearest rounding and by GPTQ
(zoocodec.tuning.calibrate.gptq for one step at 0.4 of the tensor's RMS, gptq.round_groups for
min-max groups with zero points) against B8 or C32, and its relative output error
||(W - W_hat) x||^2 / ||W x||^2 is read on A. Also checked: the method, handed the grouped values,
returns them bit for bit. Never the judged lee_background.cor.
    python bench/bench_gptq_groups.py   # writes bench/results/gptq_groups-<date>.json
"""
from __future__ import annotations

import json

import numpy as np
import torch

from bench_common import machine, save

LAYERS = ("layers.2.", "layers.15.")
GROUPS = ((3, 32), (3, 64), (4, 64))


def main() -> None:
    from zoocodec.eval import data, lm
    from zoocodec.eval.calibration import _names
    from zoocodec.eval.evaluate import evaluator, load_weights
    from zoocodec.eval.tasks import TASKS
    from zoocodec.methods import parse_spec
    from zoocodec.pipeline.modelio import to_tensordata
    from zoocodec.tuning.calibrate import collect, factors, gptq, output_error
    from zoocodec.tuning.gptq import round_groups

    w = load_weights("smollm2-135m")
    ev = evaluator("smollm2-135m", TASKS["ppl"], 2)
    texts = data.lm_calibration()

    def inputs(txts, count):
        net, run, _ = lm.calibration(ev.folder, txts, w, count)
        return collect(net, run, {k: v for k, v in _names(net, w).items() if any(s in v for s in LAYERS)})
    judge, seen = inputs(texts[:50], 8), {"B8": inputs(texts[50:], 8), "C32": inputs(texts[50:], 32)}
    rows = []
    for name in sorted(judge):
        w2 = w[name].double().numpy()
        a = judge[name]
        energy = output_error(w2, 0 * w2, a)
        d = float(np.float32(np.sqrt((w2**2).mean()) * 0.4))
        row = {"tensor": name, "step": d, "nearest": output_error(w2, np.rint(w2 / d) * d, a) / energy}
        for label, measured in seen.items():
            row[f"gptq {label}"] = output_error(w2, gptq(w2, np.array([d]), measured[name].h) * d, a) / energy
        for bits, g in GROUPS:
            spec = parse_spec(f"uniform:bits={bits},group={g},zero=true")
            key = f"{bits}-bit groups of {g}"
            near = np.asarray(spec.quantize(to_tensordata(name, w[name])).recon, np.float64)
            ours = round_groups(w2, spec, lambda: factors(seen["B8"][name].h))
            back = np.asarray(spec.quantize(to_tensordata(name, torch.from_numpy(ours).float())).recon, np.float64)
            row[f"{key}: nearest"] = output_error(w2, near, a) / energy
            row[f"{key}: gptq B8"] = output_error(w2, ours, a) / energy
            row[f"{key}: exact"] = bool(np.array_equal(back, ours.astype(np.float32).astype(np.float64)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"machine": machine(("numpy", "torch", "transformers")), "tensors": rows,
           "mean gptq/nearest, one step": {k: float(np.mean([r[f"gptq {k}"] / r["nearest"] for r in rows]))
                                            for k in seen},
           "mean gptq/nearest, groups (B8)": {f"{b}-bit groups of {g}": float(np.mean(
               [r[f"{b}-bit groups of {g}: gptq B8"] / r[f"{b}-bit groups of {g}: nearest"] for r in rows]))
               for b, g in GROUPS}}
    path = save("gptq_groups", out)
    print(f"wrote {path}: {out['mean gptq/nearest, one step']} {out['mean gptq/nearest, groups (B8)']}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
