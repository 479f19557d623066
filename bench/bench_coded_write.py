"""Automatic mode's writer takes the coder per tensor's winning streams instead of coding them again: the CPU
seconds that saves on the final write, and against the whole run, measured in one run.

    nice -n 5 python bench/bench_coded_write.py [--model minilm] [--target-loss 1] [--repeats 3] [--tag T]

Runs automatic mode's phases on a zoo model as `zoocodec compress MODEL --target-loss X%` does (the CLI's
--min-size 4096), timing phase 6b (a coder per tensor), then writes the file `--repeats` times each way,
interleaved (ABBA): with the kept streams (as automatic mode writes now), and with none (coding the winners
again, as it did before 2026-12-05i). CPU seconds are from getrusage (every thread of the process). The files
must be byte-identical. Writes bench/results/coded-write-YYYY-MM-DD[-T].json.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_common import machine, save


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="minilm")
    p.add_argument("--target-loss", type=float, default=1.0, help="percent")
    p.add_argument("--repeats", type=int, default=3, help="writes each way")
    p.add_argument("--tag", default="", help="results file suffix")
    a = p.parse_args()
    torch.set_num_threads(2)
    from zoocodec.methods import parse_spec
    from zoocodec.pipeline.policy import DEFAULT_MIN_SIZE, for_decoder
    from zoocodec.tuning.auto import RATE_LAM, Asked, _Clock, _Search

    asked = Asked(model=a.model, target_loss=a.target_loss / 100, task=None, reference=None,
                  spec=for_decoder(parse_spec("uniform"), "any", True), min_size=DEFAULT_MIN_SIZE, inputs=None,
                  module=None, output=None, choose_coder=True, rounding="gptq", rate_lam=RATE_LAM, calib=None,
                  seed=0, sequential=False)
    seconds: dict[str, float] = {}
    folder = Path(tempfile.mkdtemp(prefix="coded-write-"))
    with _Clock(lambda msg: print(msg, file=sys.stderr, flush=True)) as clock:
        c0, w0 = cpu(), time.perf_counter()
        run = _Search(clock, asked)
        choose = run.coder_per_tensor

        def timed() -> None:
            c = cpu()
            choose()
            seconds["coder_per_tensor"] = cpu() - c
        run.coder_per_tensor = timed
        run.phases(None)
        seconds["phases"], seconds["phases_wall"] = cpu() - c0, time.perf_counter() - w0
        kept = dict(run.streams)
        writes: dict[str, list[float]] = {"kept": [], "coded_again": []}
        files: dict[str, bytes] = {}
        for r in range(a.repeats):
            for way in ("kept", "coded_again") if r % 2 == 0 else ("coded_again", "kept"):
                run.streams = kept if way == "kept" else {}
                out = folder / f"{way}.zc"
                c = cpu()
                run.write(out)
                writes[way].append(cpu() - c)
                files.setdefault(way, out.read_bytes())
                print(way, f"{writes[way][-1]:.3f} CPU s", file=sys.stderr, flush=True)
    same = files["kept"] == files["coded_again"]
    saved = [b - k for k, b in zip(writes["kept"], writes["coded_again"], strict=True)]
    run_before = seconds["phases"] + statistics.median(writes["coded_again"])
    summary = {"identical_files": same, "file_bytes": len(files["kept"]), "tensors_kept": len(kept),
               "write_cpu_kept_median": statistics.median(writes["kept"]),
               "write_cpu_coded_again_median": statistics.median(writes["coded_again"]),
               "saved_per_pair": saved, "saved_median": statistics.median(saved),
               "saved_of_write": statistics.median(saved) / statistics.median(writes["coded_again"]),
               "saved_of_run": statistics.median(saved) / run_before,
               "run_cpu_before": run_before, "coder_per_tensor_cpu": seconds["coder_per_tensor"]}
    print(summary, flush=True)
    if not same:
        raise SystemExit("the files differ: the kept streams are not those of coding again")
    save("coded-write", {"machine": machine(), "what": __doc__.split("\n\n")[0].replace("\n", " "), "model": a.model,
                         "target_loss_pct": a.target_loss, "repeats": a.repeats, "threads": torch.get_num_threads(),
                         "seconds": seconds, "writes_cpu": writes, "summary": summary}, a.tag)


if __name__ == "__main__":
    main()
