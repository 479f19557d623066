"""Whole-model decoding on the CPU, with the peers in the same run on the same weights:

- `zoocodec.load(path, device="cpu")` of minilm at 8 bits (uniform, the default spec)
  against `safetensors.torch.load_file` of the uncompressed model (both from the page
  cache), and against each method's own per-tensor decode (the path before the fused
  native decoder: float64 dequantization, one tensor at a time);
- lossless minilm (fp32 and bf16): `zoocodec.load` against zipnn's decompress of every
  tensor with the same threads.
Each with 1 and 2 threads (ZOOCODEC_THREADS; zipnn's `threads`); every decode checked
against the original (bit-exact for lossless).

    python bench/bench_decode.py [--model minilm] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bench_common import machine, save

import zoocodec
from zoocodec.pipeline import modelio, zoo


def best(repeats: int, fn):
    """(last result, fastest wall seconds)."""
    t_best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        t_best = min(t_best, time.perf_counter() - t)
    return out, t_best


def per_tensor_decode(path: Path) -> dict[str, np.ndarray]:
    """Each tensor by its method's own decode (no fused native pass): the reference path."""
    with zoocodec.Archive(path) as a:
        return {n: a.decode(n, lambda spec, side, segs, shape, dtype: spec.decode(side, segs, shape, dtype))
                for n in a.names()}


def zipnn_round(tensors: dict[str, torch.Tensor], dtype: str, threads: int, repeats: int):
    import zipnn  # noqa: PLC0415  (the peer)

    z = zipnn.ZipNN(bytearray_dtype=dtype, threads=threads)
    blobs = {n: t.contiguous().view(torch.uint8).numpy().tobytes() for n, t in tensors.items()}
    packed = {n: z.compress(bytearray(b)) for n, b in blobs.items()}  # (it overwrites its input: a copy each)
    back, secs = best(repeats, lambda: {n: z.decompress(c) for n, c in packed.items()})
    assert all(bytes(back[n]) == blobs[n] for n in blobs), "zipnn round trip failed"
    return sum(map(len, packed.values())), secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    src = modelio.open_model(zoo.resolve(args.model))
    model = {n: src._get(n) for n in src.names}
    floats = {n: t for n, t in model.items() if t.dtype == torch.float32}
    nbytes = sum(t.nbytes for t in model.values())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_file(model, tmp / "m.safetensors")
        zoocodec.compress(model, tmp / "m8.zc", "uniform:bits=8")
        zoocodec.compress(floats, tmp / "fp32.zc", "lossless", min_size=1 << 62)
        bf16 = {n: t.to(torch.bfloat16) for n, t in floats.items()}
        zoocodec.compress(bf16, tmp / "bf16.zc", "lossless", min_size=1 << 62)
        for threads in (1, 2):
            os.environ["ZOOCODEC_THREADS"] = str(threads)
            torch.set_num_threads(threads)
            ref, st = best(args.repeats, lambda: load_file(tmp / "m.safetensors"))
            got, ours = best(args.repeats, lambda: zoocodec.load(tmp / "m8.zc", device="cpu"))
            old, before = best(args.repeats, lambda: per_tensor_decode(tmp / "m8.zc"))
            assert all(np.array_equal(got[n].view(torch.uint8).numpy(), old[n].view(np.uint8)) for n in old)
            rows.append({"what": "8-bit load", "threads": threads, "bytes_decoded": nbytes,
                         "file_bytes": (tmp / "m8.zc").stat().st_size, "safetensors_s": st, "zoocodec_s": ours,
                         "per_tensor_decode_s": before, "zoocodec_over_safetensors_time": ours / st,
                         "speedup_over_per_tensor_decode": before / ours,
                         "zoocodec_MBps": nbytes / 1e6 / ours, "safetensors_MBps": nbytes / 1e6 / st})
            for dtype, tensors, path in (("float32", floats, tmp / "fp32.zc"), ("bfloat16", bf16, tmp / "bf16.zc")):
                size = sum(t.nbytes for t in tensors.values())
                zbytes, zsecs = zipnn_round(tensors, dtype, threads, args.repeats)
                got, ours = best(args.repeats, lambda: zoocodec.load(path, device="cpu"))
                assert all(torch.equal(got[n], tensors[n]) for n in tensors)
                rows.append({"what": f"lossless {dtype} load", "threads": threads, "bytes_decoded": size,
                             "file_bytes": path.stat().st_size, "zipnn_bytes": zbytes, "zoocodec_s": ours,
                             "zipnn_decompress_s": zsecs, "decode_speed_ours_over_zipnn": zsecs / ours,
                             "zoocodec_MBps": size / 1e6 / ours, "zipnn_MBps": size / 1e6 / zsecs})
            print(rows[-3:], file=sys.stderr)
    scaling = {r["what"]: r["zoocodec_s"] / next(s["zoocodec_s"] for s in rows if s["what"] == r["what"]
                                                  and s["threads"] == 2) for r in rows if r["threads"] == 1}
    result = {"machine": machine(("numpy", "torch", "zipnn", "safetensors")), "model": args.model,
              "repeats": args.repeats, "rows": rows, "speedup_2_over_1_threads": scaling,
              "load_average_at_end": os.getloadavg()}
    for r in rows:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
    print("2 threads over 1:", {k: round(v, 2) for k, v in scaling.items()})
    print(f"saved {save('decode', result)}")


if __name__ == "__main__":
    main()
