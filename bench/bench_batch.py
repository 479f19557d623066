"""Batched compress on the CPU (pipeline/batch.py) against one tensor at a time, same run, same bytes.

Four ways through zoocodec.compress on real zoo models, interleaved, best of `--reps`:
  one_at_a_time   batch=False: quantize, code, next tensor (the peer)
  grouped         every method's same-shape groups quantized together (as on a GPU), coding inline
  overlapped      one tensor per window, coding on worker threads (batch.CPU_WINDOW = 0)
  batched         the default: coding on threads, rdoq/dq grouped (`batch_on_cpu`)
Every file's sha256 must equal the peer's.

    python bench/bench_batch.py [--models minilm minilm-attention mpnet] [--reps 2]
        (JSON to bench/results/batch-DATE.json, or --name)
"""
from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from bench_common import machine, save

CASES = {"minilm": ["uniform:bits=8", "kmeans:k=16"], "minilm-attention": ["dq:bits=6"], "mpnet": ["uniform:bits=8"]}


def source(model: str):
    """A zoo name, or minilm-attention: minilm's 24 attention matrices (384x384; dq on all of minilm takes minutes)."""
    if model != "minilm-attention":
        return model
    import torch

    from zoocodec.pipeline.core import load

    return {t.name: torch.from_numpy(t.array) for t in load("minilm").tensors()
            if "attention" in t.name and t.array.shape == (384, 384)}
WAYS = {"one_at_a_time": {"batch": False}, "grouped": {"THREADS": 0, "group_all": True},
        "overlapped": {"CPU_WINDOW": 0}, "batched": {}}


def run_way(model, spec: str, way: str, out: Path) -> tuple[float, str]:
    from zoocodec.methods.base import MethodSpec
    from zoocodec.pipeline import batch
    from zoocodec.pipeline.core import compress

    knobs = {k: v for k, v in WAYS[way].items() if k not in ("batch", "group_all")}
    saved = {k: getattr(batch, k) for k in knobs}
    for k, v in knobs.items():
        setattr(batch, k, v)
    MethodSpec.batch_on_cpu = WAYS[way].get("group_all", False)  # every method groups, as on a GPU
    try:
        start = time.perf_counter()
        compress(model, out, spec, batch=WAYS[way].get("batch", True))
        seconds = time.perf_counter() - start
    finally:
        for k, v in saved.items():
            setattr(batch, k, v)
        MethodSpec.batch_on_cpu = False
    return seconds, hashlib.sha256(out.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(CASES))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--name", default="batch", help="results file: bench/results/NAME-DATE.json")
    args = ap.parse_args()
    from zoocodec.pipeline import batch

    start = machine()  # with the load average now: other work on the machine moves wall-clock ratios
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            src = source(model)
            for spec in CASES[model]:
                times = {w: [] for w in WAYS}
                hashes = {}
                for _ in range(args.reps):  # interleaved: load drifts hit every way alike
                    for way in WAYS:
                        s, h = run_way(src, spec, way, Path(tmp) / f"{way}.zc")
                        times[way].append(s)
                        hashes[way] = h
                best = {w: min(t) for w, t in times.items()}
                row = {"model": model, "spec": spec, "seconds": best, "all_seconds": times,
                       "same_bytes": len(set(hashes.values())) == 1,
                       "speedup_vs_one_at_a_time": {w: best["one_at_a_time"] / s for w, s in best.items()}}
                rows.append(row)
                print(f"{model} {spec}: " + ", ".join(f"{w} {s:.2f} s ({best['one_at_a_time'] / s:.2f}x)"
                                                      for w, s in best.items()) + f"; same bytes {row['same_bytes']}",
                      flush=True)
    result = {
        "machine": start,
        "load_average_at_end": os.getloadavg(),
        "threads": batch.THREADS,
        "cpu_window_bytes": batch.CPU_WINDOW,
        "cpu_chunk_weights": batch.CPU_CHUNK,
        "zoocodec_threads_env": os.environ.get("ZOOCODEC_THREADS"),
        "rows": rows,
        "note": "best of the interleaved runs; the machine is shared (load_average_at_start, load_average_at_end)",
    }
    print(f"wrote {save(args.name, result)}")


if __name__ == "__main__":
    main()
