"""One `zoocodec evaluate` of a compressed causal LM, end to end as a user runs it (issue 27: at most 3 minutes
on the 2-core CPU machine).

Each repeat is a fresh process running the CLI (`zoocodec evaluate FILE.zc`): imports, the tokenizer, decoding the
file, the compressed model's run on every judged window with the exact token KL, the intervals. The original's run
is stored once per machine (zoocodec.eval.lm); a first evaluation without it runs the original too, so the bench
runs one untimed evaluation first when the stored run is missing (and says so). `--baseline DIR` times another source
tree of zoocodec (a worktree of an earlier commit, its native engine built or copied in) on the same file,
alternating with this one, and reports the ratio: the editable install's import finder is dropped in that process
so DIR's package is the one imported.

    python bench/bench_lm_eval.py FILE.zc [--repeats 2] [--baseline DIR] [--tag T]

Wall seconds are the target's measure and need an idle machine: the load average before and after each run is
recorded, and CPU seconds (user + sys of the child) are what compares under load.
Writes bench/results/lm_eval-<date>[-tag].json.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_common import from_tree, machine, save

TARGET_S = 180.0
CLI = "import sys; from zoocodec.cli import main; sys.argv = ['zoocodec', *sys.argv[1:]]; sys.exit(main())"


def run(file: Path, source: Path | None) -> dict:
    code = from_tree(source) + CLI
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "evaluate", str(file), "--json"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"evaluate failed ({source or 'installed'}): {done.stderr.strip().splitlines()[-1:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"source": str(source or "installed"), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
            "metrics": done.stdout.strip().splitlines()}


def stored(model: str = "smollm2-135m") -> bool:
    """Whether the original's run on the zoo task's texts is in the zoo cache (what an evaluation reads)."""
    from zoocodec.eval import lm
    from zoocodec.eval.evaluate import load_weights, tasks_of
    from zoocodec.pipeline import zoo

    scorer = lm.Scorer(zoo.resolve(model), tasks_of(model, "ppl")[0].texts())
    return scorer._cache_path(load_weights(model)).is_file()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--baseline", type=Path, help="another zoocodec source tree, timed alternately")
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    info = machine(("numpy", "torch", "transformers"))
    warm = None if stored() else run(a.file, None)  # stores the original's run; not a repeat
    runs = []
    for i in range(a.repeats):
        for source in ([None, a.baseline] if a.baseline else [None])[:: 1 if i % 2 == 0 else -1]:
            runs.append(run(a.file, source))
            print(runs[-1]["source"], runs[-1]["wall_s"], "s wall", runs[-1]["cpu_s"], "CPU s, load",
                  runs[-1]["load_before"], flush=True)
    mine = [r for r in runs if r["source"] == "installed"]
    out = {"machine": info, "file": str(a.file), "target_wall_s": TARGET_S, "run_storing_the_original": warm,
           "runs": runs, "wall_s_best": min(r["wall_s"] for r in mine), "cpu_s_best": min(r["cpu_s"] for r in mine)}
    if a.baseline:
        base = [r for r in runs if r["source"] != "installed"]
        out["baseline_over_this_wall"] = round(min(r["wall_s"] for r in base) / out["wall_s_best"], 3)
        out["baseline_over_this_cpu"] = round(min(r["cpu_s"] for r in base) / out["cpu_s_best"], 3)
    print(save("lm_eval", out, a.tag))


if __name__ == "__main__":
    main()
