"""Fine-tuning's own gain: automatic mode at one budget with and without trained quantization.

For each model and budget, automatic mode runs as bench/bench_head_to_head.py runs it (the
whole model as a dict of tensors, min_size 64, its own method, rounding and coder choice,
sensitivities measured once and shared), twice: as it is, and with `finetune=True`
(zoocodec.tuning.finetune: larger steps tried with their steps, symbols and lossless 1-D
tensors fine-tuned against the original's outputs on the calibration inputs; kept only where
smaller and passing on the calibration/search part). Both files are judged on the same
held-back half of the task's inputs, by the pessimistic end of the loss's 95% interval;
bits/weight are those of the written file. `gain` is bits/weight without over with. No peer
codec: this measures fine-tuning alone (NNCodec's head-to-head is bench/bench_head_to_head.py).

    nice -n 10 python bench/bench_finetune.py [--models mnist-cnn,fmnist-cnn] [--budgets 0.5,1] [--steps N]

Writes bench/results/finetune-YYYY-MM-DD.json (resumes today's file: rows already there are kept).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import zoocodec
from bench_common import RESULTS, machine, save
from zoocodec.pipeline.core import load
from zoocodec.pipeline.modelio import to_torch
from zoocodec.tuning.auto import FINETUNE_SECONDS, auto_compress

MIN_SIZE = 64  # as bench/bench_head_to_head.py
NAME = "finetune"


def run(tensors: dict, params: int, model: str, budget: float, finetune: bool, sens, steps: int | None,
        seconds_cap: float) -> tuple:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "auto.zc"
        start = time.perf_counter()
        r = auto_compress(tensors, path, budget / 100, reference=model, min_size=MIN_SIZE, sensitivities=sens,
                          finetune=finetune, finetune_steps=steps, finetune_seconds=seconds_cap,
                          log=lambda msg: print("   ", msg, flush=True))
        seconds = time.perf_counter() - start
        with zoocodec.Archive(path) as a:
            auto = a.header["meta"]["auto"]
        bpw = 8 * path.stat().st_size / params
    v = auto["verified"]
    row = {"model": model, "budget_pct": budget, "finetune": finetune, "method": r.method, "rounding": r.rounding,
           "bits_per_weight": bpw, "file_bytes": r.report.file_bytes, "metric": r.metric, "value": r.value,
           "baseline": r.baseline, "loss_pct": 100 * r.loss, "loss_low_pct": 100 * v["loss_low"],
           "loss_high_pct": 100 * r.loss_high, "held_back_inputs": r.inputs, "within": r.within,
           "base_step": r.base_step, "strength": r.strength, "seconds": seconds,
           "load_average": os.getloadavg()[0]}
    if "finetune" in auto:
        ft = auto["finetune"]
        row["finetune_kept"] = ft["kept"]
        row["finetune_seconds"] = ft["seconds"]
        row["finetune_tries"] = [{k: t[k] for k in ("base_step", "loss", "loss_high", "with_room", "bits", "steps",
                                                     "seconds", "loss_before", "loss_after", "symbols_moved")}
                                 for t in ft["tries"]]
    return row, auto["sensitivities"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="mnist-cnn,fmnist-cnn")
    p.add_argument("--budgets", default="1,0.5", help="loss budgets in percent, comma-separated")
    p.add_argument("--steps", type=int, default=None, help="fine-tuning's optimiser steps per try (default: its own)")
    p.add_argument("--seconds", type=float, default=FINETUNE_SECONDS, help="fine-tuning's time in all, per run")
    args = p.parse_args()
    torch.set_num_threads(2)
    result = {"machine": machine(), "what": __doc__.split("\n\n")[0], "rows": [], "pairs": []}
    previous = RESULTS / f"{NAME}-{datetime.date.today().isoformat()}.json"
    if previous.exists():
        result = json.loads(previous.read_text()) | {"machine": result["machine"]}
    for model in args.models.split(","):
        tensors = {t.name: to_torch(t.array, t.dtype).clone() for t in load(model).tensors()}
        params = sum(t.numel() for t in tensors.values())
        sens = None
        for budget in (float(b) for b in args.budgets.split(",")):
            rows = {}
            for finetune in (False, True):
                done = [r for r in result["rows"] if (r["model"], r["budget_pct"], r["finetune"]) ==
                        (model, budget, finetune)]
                if done:
                    rows[finetune] = done[0]
                    continue
                row, stored = run(tensors, params, model, budget, finetune, sens, args.steps, args.seconds)
                if sens is None:
                    sens = {k: (np.array(v) if len(v) > 1 else v[0]) for k, v in stored.items()}
                rows[finetune] = row
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
                save(NAME, result)
            a, b = rows[False], rows[True]
            pair = {"model": model, "budget_pct": budget, "bpw_without": a["bits_per_weight"],
                    "bpw_with": b["bits_per_weight"], "gain": a["bits_per_weight"] / b["bits_per_weight"],
                    "held_back_loss_without_pct": [a["loss_low_pct"], a["loss_pct"], a["loss_high_pct"]],
                    "held_back_loss_with_pct": [b["loss_low_pct"], b["loss_pct"], b["loss_high_pct"]],
                    "both_within": a["within"] and b["within"], "kept": b.get("finetune_kept"),
                    "seconds_without": a["seconds"], "seconds_with": b["seconds"]}
            result["pairs"] = [q for q in result["pairs"] if (q["model"], q["budget_pct"]) != (model, budget)]
            result["pairs"].append(pair)
            print(json.dumps(pair), flush=True)
            save(NAME, result)
    print(save(NAME, result))


if __name__ == "__main__":
    main()
