"""GPU decoding of every payload the GPU decoder takes (issue 24), on a GPU machine: for uniform
at 2, 4, 8, 12 and 16 bits, kmeans and lossless, `zoocodec.load(device="cuda")` against
`safetensors.torch.load_file(device="cuda")` of the same weights (page cache, same run), the
decode kernels alone on data already in GPU memory (the decode call: host parsing, upload and
kernels, GB/s of decoded weights), and a bit-exact check against the CPU decoder.
Which payloads took the rANS kernel and which the packed one is recorded per spec.

    python bench/bench_decode_gpu.py [--params 50e6] [--out DIR]      (scripts/gpu_check.sh runs it)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import zoocodec
from bench_common import gpu_time, machine
from zoocodec.kernels import decode as G

SPECS = ("uniform:bits=2", "uniform:bits=4", "uniform:bits=8", "uniform:bits=12", "uniform:bits=16", "kmeans:k=16",
         "kmeans:k=256,per=channel", "lossless")


def model(params: float) -> dict[str, torch.Tensor]:
    """Laplacian bf16 matrices of 2048 columns, about `params` weights in all."""
    g = np.random.default_rng(0)
    rows = max(int(params // 2048 // 8), 1)
    return {f"layer{i}.weight": torch.from_numpy(g.laplace(0, 0.02, (rows, 2048)).astype(np.float32)).to(torch.bfloat16)
            for i in range(8)}


def best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=float, default=50e6)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args()
    weights = model(args.params)
    nbytes = sum(t.nbytes for t in weights.values())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_file(weights, tmp / "m.safetensors")
        st = best(lambda: load_file(tmp / "m.safetensors", device="cuda"))
        for i, spec in enumerate(SPECS):
            path = tmp / f"{i}.zc"
            zoocodec.compress(weights, path, spec, min_size=1)
            cpu = zoocodec.load(path, device="cpu")
            gpu = zoocodec.load(path, device="cuda")
            exact = all(torch.equal(gpu[n].cpu().view(torch.int16), cpu[n].view(torch.int16)) for n in cpu)
            with zoocodec.Archive(path) as a:
                jobs = [G.job(a, n) for n in a.names()]
                kernel = gpu_time(lambda: G.tensors(a, a.names()), reps=5)  # host parsing, upload, kernels
            kinds = sorted({type(getattr(j, "stream", j)).__name__ for j in jobs if j is not None})
            load = best(lambda: zoocodec.load(path, device="cuda"))
            rows.append({"spec": spec, "file_bytes": path.stat().st_size, "bf16_bytes": nbytes,
                         "taken_by_gpu": sum(j is not None for j in jobs), "tensors": len(jobs), "kinds": kinds,
                         "bit_exact_vs_cpu": exact, "load_cuda_s": load, "safetensors_cuda_s": st,
                         "load_speed_over_safetensors": st / load, "kernel_and_upload_s": kernel,
                         "kernel_and_upload_GBps": nbytes / 1e9 / kernel})
            print(rows[-1], file=sys.stderr)
    result = {"machine": machine(("numpy", "torch", "cupy", "safetensors")),
              "gpu": torch.cuda.get_device_name(0), "params": args.params, "rows": rows}
    (args.out / "decode-gpu.json").write_text(json.dumps(result, indent=2))
    for r in rows:
        print(f"{r['spec']}: {r['taken_by_gpu']}/{r['tensors']} on the GPU {r['kinds']}, "
              f"exact {r['bit_exact_vs_cpu']}, load {r['load_speed_over_safetensors']:.2f}x safetensors, "
              f"decode call {r['kernel_and_upload_GBps']:.0f} GB/s")


if __name__ == "__main__":
    main()
