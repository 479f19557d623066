"""ONNX data-aware rounding at fixed plans: the same plan with nearest rounding and with GPTQ on layer inputs
captured with onnxruntime (zoocodec.eval.onnxcapture), judged on inputs calibration never saw.

The models are bench/bench_outside_zoo_nets.py's ResNet-style CNN and ViT exported to ONNX as
bench_outside_zoo.py --onnx exports them. As automatic mode would: the 1,000 Fashion-MNIST train images are split
(seed 0) into calibration/search and held-back halves; sensitivities and layer inputs come from the first half;
every plan (automatic mode's allocation at strength 0.5, base steps spread around the one where nearest rounding
reaches --target KL on the calibration half) is judged by output KL on 5,000 test images. Per plan and rounding:
bits/weight (the entropy-model price of the planned tensors, plus the 1-D tensors kept lossless), KL with its 95%
interval, and the per-image paired KL difference against nearest rounding (mean and standard error). Sizes at
equal KL: for each plan of a configuration whose KL lies within nearest rounding's range, nearest rounding's
bits/weight at that KL (linear in log KL between its two neighbouring plans) over the plan's (mean and SE over
the plans). Configurations:
- `nearest`: the method's own rounding;
- `gptq`: error feedback (act-order, two descent sweeps, bias correction) against the original graph's inputs;
- `sequential`: each topological group of layers rounded against what the rounded groups before it give
  (measured once, at the middle plan, as automatic mode's `sequential` does).

    nice -n 5 python bench/bench_outside_zoo_onnx.py [--models resnet vit] [--plans 9] [--span 0.7 2.4]
        [--tag 2026-12-05l]

Writes bench/results/outside_zoo-onnx-plans-<tag>.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import machine
from bench_outside_zoo import CALIB, JUDGED, MIN_SIZE, export_onnx, images
from zoocodec.eval import calibration as C
from zoocodec.eval.anymodel import OnnxRunner, PairEvaluator
from zoocodec.eval.evaluate import load_weights, metric_row
from zoocodec.methods import parse_spec
from zoocodec.tuning.allocate import allocate, plan_bits
from zoocodec.tuning.auto import _flatten, _one_d_where_it_pays, reconstruct, split
from zoocodec.tuning.sensitivity import measure, quantized_names

RESULTS = Path(__file__).resolve().parent / "results"
STRENGTH = 0.5
SPAN = (0.7, 2.4)  # plans at base steps from SPAN[0] to SPAN[1] x the base found (geometric): GPTQ's equal-KL steps
# (vit; resnet's GPTQ KL is 0.03x nearest's at the same plan: --span 0.5 8 reaches its equal-KL steps)


def planner(w: dict, sens: dict, min_size: int = MIN_SIZE, strength: float = STRENGTH, rows: dict | None = None):
    """(the tensors with finite sensitivities; base step -> automatic mode's uniform plan of them at `strength`,
    1-D tensors lossy where it pays; the bytes of the 1-D tensors that plan keeps exact, filled in as it runs).
    `rows`: word-embedding table -> a weight per row, which then gets a step per row as automatic mode gives it
    (its mean sensitivity times the weight, written `rdoq:lam=0,iters=0`)."""
    usable = {k for k, v in sens.items() if np.isfinite(np.asarray(v, dtype=np.float64)).all()}
    exact: dict[str, int] = {}
    rows = rows or {}
    spec = parse_spec("uniform")
    sens = {**sens, **{k: float(np.mean(sens[k])) * r for k, r in rows.items()}}
    methods = {k: dataclasses.replace(parse_spec("rdoq:lam=0,iters=0"), coder=spec.coder) for k in rows}

    def plan_at(base: float) -> dict:
        plan = allocate(w, sensitivities=_flatten(sens, strength), base_step=base, method=spec, min_size=min_size,
                        methods=methods)
        return _one_d_where_it_pays(w, {k: v for k, v in plan.items() if k in usable}, exact)
    return usable, plan_at, exact


def run_model(name: str, work: Path, plans: int, target: float, log, span=SPAN) -> dict:
    onnx = export_onnx(name, work / f"{name}.onnx")
    w = load_weights(onnx)
    floats = sum(v.numel() for v in w.values() if v.is_floating_point())
    calib = images("train", CALIB, 0)
    decide, _held = split(len(calib))
    np.save(work / "cal.npy", calib[decide])
    np.save(work / "judged.npy", images("test", JUDGED, 0))
    cal_ev = PairEvaluator(onnx, work / "cal.npy", None, "logits")
    ev = PairEvaluator(onnx, work / "judged.npy", None, "logits")
    t0 = time.perf_counter()
    sens = measure(cal_ev, w, quantized_names(w, MIN_SIZE))
    sens_s = time.perf_counter() - t0
    _usable, plan_at, exact = planner(w, sens)

    def kl_on(e, weights) -> float:
        return float(e.compare(weights)["kl"].x.mean())

    # the base step where nearest rounding's KL on the calibration half reaches the target (KL ~ step^2)
    base = 0.05
    for _ in range(4):
        base *= math.sqrt(target / kl_on(cal_ev, reconstruct(dict(w), plan_at(base))))
    log(f"{name}: base step {base:.4g} (nearest at KL {target:g} on the calibration half)")
    cal = C.for_runner(OnnxRunner(onnx, work / "cal.npy", None), w, f"the {len(decide)} calibration/search images")
    t0 = time.perf_counter()
    original = cal.measure(w)
    capture_s = time.perf_counter() - t0
    rounder = cal.rounder(original)
    factors = np.geomspace(span[0], span[1], plans)
    t0 = time.perf_counter()
    seq = cal.sequential(w, plan_at(base * factors[plans // 2]), rounder, original)
    seq_s = time.perf_counter() - t0
    configs = {"nearest": None, "gptq": rounder,
               "sequential": rounder.on(seq)}
    rows, per_image = [], {}
    for f in factors:
        plan = plan_at(base * f)
        for label, r in configs.items():
            t0 = time.perf_counter()
            targets = r.targets(w, plan) if r is not None else {}
            paired = ev.compare(reconstruct({**w, **targets}, plan))["kl"]
            m = metric_row("", "kl", "kl", paired, True, True)
            bits = plan_bits({**w, **targets}, plan) + 8 * sum(n for k, n in exact.items() if k not in plan)
            bpw = bits / floats
            per_image[(label, f)] = paired.x
            row = {"config": label, "base_step": base * f, "bits_per_weight": bpw, "kl": m.value,
                   "kl_low": m.loss_low, "kl_high": m.loss_high,
                   "seconds": round(time.perf_counter() - t0, 2)}
            if label != "nearest":
                d = paired.x - per_image[("nearest", f)]
                row["kl_minus_nearest"] = float(d.mean())
                row["kl_minus_nearest_se"] = float(d.std(ddof=1) / math.sqrt(len(d)))
            rows.append(row)
            log(f"{name}: {json.dumps(row)}")
    summary = {}
    near = sorted((r["kl"], r["bits_per_weight"]) for r in rows if r["config"] == "nearest")
    lk, nb = np.log([k for k, _ in near]), np.array([b for _, b in near])
    kl0 = np.array([r["kl"] for r in rows if r["config"] == "nearest"])
    for label in configs:
        mine = [r for r in rows if r["config"] == label]
        inside = [r for r in mine if lk[0] <= math.log(r["kl"]) <= lk[-1]]
        ratio = np.array([np.interp(math.log(r["kl"]), lk, nb) / r["bits_per_weight"] for r in inside])
        kl = np.array([r["kl"] for r in mine])
        summary[label] = {"kl_over_nearest_same_plan": float(np.exp(np.mean(np.log(kl / kl0)))),
                          "plans_at_equal_kl": len(inside),
                          "nearest_bits_over_these": float(ratio.mean()) if len(ratio) else None,
                          "se": float(ratio.std(ddof=1) / math.sqrt(len(ratio))) if len(ratio) > 1 else None,
                          "per_plan": [round(float(x), 4) for x in ratio]}
        log(f"{name}: {label} {summary[label]}")
    return {"model": name, "params": floats, "base": base, "plans": plans, "span": list(span), "target_kl": target,
            "strength": STRENGTH, "layers_rounded": len(original), "nearest_initializers": cal.skipped,
            "seconds": {"sensitivities": sens_s, "capture": capture_s, "sequential_capture": seq_s},
            "calibration": f"{len(decide)} Fashion-MNIST train images (the calibration/search half of seed 0's split)",
            "judged_on": f"{JUDGED} Fashion-MNIST test images", "rows": rows, "summary": summary}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet", "vit"])
    p.add_argument("--plans", type=int, default=9)
    p.add_argument("--target", type=float, default=0.01, help="KL (nats) of nearest rounding at the middle plans")
    p.add_argument("--span", type=float, nargs=2, default=SPAN, help="plans from LO to HI x the base step")
    p.add_argument("--tag", default=time.strftime("%Y-%m-%d"))
    a = p.parse_args()
    torch.set_num_threads(2)

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    out = RESULTS / f"outside_zoo-onnx-plans-{a.tag}.json"
    results = {"what": __doc__.split("\n\n")[0], "machine": machine(), "models": []}
    with tempfile.TemporaryDirectory(prefix="onnx-plans-") as d:
        for name in a.models:
            results["models"].append(run_model(name, Path(d), a.plans, a.target, log, a.span))
            out.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
