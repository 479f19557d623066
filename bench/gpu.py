"""GPU benchmarks of issue 13, each with its peer in the same run (needs CuPy, torch CUDA and a GPU).

1. compress on the GPU vs the CPU path of the same machine, same model in host memory, same
   bytes (sha256 of both files): uniform:bits=8, kmeans:k=16, dq:bits=6 on a generated
   bf16 model (Laplacian weights, 2048x2048 matrices; smaller for the slow CPU paths).
2. load into GPU memory: zoocodec.load(path, device="cuda") of a uniform:bits=8 .zc vs
   safetensors.torch.load_file(uncompressed, device="cuda"), both files read once before
   (same page cache); and the decode kernel alone (CUDA events) in GB/s of decoded weights.

    python bench/gpu.py [--scale 1.0] [--out DIR]     (JSON to DIR, default bench/results)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402


def model(count: int, side: int = 2048, seed: int = 0) -> dict:
    import torch

    g = np.random.default_rng(seed)
    return {f"layer{i}.weight": torch.from_numpy(g.laplace(0, 0.02, (side, side)).astype(np.float32)).to(torch.bfloat16)
            for i in range(count)}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compress_case(tmp: Path, spec: str, tensors: dict) -> dict:
    import cupy

    from zoocodec.pipeline.core import compress

    weights = sum(t.numel() for t in tensors.values())
    row = {"spec": spec, "weights": weights, "dtype": "bfloat16"}
    compress({"warm.weight": next(iter(tensors.values()))}, tmp / "warm.zc", spec, device="gpu")  # kernels compiled
    cupy.cuda.Device().synchronize()
    for dev in ("gpu", "cpu"):
        start = time.perf_counter()
        rep = compress(tensors, tmp / f"{dev}.zc", spec, device=dev)
        row[f"{dev}_s"] = time.perf_counter() - start
        row[f"{dev}_device"] = rep.device
        row[f"{dev}_sha256"] = sha(tmp / f"{dev}.zc")
    row["speedup"] = row["cpu_s"] / row["gpu_s"]
    row["same_bytes"] = row["gpu_sha256"] == row["cpu_sha256"]
    row["ratio"] = rep.ratio
    print(f"compress {spec}: {weights / 1e6:.0f}M weights, GPU {row['gpu_s']:.2f} s, CPU {row['cpu_s']:.2f} s, "
          f"{row['speedup']:.1f}x, same bytes {row['same_bytes']}", flush=True)
    return row


def load_case(tmp: Path, tensors: dict) -> dict:
    import cupy
    import torch
    from safetensors.torch import load_file, save_file

    import zoocodec
    from zoocodec.kernels import decode as G
    from zoocodec.pipeline.core import Archive, compress

    raw, zc = tmp / "m.safetensors", tmp / "m.zc"
    save_file(tensors, raw)
    compress(raw, zc, "uniform:bits=8", device="gpu")
    for p in (raw, zc):  # both in the page cache
        p.read_bytes()
    weights = sum(t.numel() for t in tensors.values())
    row = {"weights": weights, "dtype": "bfloat16", "safetensors_bytes": raw.stat().st_size, "zc_bytes": zc.stat().st_size}
    zoocodec.load(zc, device="cuda")  # kernel compiled, allocator warm
    load_file(raw, device="cuda")
    torch.cuda.synchronize()
    for name, fn in (("zoocodec_load", lambda: zoocodec.load(zc, device="cuda")),
                     ("safetensors_load", lambda: load_file(raw, device="cuda"))):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            out = fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            del out
        row[f"{name}_s"] = min(times)
    row["load_speedup"] = row["safetensors_load_s"] / row["zoocodec_load_s"]
    with Archive(zc) as a:  # the kernel alone, on prepared jobs
        jobs = [G.job(a, n) for n in a.names()]
        G.run(jobs)
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        reps = 5
        for _ in range(reps):
            G.run(jobs)
        stop.record()
        stop.synchronize()
        kernel_s = cupy.cuda.get_elapsed_time(start, stop) / 1e3 / reps
    row["decode_call_s"] = kernel_s  # H2D of the compressed bytes + kernel + error check
    row["decoded_GB_per_s"] = weights * 2 / kernel_s / 1e9
    print(f"load {weights / 1e6:.0f}M bf16 weights: zoocodec {row['zoocodec_load_s']:.3f} s, safetensors "
          f"{row['safetensors_load_s']:.3f} s ({row['load_speedup']:.2f}x); decode call {kernel_s * 1e3:.1f} ms = "
          f"{row['decoded_GB_per_s']:.0f} GB/s decoded", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every model size")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    import cupy

    from zoocodec.device import resolve

    dev = resolve("gpu")
    result = {"machine": machine(("numpy", "torch", "cupy-cuda13x")), "device": dev.label,
              "sm_count": cupy.cuda.runtime.getDeviceProperties(0)["multiProcessorCount"], "compress": [], "load": None}

    def n(count: int) -> int:
        return max(1, math.ceil(count * args.scale))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result["load"] = load_case(tmp, model(n(64)))           # 268M weights
        for spec, count in (("uniform:bits=8", 64), ("kmeans:k=16", 8), ("dq:bits=6", 1)):
            try:
                result["compress"].append(compress_case(tmp, spec, model(n(count), seed=1)))
            except Exception as e:  # noqa: BLE001  (one failing case must not lose the others' numbers)
                result["compress"].append({"spec": spec, "error": f"{type(e).__name__}: {e}"})
                print(f"compress {spec}: {type(e).__name__}: {e}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu-bench.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
