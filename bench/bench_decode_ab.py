"""A decoding change against the code before it: in-process `zoocodec.load` of minilm files at 1 and 2 threads, by
this tree and another source tree in alternating child processes.

bench_decode.py times each load interleaved with its peers' (zipnn, safetensors + copy), whose allocations move a
2-thread load by 10-20% from call to call on this VM, so a change worth 10% at 2 threads can vanish there. Here
each child loads only the .zc files (the fastest of `--loads` calls per file and thread count), and the two trees
take turns `--rounds` times, so both meet the machine alike. The files are written once by this tree:
minilm lossless bf16 and fp32 (every float tensor), 8-bit (`uniform:bits=8`), and bf16 of its 38 matrices of 64K
values or more without the word-embedding table (many medium tensors: what a pass of many jobs does).
`--files coders`: minilm written by the methods and coders automatic mode and the presets choose besides
plain `ans` (`uniform` with `ctx`, `dq` with `ans`, `ctx` (the balanced preset's) and `cabac`, group-wise
4-bit steps and zero points with `ctx` as GGUF's Q4_1 holds them), and the 8-bit file as the control.

    python bench/bench_decode_ab.py --baseline DIR [--files lossless|coders] [--rounds 4] [--loads 30] [--tag T]

DIR is a worktree of the earlier commit with its native engine built or copied in. Writes
bench/results/decode_ab-<date>[-tag].json: per round and tree the fastest load in ms, and per file the median over
rounds of the 2-thread time and of the 1-over-2-thread speed-up, with this tree's over the baseline's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import zoocodec
from bench_common import from_tree, machine, save
from zoocodec.pipeline import modelio, zoo

CHILD = """
import json, os, sys, time, torch, zoocodec
files, loads, best = json.loads(sys.argv[1]), int(sys.argv[2]), {}
for _ in range(loads):
    for name, path in files.items():
        for t in (1, 2):
            os.environ["ZOOCODEC_THREADS"] = str(t)
            torch.set_num_threads(t)
            s = time.perf_counter()
            out = zoocodec.load(path, device="cpu")
            k = f"{name} {t}"
            best[k] = min(best.get(k, 1e9), (time.perf_counter() - s) * 1e3)
            del out
print(json.dumps(best))
"""


CODERS = {"8-bit": "uniform:bits=8", "uniform + ctx": "uniform:step=0.004,coder=ctx",
          "dq + ans": "dq:step=0.004,coder=ans", "dq + ctx": "dq:step=0.004,coder=ctx",
          "dq + cabac": "dq:step=0.004,coder=cabac",
          "4-bit groups + ctx": "uniform:bits=4,group=32,zero=true,coder=ctx"}


def write_files(folder: Path, which: str) -> dict[str, str]:
    src = modelio.open_model(zoo.resolve("minilm"))
    model = {n: src._get(n) for n in src.names}
    floats = {n: t for n, t in model.items() if t.dtype == torch.float32}
    bf16 = {n: t.to(torch.bfloat16) for n, t in floats.items()}
    matrices = {n: t for n, t in bf16.items() if t.dim() == 2 and t.numel() >= 1 << 16 and "word_embeddings" not in n}
    files = {"lossless bf16": (bf16, "lossless"), "lossless fp32": (floats, "lossless"),
             "8-bit": (model, "uniform:bits=8"), "lossless bf16, 38 matrices": (matrices, "lossless")}
    if which == "coders":
        files = {name: (model, spec) for name, spec in CODERS.items()}
    out = {}
    for name, (tensors, spec) in files.items():
        path = folder / (name.replace(" ", "_").replace(",", "").replace("+", "") + ".zc")
        zoocodec.compress(tensors, path, spec, **({"min_size": 1 << 62} if spec == "lossless" else {}))
        out[name] = str(path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True, help="the earlier source tree")
    ap.add_argument("--files", choices=("lossless", "coders"), default="lossless")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--loads", type=int, default=30)
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    info = machine(("numpy", "torch"))
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp), a.files)
        for r in range(a.rounds):
            for tree in ([None, a.baseline] if r % 2 == 0 else [a.baseline, None]):
                done = subprocess.run([sys.executable, "-c", from_tree(tree) + CHILD, json.dumps(files), str(a.loads)],
                                      capture_output=True, text=True, check=True)
                rounds.append({"round": r, "tree": "this" if tree is None else str(tree),
                               "fastest_ms": json.loads(done.stdout.strip().splitlines()[-1])})
                print(rounds[-1]["tree"], {k: round(v, 2) for k, v in rounds[-1]["fastest_ms"].items()}, flush=True)
    summary = {}
    for name in files:
        per = {}
        for side in ("this", str(a.baseline)):
            runs = [x["fastest_ms"] for x in rounds if x["tree"] == side]
            per[side] = {"one_thread_ms": statistics.median(x[f"{name} 1"] for x in runs),
                         "two_threads_ms": statistics.median(x[f"{name} 2"] for x in runs),
                         "speedup_2_over_1": statistics.median(x[f"{name} 1"] / x[f"{name} 2"] for x in runs)}
        per["baseline_over_this_one_thread"] = per[str(a.baseline)]["one_thread_ms"] / per["this"]["one_thread_ms"]
        per["baseline_over_this_two_threads"] = per[str(a.baseline)]["two_threads_ms"] / per["this"]["two_threads_ms"]
        summary[name] = per
        print(name, json.dumps(per))
    print(save("decode_ab", {"machine": info, "baseline": str(a.baseline), "files": a.files, "rounds": rounds,
                             "summary": summary},
               a.tag))


if __name__ == "__main__":
    main()
