"""Automatic mode with data-aware rounding (GPTQ + bias correction) against nearest rounding and dq.

For each model and budget, automatic mode is run as bench/bench_head_to_head.py runs it (the
whole model as a dict of tensors, min_size 64, sensitivities measured once and shared),
once per configuration:
- `dq+ctx nearest`: the head-to-head's method (trellis quantization, its own levels): before;
- `uniform nearest`: the uniform grid, nearest rounding;
- `uniform gptq`: the same grid, indices chosen with calibration inputs (zoocodec.tuning.calibrate);
- `uniform gptq lam=L`: the same, rate-aware;
- `uniform gptq sequential`: the same, the final rounding against the layer inputs of the model
  quantized at the searched step (GPTQ's sequential order: layer by layer where the calibration runs in one
  batch, zoocodec.tuning.sequential; else one refresh);
- `auto ...`: automatic mode's own method and coder choice, as the head-to-head runs it; `few=nearest`
  keeps a layer seen on fewer calibration inputs than its size at nearest rounding (calibrate.FEW_DAMP None).
Every result is judged on the held-back half of the task's inputs (automatic mode's split)
by the pessimistic end of the loss's 95% interval; bits/weight are those of the written file.
NNCodec's bits/weight at each budget come from bench/results/head_to_head.json (interpolated
there, same judging; not rerun here), and `vs_nncodec` is NNCodec's size over ours.

    nice -n 10 python bench/bench_auto_rounding.py [--models fmnist-cnn] [--runs 1:uniform gptq,...] [--name N]

Writes bench/results/auto-rounding-YYYY-MM-DD.json (N-YYYY-MM-DD.json).
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import RESULTS, machine, save
from zoocodec.pipeline.core import load
from zoocodec.pipeline.modelio import to_torch
from zoocodec.tuning import calibrate
from zoocodec.tuning.auto import auto_compress

CONFIGS = {  # the most telling first: results are saved after every run. (method, rounding, lam, sequential)
    "auto": (None, "gptq", 0.0, False),  # as `zoocodec compress --target-loss` and the head-to-head run it
    "auto sequential": (None, "gptq", 0.0, True),
    # a layer seen on fewer inputs than its size (effnet-lite0's classifier) at nearest rounding, as before FEW_DAMP
    "auto few=nearest": (None, "gptq", 0.0, False, None),
    "auto sequential few=nearest": (None, "gptq", 0.0, True, None),
    "uniform gptq": ("uniform:coder=ctx", "gptq", 0.0, False),
    "uniform gptq sequential": ("uniform:coder=ctx", "gptq", 0.0, True),
    "dq+ctx nearest": ("dq:coder=ctx", "nearest", 0.0, False),
    "uniform gptq lam=0.1": ("uniform:coder=ctx", "gptq", 0.1, False),
    "uniform nearest": ("uniform:coder=ctx", "nearest", 0.0, False),
}
FEW_DAMP = calibrate.FEW_DAMP
MIN_SIZE = 64  # as bench/bench_head_to_head.py
RUNS = ("1:uniform gptq", "0.5:uniform gptq", "1:uniform gptq lam=0.1", "1:dq+ctx nearest", "0.5:dq+ctx nearest",
        "1:uniform nearest", "0.5:uniform gptq lam=0.1")


def nncodec_at(model: str, budget_pct: float) -> float | None:
    """NNCodec's interpolated bits/weight at `budget_pct` from the head-to-head's summary."""
    md = (RESULTS / "head_to_head.md").read_text()
    section = md.split(f"## {model}")[1] if f"## {model}" in md else ""
    m = re.search(rf"loss {budget_pct:.1f}%: zoocodec [\d.]+ bpw \([^)]*\) vs NNCodec ([\d.]+)", section)
    return float(m.group(1)) if m else None


def _read_sensitivities(path: Path | None) -> dict | None:
    if path is None or not path.exists():
        return None
    return {k: (np.array(v) if len(v) > 1 else v[0]) for k, v in json.loads(path.read_text()).items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="fmnist-cnn")
    p.add_argument("--runs", default=",".join(RUNS), help="BUDGET_PCT:CONFIG, comma-separated, in order")
    p.add_argument("--name", default="auto-rounding", help="results file: bench/results/NAME-DATE.json")
    p.add_argument("--sensitivities", type=Path,
                   help="a JSON file of the measured sensitivities: read where it exists, else written after the "
                        "first run (runs of one model in several invocations then measure them once)")
    args = p.parse_args()
    torch.set_num_threads(2)
    runs = [(float(r.split(":", 1)[0]), r.split(":", 1)[1]) for r in args.runs.split(",")]
    result = {"machine": machine(), "what": __doc__.split("\n\n")[0], "rows": []}
    previous = RESULTS / f"{args.name}-{datetime.date.today().isoformat()}.json"
    if previous.exists():  # resume: the rows of today's earlier run are kept, not rerun
        result["rows"] = json.loads(previous.read_text())["rows"]
    for model in args.models.split(","):
        tensors = {t.name: to_torch(t.array, t.dtype).clone() for t in load(model).tensors()}
        params = sum(t.numel() for t in tensors.values())
        sens = _read_sensitivities(args.sensitivities)
        for budget, label in runs:
            if any((r["model"], r["budget_pct"], r["config"]) == (model, budget, label) for r in result["rows"]):
                continue
            method, rounding, lam, sequential, *few = CONFIGS[label]
            calibrate.FEW_DAMP = few[0] if few else FEW_DAMP
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "auto.zc"
                start = time.perf_counter()
                r = auto_compress(tensors, path, budget / 100, reference=model, method=method, min_size=MIN_SIZE,
                                  sensitivities=sens, rounding=rounding, rate_lam=lam, sequential=sequential,
                                  log=lambda msg: print("   ", msg, flush=True))
                seconds = time.perf_counter() - start
                if sens is None:
                    import zoocodec

                    with zoocodec.Archive(path) as a:
                        stored = a.header["meta"]["auto"]["sensitivities"]
                    sens = {k: (np.array(v) if len(v) > 1 else v[0]) for k, v in stored.items()}
                    if args.sensitivities is not None:
                        args.sensitivities.write_text(json.dumps(stored))
                bpw = 8 * path.stat().st_size / params
            nn = nncodec_at(model, budget)
            row = {"model": model, "budget_pct": budget, "config": label, "method": r.method,
                   "rounding": r.rounding, "rate_lam": lam, "sequential": sequential, "few_damp": calibrate.FEW_DAMP,
                   "bits_per_weight": bpw,
                   "file_bytes": r.report.file_bytes, "metric": r.metric, "value": r.value,
                   "baseline": r.baseline, "loss_pct": 100 * r.loss, "loss_high_pct": 100 * r.loss_high,
                   "inputs": r.inputs, "within": r.within, "base_step": r.base_step, "strength": r.strength,
                   "seconds": seconds,
                   "nncodec_bpw": nn, "vs_nncodec": nn / bpw if nn else None}
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            save(args.name, result)
    print(save(args.name, result))


if __name__ == "__main__":
    main()
