"""GPTQ's dampening per layer kind, judged layer by layer on inputs the rounding never saw.

Data-aware rounding (zoocodec.tuning.calibrate) rounds each layer against H = E[x x^T] of its inputs on the
calibration inputs (effnet-lite0: 256 crops of three photos), dampened by `damp` x its mean diagonal. Too little
dampening fits the error feedback to those three photos. End to end (bench_h2h_levers.py) one plan's KL moves by
+-15% with any other rounding, so a lever of 1-2% needs many plans; here each layer's output error
E||(W - W_hat) x||^2 is measured instead on its inputs from the calibration/search half of the task's photos
(never the held-back half), for each dampening, over nearest rounding's. Per layer kind (calibrate.kind_of:
dense, grouped, few) the ratios are averaged, weighted by each layer's predicted share of the loss (its
sensitivity x nearest rounding's squared weight error). `--calibrations` compares the images the layer inputs
are measured on (bench_h2h_levers.py's `cal=` sources: photos, distilled from the model's BatchNorm statistics,
mixed), each at every dampening.

    nice -n 10 python bench/bench_h2h_damping.py --sensitivities sens.json [--base 0.0057] [--strength 0.5]
        [--damps 0.001,0.003,0.01,0.03,0.1,0.3,1] [--lams 0.02,0.05,0.1] [--calibrations photos,distilled,mixed]

Writes bench/results/h2h-damping-YYYY-MM-DD[-T].json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import machine, save
from bench_h2h_levers import calibration_sources, search_inputs
from zoocodec.eval import calibration as C
from zoocodec.eval.evaluate import evaluator, load_weights, tasks_of
from zoocodec.methods import parse_spec
from zoocodec.tuning.allocate import allocate
from zoocodec.tuning.auto import _flatten, split
from zoocodec.tuning.calibrate import DAMP, FEW_DAMP, collect, gptq, kind_of, output_error

MIN_SIZE = 64  # as the head-to-head


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="effnet-lite0")
    p.add_argument("--sensitivities", type=Path, required=True, help="JSON of measured sensitivities")
    p.add_argument("--strength", type=float, default=0.5)
    p.add_argument("--base", type=float, default=0.0057)
    p.add_argument("--damps", default="0.001,0.003,0.01,0.03,0.1,0.3,1")
    p.add_argument("--lams", default="",
                   help="also rate-aware rounding at these lam (GPTQ's dampening): each layer's order-0 bits and "
                        "unseen output error against lam 0, as bits/weight at equal error (error ~ step^2)")
    p.add_argument("--tag", default="", help="results file suffix")
    p.add_argument("--calibrations", default="photos",
                   help="comma-separated images the layer inputs are measured on: photos, distilled, mixed, "
                        "`mixed share=S` (bench_h2h_levers.py's cal= sources)")
    p.add_argument("--distilled", type=int, default=64, help="images distilled from the BN statistics")
    a = p.parse_args()
    torch.set_num_threads(2)
    damps = [float(d) for d in a.damps.split(",")]
    lams = [float(x) for x in a.lams.split(",") if x]
    w = load_weights(a.model)
    t = tasks_of(a.model)[0]
    whole = evaluator(a.model, t)
    decide, _held = split(len(whole.ref_out), whole.compare(None)[t.primary].groups)
    sens = {k: (np.array(v) if len(v) > 1 else v[0]) for k, v in json.loads(a.sensitivities.read_text()).items()
            if np.isfinite(v).all()}  # as automatic mode: a tensor whose noise broke the model stays lossless
    plan = allocate(w, sensitivities=_flatten(sens, a.strength), base_step=a.base, method=parse_spec("uniform"),
                    min_size=MIN_SIZE)
    cal = C.for_zoo(whole.arch, whole.folder, t, w)
    t0 = time.perf_counter()
    photos = collect(cal.net, cal.run, cal.names)
    seconds = {"photos": time.perf_counter() - t0}
    labels = a.calibrations.split(",")
    sources = calibration_sources([f"gptq cal={c}" if c != "photos" else "gptq" for c in labels], cal, w,
                                  a.distilled, photos, seconds)
    sources = {c: sources[c] for c in labels}
    unseen = search_inputs(whole, t, cal, w, decide)
    layers = []
    for name, li in photos.items():
        spec = plan.get(name)
        if spec is None or spec.step is None or name not in unseen:
            continue
        w2 = w[name].detach().to(torch.float64).reshape(w[name].shape[0], -1).numpy()
        near = np.rint(w2 / spec.step) * spec.step
        base_err = output_error(w2, near, unseen[name])
        row = {"name": name, "kind": kind_of(li), "weights": int(w2.size), "inputs_seen": li.count,
               "share": float(np.mean(sens[name]) * np.sum((w2 - near) ** 2)), "unseen": {}, "fitted": {}}
        for c, fitted in sources.items():
            row["unseen"][c], row["fitted"][c] = {}, {}
            for d in damps:
                hat = gptq(w2, np.array([spec.step]), fitted[name].h, d) * spec.step
                row["unseen"][c][str(d)] = output_error(w2, hat, unseen[name]) / base_err
                row["fitted"][c][str(d)] = output_error(w2, hat, fitted[name]) / output_error(w2, near, fitted[name])
        if lams:
            damp = FEW_DAMP if kind_of(li) == "few" else DAMP
            q0 = gptq(w2, np.array([spec.step]), li.h, damp)
            err0, bits0 = output_error(w2, q0 * spec.step, unseen[name]), _entropy(q0)
            row["lam_bits_at_equal_error"] = {}
            for lam in lams:
                q = gptq(w2, np.array([spec.step]), li.h, damp, lam)
                # bits/weight saved minus what a finer step would cost to bring the error back (error ~ step^2)
                row["lam_bits_at_equal_error"][str(lam)] = float(
                    _entropy(q) - bits0 + 0.5 * np.log2(output_error(w2, q * spec.step, unseen[name]) / err0))
        layers.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    total = sum(v.numel() for v in w.values() if v.is_floating_point())
    for kind in sorted({r["kind"] for r in layers}):
        rows = [r for r in layers if r["kind"] == kind]
        share = np.array([r["share"] for r in rows])
        summary[kind] = {"layers": len(rows), "share_of_loss": float(share.sum() / sum(r["share"] for r in layers))}
        for key in ("unseen", "fitted"):
            summary[kind][f"{key}_over_nearest"] = {
                c: {str(d): float(np.average([r[key][c][str(d)] for r in rows], weights=share)) for d in damps}
                for c in sources}
        if lams:
            n = np.array([r["weights"] for r in rows])
            summary[kind]["lam_bits_at_equal_error"] = {  # over the whole model's weights
                str(lam): float(sum(n * [r["lam_bits_at_equal_error"][str(lam)] for r in rows]) / total)
                for lam in lams}
        print(kind, json.dumps(summary[kind]), flush=True)
    save("h2h-damping", {"machine": machine(), "what": __doc__.split("\n\n")[0], "model": a.model,
                         "strength": a.strength, "base": a.base, "damps": damps, "calibrations": labels,
                         "distilled": a.distilled, "calibration_seconds": seconds,
                         "unseen_inputs": f"the {len(decide)} calibration/search "
                                          f"{'documents' if t.kind == 'text' else 'views'} of automatic mode's split "
                                          "(seed 0)",
                         "layers": layers, "summary": summary}, a.tag)


def _entropy(q: np.ndarray) -> float:
    """Order-0 entropy of the symbols, bits per symbol."""
    _, counts = np.unique(q, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


if __name__ == "__main__":
    main()
