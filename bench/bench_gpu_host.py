"""The host's share of `zoocodec.load(path, device="cuda")`, measured on a machine without a GPU: this tree
against another source tree, in alternating child processes.

On a GPU the host opens the file, checks it, builds the decode jobs and copies the compressed bytes into
page-locked memory for the upload; the kernels then run at hundreds of GB/s, so on the H200 (2026-12-04) this
host work was most of a load (bench/gpu.py's profile_load). Each child here replaces CuPy by NumPy stand-ins
whose device operations do nothing (allocation, upload, launches, device-to-device copies, the placing of
`ctx` levels) and whose
page-locked allocation reuses one buffer, as CuPy's pinned memory pool does; everything else is the real code
of the GPU branch of `decompress`: Archive open, the budget, `verify_unread`, `kernels.decode.tensors`. So the
times are the host's alone, on this machine's cores, and say nothing of the device.

For scale, each child also times safetensors' `load_file(device="cpu")` of the uncompressed model with each
tensor copied into the reused staging buffer: every uncompressed byte read once out of the page cache, as its
`load_file(device="cuda")` must before its uploads (a lower bound of that peer's host work, not a GPU time).

    python bench/bench_gpu_host.py --baseline DIR [--scale 0.5] [--rounds 3] [--loads 5] [--tag T]

DIR is a worktree of the earlier commit with its native engine built or copied in. The files (bench/gpu.py's
mpnet-shaped fp32 model and its llama-shaped bf16 one at `--scale`, each as `uniform:bits=8`, `lossless` and
GGUF-Q4_1-style 4-bit groups with `ctx`, their side values as float16 and as automatic mode codes them for a
language model, `side=5`) are written once by this tree. Writes
bench/results/gpu_host-<date>[-tag].json: per file the fastest host time of each tree over its rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import from_tree, machine, save

CHILD = '''
import json, sys, time, types
import numpy as np

class Device(np.ndarray):  # a CuPy array whose device work does nothing
    def get(self):
        return np.asarray(self)
    def set(self, host):
        pass
    def __setitem__(self, key, value):
        if not isinstance(value, Device):  # (a device-to-device copy: skipped)
            super().__setitem__(key, value)

pool = {}
def empty_pinned(shape, dtype):  # CuPy's pinned memory pool: one buffer, reused
    if pool.get("b") is None or pool["b"].size < shape[0]:
        pool["b"] = np.empty(shape[0], dtype)
    return pool["b"][: shape[0]]

cupy = types.ModuleType("cupy")
cupy.empty = lambda *a, **k: np.empty(*a, **k).view(Device)
cupy.zeros = lambda *a, **k: np.zeros(*a, **k).view(Device)
cupy.asarray = lambda a, dtype=None: np.asarray(a, dtype).view(Device)
cupy.flatnonzero = lambda a: np.flatnonzero(a).view(Device)
cupy.argsort, cupy.uint16, cupy.uint64 = np.argsort, np.uint16, np.uint64
cupyx = types.ModuleType("cupyx")
cupyx.empty_pinned = empty_pinned
sys.modules["cupy"], sys.modules["cupyx"] = cupy, cupyx

import torch
from safetensors.torch import load_file
from zoocodec.kernels import decode
from zoocodec.pipeline.core import Archive

class Module:
    def get_function(self, name):
        return lambda *args: None
decode._module = lambda: Module()
decode.place = lambda c, indices, xp: cupy.empty(c.count, np.uint16)  # (the device's sort and scatter)

def host(path):
    with Archive(path) as a:
        a.check_budget()
        a.verify_unread()
        return decode.tensors(a, a.names())

files, loads, best = json.loads(sys.argv[1]), int(sys.argv[2]), {}
for _ in range(loads):
    for name, (zc, st) in files.items():
        s = time.perf_counter()
        taken = host(zc)
        best[name] = min(best.get(name, 1e9), (time.perf_counter() - s) * 1e3)
        best[name + " taken"] = len(taken)
        del taken
        s = time.perf_counter()
        for t in load_file(st, device="cpu").values():  # (tensors on the file's mapped pages: read once here)
            flat = t.reshape(-1).view(torch.uint8)
            staging = empty_pinned((flat.numel(),), np.uint8)
            torch.from_numpy(staging).copy_(flat)
        best[name + " safetensors"] = min(best.get(name + " safetensors", 1e9), (time.perf_counter() - s) * 1e3)
print(json.dumps(best))
'''

SPECS = {"8-bit": "uniform:bits=8", "lossless": "lossless",
         "Q4_1-style + ctx": "uniform:bits=4,group=32,zero=true,coder=ctx",
         "Q4_1-style side=5 + ctx": "uniform:bits=4,group=32,zero=true,side=5,coder=ctx"}  # (automatic mode's, for LMs)


def write(folder: Path, scale: float) -> dict:
    """{name: (the .zc, the uncompressed safetensors)} of every model and spec."""
    from safetensors.torch import save_file

    import zoocodec
    from bench_gpu import billion, mpnet_shaped

    files = {}
    for model, tensors in (("mpnet-shaped fp32", mpnet_shaped()), (f"llama-shaped bf16 x{scale}", billion(scale))):
        st = folder / f"{len(files)}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, st)
        for label, spec in SPECS.items():
            zc = folder / f"{len(files)}.zc"
            zoocodec.compress(tensors, zc, spec)
            files[f"{model}, {label}"] = (str(zc), str(st))
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, required=True, help="a worktree of the earlier commit, engine built")
    ap.add_argument("--scale", type=float, default=0.5, help="bench/gpu.py's billion(scale): 0.5 is 0.5B weights")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loads", type=int, default=5, help="loads per file in each child (the fastest is kept)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    trees = {"this": Path(__file__).resolve().parent.parent, "baseline": args.baseline.resolve()}
    with tempfile.TemporaryDirectory() as tmp:
        files = write(Path(tmp), args.scale)
        sizes = {name: Path(zc).stat().st_size for name, (zc, _) in files.items()}
        rounds = []
        for r in range(args.rounds):
            row = {}
            for tree, source in trees.items():
                code = from_tree(None if tree == "this" else source) + CHILD
                out = subprocess.run([sys.executable, "-c", code, json.dumps(files), str(args.loads)],
                                     capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"the {tree} tree's child failed:\n{out.stderr}")
                row[tree] = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"round {r} {tree}: " + ", ".join(f"{k} {v:.1f}" for k, v in row[tree].items()
                                                         if " " in k and "taken" not in k), flush=True)
            rounds.append(row)
    summary = {}
    for name in files:
        this = min(r["this"][name] for r in rounds)
        base = min(r["baseline"][name] for r in rounds)
        peer = statistics.median([r[t][name + " safetensors"] for r in rounds for t in trees])
        summary[name] = {"file_mb": sizes[name] / 1e6, "tensors_taken": rounds[0]["this"][name + " taken"],
                         "host_ms_this": round(this, 1), "host_ms_baseline": round(base, 1),
                         "speedup": round(base / this, 2), "file_gb_per_s_this": round(sizes[name] / this / 1e6, 2),
                         "safetensors_cpu_load_ms": round(peer, 1)}
        print(f"{name}: {base:.1f} -> {this:.1f} ms ({base / this:.2f}x), {sizes[name] / 1e6:.0f} MB; "
              f"safetensors load_file(cpu) of the uncompressed model {peer:.1f} ms", flush=True)
    path = save("gpu_host", {"machine": machine(("numpy", "torch", "safetensors")), "baseline": str(args.baseline),
                             "scale": args.scale, "loads": args.loads, "rounds": rounds, "summary": summary},
                args.tag)
    print(path)


if __name__ == "__main__":
    main()
