"""Head to head: zoocodec vs NNCodec, a Deep Compression-style baseline and lossless tools.

    python bench/bench_head_to_head.py            # the zoo models, judged on the held-back half of their test sets
    python bench/bench_head_to_head.py --quick    # mnist-cnn, one setting per tool
    python bench/bench_head_to_head.py --full     # also mpnet
    python bench/bench_head_to_head.py --lean     # only the tools that compete with NNCodec (quantize + code),
                                                  # timed once

Every tool codes the same float tensors of the same real model in the same run; every
decoded model is evaluated the same way (task metric and output fidelity against the
uncompressed model). Sizes count every byte a decoder needs (zoocodec: the whole .zc
file; NNCodec: its whole bitstream) over the model's float parameters.
The comparison is made at equal quality: along each tool's rate-distortion front, the
bits/weight needed for a metric loss of 0.1%, 0.5% and 1% and for each NNCodec point's
output fidelity. A loss is judged by the pessimistic end of its 95% interval from the
paired inputs (zoocodec.eval.stats); a budget narrower than the intervals is reported as
"not resolvable with N inputs".

NNCodec runs in its own virtual environment (bench/peers/setup_nncodec.sh builds it;
NNCODEC_PYTHON or .venv-nncodec/bin/python); without it the NNCodec rows are skipped
and the summary says so.

The code: bench_h2h_run (the model, the judge, every tool's runner), bench_h2h_frontier
(equal-quality interpolation and the comparison), bench_h2h_render (tables, plot, files).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_h2h_frontier import compare, lossless_summary
from bench_h2h_render import save
from bench_h2h_run import (
    HEAVY,
    RESULTS,
    SHIFT,
    ZOO,
    Judge,
    Row,
    Subject,
    deep_compression,
    lossless_rows,
    machine,
    nncodec_python,
    run_nncodec,
    run_zoocodec,
    zoocodec_settings,
)
from zoocodec.methods import REGISTRY


def bench_model(name: str, mode: str, log, lean: bool = False, budgets=(1.0, 0.5, 0.1),
                one_embedding_step: bool = False, sensitivities: dict | None = None) -> dict:
    subject = Subject.load(name)
    big = subject.fp32_bytes > 20e6
    judge = Judge(subject)
    quick = mode == "quick"
    repeat = 2 if not quick and not lean and subject.fp32_bytes < 5e6 else 1
    rows: list[Row] = []
    result = {"model": name, "mode": mode + (" lean" if lean else ""), "params": subject.params,
              "evaluation": judge.describe(), "date": machine()["date"],
              "baseline": judge.baseline, "failures": []}
    with tempfile.TemporaryDirectory(prefix="h2h-") as d:
        work = Path(d)
        if nncodec_python():
            qps = [-32] if quick else ([-40, -36, -33, -30, -27] if subject.fp32_bytes > HEAVY else
                                       [-38, -30, -24, -18, -14, -10])
            qps = [q + SHIFT.get(name, 0) for q in qps]
            log(f"{name}: NNCodec qp {qps}")
            rows += run_nncodec(subject, judge, qps, work, repeat)
        else:
            result["nncodec_skipped"] = "no NNCodec environment (run bench/peers/setup_nncodec.sh)"
        for tool, setting, write in zoocodec_settings(subject, judge, mode, lean, log, budgets, one_embedding_step,
                                                     sensitivities):
            log(f"{name}: {tool} {setting}")
            try:
                rows.append(run_zoocodec(subject, judge, tool, setting, write, work, 1 if "auto" in tool else repeat))
            except Exception as e:  # one method's failure must not cost the whole run: record it
                result["failures"].append({"tool": tool, "setting": setting, "error": f"{type(e).__name__}: {e}"})
                log(f"{name}: {tool} {setting} FAILED: {type(e).__name__}: {e}")
        dc = [] if lean else [(0.5, 5)] if quick else [(0.0, 5), (0.5, 5), (0.7, 4)]
        for sparsity, bits in dc:
            log(f"{name}: Deep Compression-style prune {sparsity} bits {bits}")
            rows.append(deep_compression(subject, judge, sparsity, bits))
        for dtype in () if lean else (torch.float32, torch.bfloat16):
            log(f"{name}: lossless {dtype}")
            rows += lossless_rows(subject, dtype, work, lzma_too=mode == "full" or not big, repeat=repeat)
    result["evaluation_s"] = judge.seconds
    result["rows"] = [r.to_dict() for r in rows]
    result["compare"] = compare(rows)
    result["lossless"] = lossless_summary(rows)
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="mnist-cnn, one setting per tool")
    p.add_argument("--full", action="store_true", help="also mpnet")
    p.add_argument("--models", nargs="+", help="zoo models to run (default: the zoo)")
    p.add_argument("--lean", action="store_true",
                   help="only NNCodec and the zoocodec tools that compete with it; encode and decode timed once")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON, markdown and PNG")
    p.add_argument("--budgets", type=float, nargs="+", default=[1.0, 0.5, 0.1],
                   help="automatic mode's budgets in %% (default 1 0.5 0.1; --quick: the widest)")
    p.add_argument("--one-embedding-step", action="store_true",
                   help="text models: also automatic mode at the widest budget with one step for the "
                        "word-embedding table (what a step per row gains, in the same run)")
    p.add_argument("--sensitivities", type=Path,
                   help="one model: automatic mode's sensitivities as a file's header stores them (JSON), measured "
                        "before with the same code, instead of measuring them again")
    p.add_argument("--merge", action="store_true",
                   help="replace these models' entries in the existing results instead of starting anew")
    a = p.parse_args(argv)
    if a.models:
        models = a.models
    elif a.quick:
        models = ["mnist-cnn"]
    else:
        models = ZOO[:-1] + (ZOO[-1:] if a.full else [])
    mode = "quick" if a.quick else "full" if a.full else "default"
    stem = "head_to_head_quick" if a.quick else "head_to_head"
    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    results = {"machine": machine(), "mode": mode, "nncodec_python": str(nncodec_python() or ""),
               "methods_registered": sorted(REGISTRY), "models": []}
    previous = a.out / f"{stem}.json"
    if a.merge and previous.exists():
        old = json.loads(previous.read_text())
        results["models"] = [m for m in old["models"] if m["model"] not in models]
        start -= old.get("seconds", 0)
    for name in models:
        given = json.loads(a.sensitivities.read_text()) if a.sensitivities and len(models) == 1 else None
        results["models"].append(bench_model(name, mode, log, a.lean, a.budgets, a.one_embedding_step, given))
        results["models"].sort(key=lambda m: ZOO.index(m["model"]) if m["model"] in ZOO else len(ZOO))
        results["seconds"] = time.perf_counter() - start
        save(results, a.out, stem)  # after every model: a long run that dies keeps what it measured
    print((a.out / f"{stem}.md").read_text())
    return results


if __name__ == "__main__":
    main()
