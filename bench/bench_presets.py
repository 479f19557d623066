"""The named presets (`compress --preset`) on every zoo model: ratio, bits/weight, task loss.

For each model and preset: compress with the preset's options (as the CLI does), then
evaluate the file on the model's first zoo task next to the uncompressed original in the
same process (primary metric, its loss as a fraction of the baseline with the 95% interval).
The peer is the default (`near-lossless`, uniform 8 bits per output channel) measured in
the same run: `size_vs_default` is each preset's file size over the default's.

    nice -n 10 python bench/bench_presets.py [--models mnist-cnn,minilm] [--name presets]

Writes bench/results/NAME-DATE.json (machine info included) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import zoocodec
from bench_common import machine, save
from zoocodec.catalog import PRESETS
from zoocodec.eval import evaluate
from zoocodec.eval.evaluate import tasks_of
from zoocodec.tuning.allocate import allocate

MODELS = ("mnist-cnn", "fmnist-cnn", "effnet-lite0", "minilm")


def point(model: str, preset: str, tmp: Path) -> dict:
    options = PRESETS[preset][0]
    start = time.perf_counter()
    plan = (
        allocate(model, target_bpw=options["target_bpw"], method=options["method"]) if "target_bpw" in options else None
    )
    out = tmp / f"{model}-{preset}.zc"
    rep = zoocodec.compress(model, out, options["method"], plan=plan)
    seconds = time.perf_counter() - start
    task = tasks_of(model)[0]
    m = next(m for m in evaluate(out, task.name) if m.primary)
    return {"model": model, "preset": preset, "task": task.name, "metric": m.metric, "ratio": rep.ratio,
            "bits_per_weight": rep.bits_per_weight, "file_bytes": rep.file_bytes, "value": m.value,
            "baseline": m.baseline, "loss": m.loss, "loss_low": m.loss_low, "loss_high": m.loss_high, "inputs": m.n,
            "compress_seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--name", default="presets", help="results file name (bench/results/NAME-DATE.json)")
    args = ap.parse_args()
    data = {"machine": machine(), "presets": {k: {"options": o, "about": a} for k, (o, a) in PRESETS.items()},
            "points": []}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for preset in PRESETS:
                p = point(model, preset, Path(tmp))
                data["points"].append(p)
                print(
                    f"{model} {preset}: {p['ratio']:.2f}x, {p['bits_per_weight']:.3f} bits/weight, "
                    f"{p['metric']} {p['value']:.5f} vs {p['baseline']:.5f} (loss {100 * p['loss']:.2f}%)",
                    flush=True,
                )
                save(args.name, data)
    for p in data["points"]:
        default = next(q for q in data["points"] if q["model"] == p["model"] and q["preset"] == "near-lossless")
        p["size_vs_default"] = p["file_bytes"] / default["file_bytes"]
    print(f"wrote {save(args.name, data)}")
    print("| model (task, metric) | " + " | ".join(PRESETS) + " |")
    print("| --- |" + " --- |" * len(PRESETS))
    for model in dict.fromkeys(p["model"] for p in data["points"]):
        row = [p for p in data["points"] if p["model"] == model]
        print(f"| {model} ({row[0]['task']}, {row[0]['metric']}) | " + " | ".join(
            f"{p['ratio']:.2f}x, loss {100 * p['loss']:.2f}% [{100 * (p['loss_low'] or 0):.2f}, "
            f"{100 * (p['loss_high'] or 0):.2f}]" for p in row) + " |")


if __name__ == "__main__":
    main()
