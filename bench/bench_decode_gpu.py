"""GPU decoding of every payload the GPU decoder takes (issue 24), on a GPU machine: for uniform
at 2, 4, 8, 12 and 16 bits, grouped uniform (a step and zero point per group), dq levels (the
state walk as a scan; under ans, and under ctx as the presets write them), grouped uniform under ctx's
group ends, kmeans and lossless (Huffman exponent planes, the default, and rANS ones),
`zoocodec.load(device="cuda")` against
`safetensors.torch.load_file(device="cuda")` of the same weights (page cache, same run), the
decode call alone (host parsing, upload and kernels, GB/s of decoded weights), and a bit-exact
check against the CPU decoder. dq runs on a smaller model (`--dq-params`: its trellis
compresses at about 0.3M weights/s on one CPU core); each row names its weights.
Which payloads took the rANS kernel and which the packed one is recorded per spec.

    python bench/bench_decode_gpu.py [--params 50e6] [--dq-params 8e6] [--out DIR]
    (scripts/gpu_check.sh runs it; DIR/decode-gpu.json is rewritten after each spec)
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import zoocodec
from bench_common import gpu_time, machine
from zoocodec.kernels import decode as G

SPECS = ("uniform:bits=8", "lossless", "dq:bits=6,coder=ans", "uniform:bits=4,group=32,zero=true",
         "dq:step=0.002,coder=ans", "uniform:bits=12,group=128", "uniform:bits=2", "uniform:bits=4", "uniform:bits=12",
         "uniform:bits=16", "kmeans:k=16", "kmeans:k=256,per=channel",
         "uniform:bits=4,group=32,zero=true,coder=ctx", "dq:bits=6",  # (last: new in 2026-12-07: ctx payloads, and
         "lossless:coder=float(planes=rans)")  # rANS planes beside "lossless"'s Huffman ones, now both on the GPU)


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
    ap.add_argument("--dq-params", type=float, default=8e6)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args()
    result = {"machine": machine(("numpy", "torch", "cupy", "safetensors")),
              "gpu": torch.cuda.get_device_name(0), "params": args.params, "dq_params": args.dq_params, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = {}
        for i, spec in enumerate(SPECS):
            params = args.dq_params if spec.startswith("dq:") else args.params
            if params not in models:
                weights = model(params)
                raw = tmp / f"m{len(models)}.safetensors"
                save_file(weights, raw)
                models[params] = (weights, raw, best(lambda raw=raw: load_file(raw, device="cuda")))
            weights, raw, st = models[params]
            nbytes = sum(t.nbytes for t in weights.values())
            path = tmp / f"{i}.zc"
            zoocodec.compress(weights, path, spec, min_size=1)
            cpu = zoocodec.load(path, device="cpu")
            gpu = zoocodec.load(path, device="cuda")
            exact = all(torch.equal(gpu[n].cpu().view(torch.int16), cpu[n].view(torch.int16)) for n in cpu)
            with zoocodec.Archive(path) as a:
                names, jobs = a.names(), G.jobs(a, a.names())[1]
                kernel = gpu_time(lambda a=a: G.tensors(a, a.names()), reps=5)  # host parsing, upload, kernels
            kinds = sorted({f"{type(j).__name__}/{type(getattr(j, 'stream', j)).__name__}" for j in jobs})
            load = best(lambda path=path: zoocodec.load(path, device="cuda"))
            row = {"spec": spec, "weights": sum(t.numel() for t in weights.values()),
                   "file_bytes": path.stat().st_size, "bf16_bytes": nbytes,
                   "taken_by_gpu": len(jobs), "tensors": len(names), "kinds": kinds,
                   "bit_exact_vs_cpu": exact, "load_cuda_s": load, "safetensors_cuda_s": st,
                   "load_speed_over_safetensors": st / load, "kernel_and_upload_s": kernel,
                   "kernel_and_upload_GBps": nbytes / 1e9 / kernel}
            result["rows"].append(row)
            (args.out / "decode-gpu.json").write_text(json.dumps(result, indent=2))
            print(f"{spec} ({row['weights'] / 1e6:.0f}M weights): {row['taken_by_gpu']}/{row['tensors']} on the GPU "
                  f"{kinds}, exact {exact}, load {row['load_speed_over_safetensors']:.2f}x safetensors, "
                  f"decode call {row['kernel_and_upload_GBps']:.0f} GB/s", flush=True)


if __name__ == "__main__":
    main()
