"""Accuracy against size on the zoo: baseline, uniform 8/6/4 bits, automatic mode at 0.5% and 1%.

For each model, on its default task (the first of its zoo tasks): the baseline metric and
the time of one evaluation; per-channel min-max uniform quantization at 8, 6 and 4 bits
(the int8/int4 a user expects) and automatic mode (measured sensitivities, one Lagrangian
slope, base step searched on the metric) at 0.5% and 1% loss, each with its compression
ratio and bits/weight. The peer of automatic mode is uniform quantization measured in the
same run; `vs_uniform` is the ratio of automatic mode's size to the smallest uniform
point that stays within the same budget. `sensitivity_check` compares the fidelity loss the
sensitivities predict (sum of s_t x squared error) with the one measured, for uniform 8 and
4 bits and the 1% plan.

    nice -n 10 python bench/bench_eval.py [--quick] [--models mnist-cnn,minilm]

One JSON per model in bench/results/eval-<model>.json (machine info included).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import zoocodec
from bench_common import machine as _machine
from zoocodec.eval.evaluate import evaluator, load_weights, tasks_of
from zoocodec.methods import spec_from_dict
from zoocodec.tuning.auto import auto_compress, reconstruct
from zoocodec.tuning.sensitivity import embedding_groups, measure, predict, quantized_names

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("mnist-cnn", "fmnist-cnn", "effnet-lite0", "minilm")
BUDGETS = (0.005, 0.01)


def machine() -> dict:
    return {**_machine(), "torch_threads": torch.get_num_threads()}


def bench_model(name: str, tmp: Path, save) -> dict:
    """The model's row; `save(row)` is called after every point, so a long run leaves partial results."""
    task = tasks_of(name)[0]
    t0 = time.perf_counter()
    full = evaluator(name, task)
    weights = load_weights(name)
    row = {"model": name, "task": task.name, "metric": task.primary, "baseline": full.baseline,
           "baseline_seconds": round(time.perf_counter() - t0, 2), "points": [], "complete": False}
    print(f"{name}: {task.name} {full.baseline}", flush=True)

    for bits in (8, 6, 4):
        out = tmp / f"{name}-u{bits}.zc"
        rep = zoocodec.compress(name, out, f"uniform:bits={bits}")
        decoded = load_weights(out)
        t1 = time.perf_counter()
        scores = full.score(decoded)
        row.setdefault("eval_seconds", round(time.perf_counter() - t1, 2))  # one evaluation on all inputs
        row["points"].append({"setting": f"uniform:bits={bits}", "ratio": rep.ratio,
                              "bits_per_weight": rep.bits_per_weight, "value": scores[task.primary],
                              "loss": full.loss(scores), "metrics": scores})
        print(f"  uniform {bits} bits: ratio {rep.ratio:.2f}x, {task.primary} {scores[task.primary]:.5f}", flush=True)
        save(row)

    t2 = time.perf_counter()
    sens_ev = evaluator(name, task, task.sensitivity_limit)
    sens = measure(sens_ev, weights, quantized_names(weights), groups=embedding_groups(weights))
    row["sensitivity_seconds"] = round(time.perf_counter() - t2, 1)
    row["sensitivities"] = {k: np.atleast_1d(v).tolist() for k, v in sens.items()}
    for budget in BUDGETS:
        out = tmp / f"{name}-auto{budget}.zc"
        r = auto_compress(name, out, budget, sensitivities=sens)
        uniform_ok = [p for p in row["points"] if p["setting"].startswith("uniform") and p["loss"] <= budget]
        best_uniform = max((p["ratio"] for p in uniform_ok), default=None)
        row["points"].append({"setting": f"auto:{100 * budget:g}%", "ratio": r.report.ratio,
                              "bits_per_weight": r.report.bits_per_weight, "value": r.value, "loss": r.loss,
                              "base_step": r.base_step, "search_steps": len(r.search), "seconds": round(r.seconds, 1),
                              "vs_uniform": None if best_uniform is None else r.report.ratio / best_uniform})
        print(f"  auto {100 * budget:g}%: ratio {r.report.ratio:.2f}x, {task.primary} {r.value:.5f}, "
              f"loss {100 * r.loss:.3f}%, {r.seconds:.0f} s", flush=True)
        save(row)
    # do the sensitivities predict the fidelity loss (on their own inputs) of real quantizations?
    row["sensitivity_check"] = []
    for setting, file in (("uniform:bits=8", "u8"), ("uniform:bits=4", "u4"), ("auto:1%", f"auto{max(BUDGETS)}")):
        with zoocodec.Archive(tmp / f"{name}-{file}.zc") as a:
            plan = {e["name"]: spec_from_dict(e["method"]) for e in a.header["tensors"] if e["name"] in sens}
        recon = reconstruct(weights, plan)
        row["sensitivity_check"].append({
            "plan": setting, "fidelity_loss": "kl" if task.kind == "image" else "1 - mean cosine",
            "predicted": predict(sens, weights, recon),
            "measured": sens_ev.task.distortion(sens_ev.outputs(recon), sens_ev.ref_out)})
    row["complete"] = True
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="mnist-cnn only")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    models = ["mnist-cnn"] if args.quick else args.models.split(",")
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            start, info = time.perf_counter(), machine()
            path = RESULTS / f"eval-{name}{'-quick' if args.quick else ''}.json"

            def save(row: dict) -> None:
                fd, tmp_json = tempfile.mkstemp(dir=RESULTS, suffix=".tmp")
                with os.fdopen(fd, "w") as f:
                    json.dump({"machine": info, **row, "seconds": round(time.perf_counter() - start, 1)}, f, indent=2)
                zoocodec.fsutil.publish(tmp_json, path)

            save(bench_model(name, Path(tmp), save))
            print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
