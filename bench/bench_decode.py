"""Whole-model decoding on the CPU, with the peers in the same run on the same weights:

- `zoocodec.load(path, device="cpu")` of minilm at 8 bits (uniform, the default spec)
  against `safetensors.torch.load_file` of the uncompressed model (both from the page
  cache; load_file maps the file and reads nothing, so it is also timed with a copy of every
  tensor into memory of its own, which is what a decoder hands back), and against each
  method's own per-tensor decode (the path before the fused native decoder: float64
  dequantization, one tensor at a time);
- lossless minilm (fp32 and bf16): `zoocodec.load` against zipnn's decompress of every
  tensor with the same threads; the default float coder (exponents by Huffman) and
  `float(planes=rans)` (rows named "... (planes=rans)").
Each with 1 and 2 threads (ZOOCODEC_THREADS; zipnn's `threads`); every decode checked
against the original (bit-exact for lossless). Wall seconds and the process's CPU seconds
(all its threads) are both recorded: on a shared, loaded machine the wall time is mostly
waiting for a core, and the CPU seconds say what each decoder costs.

    python bench/bench_decode.py [--model minilm] [--repeats 3] [--tag TAG]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import zoocodec
from bench_common import machine, save
from zoocodec.pipeline import modelio, zoo

CPU = {}  # fastest CPU seconds of the last call to best(), by label


def best(repeats: int, fn, label: str = ""):
    """(last result, fastest wall seconds); the fastest CPU seconds go to CPU[label]."""
    t_best, c_best, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        out = None  # the last result is freed before the clock starts: each call is timed alone
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        t_best, c_best = min(t_best, time.perf_counter() - t), min(c_best, time.process_time() - c)
    CPU[label] = c_best
    return out, t_best


def per_tensor_decode(path: Path) -> dict[str, np.ndarray]:
    """Each tensor by its method's own decode (no fused native pass): the reference path."""
    with zoocodec.Archive(path) as a:
        return {n: a.decode(n, lambda spec, side, segs, shape, dtype: spec.decode(side, segs, shape, dtype))
                for n in a.names()}


def zipnn_round(tensors: dict[str, torch.Tensor], dtype: str, threads: int):
    """(zipnn's compressed bytes, a function decompressing every tensor), its round trip checked."""
    import zipnn  # the peer

    z = zipnn.ZipNN(bytearray_dtype=dtype, threads=threads)
    blobs = {n: t.contiguous().view(torch.uint8).numpy().tobytes() for n, t in tensors.items()}
    packed = {n: z.compress(bytearray(b)) for n, b in blobs.items()}  # (it overwrites its input: a copy each)
    back = {n: z.decompress(c) for n, c in packed.items()}
    assert all(bytes(back[n]) == blobs[n] for n in blobs), "zipnn round trip failed"
    return sum(map(len, packed.values())), lambda: {n: z.decompress(c) for n, c in packed.items()}


def interleaved(repeats: int, fns: dict) -> tuple[dict, dict]:
    """({label: fastest wall s}, {label: fastest CPU s}) of each function, called in turn each
    repeat (A/B/A/B: a loaded machine's moods reach every one alike)."""
    wall, cpu = dict.fromkeys(fns, float("inf")), dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for label, fn in fns.items():
            out = None
            t, c = time.perf_counter(), time.process_time()
            out = fn()
            t, c = time.perf_counter() - t, time.process_time() - c
            wall[label], cpu[label] = min(wall[label], t), min(cpu[label], c)
            del out
    return wall, cpu


def lossless_row(what: str, threads: int, size: int, path: Path, zbytes: int, zsecs: float, ours: float) -> dict:
    """A lossless load's row: zoocodec's time (`ours`, CPU["ours"]) against zipnn's (`zsecs`, CPU["zipnn"])."""
    return {"what": what, "threads": threads, "bytes_decoded": size, "file_bytes": path.stat().st_size,
            "zipnn_bytes": zbytes, "zoocodec_s": ours, "zipnn_decompress_s": zsecs,
            "decode_speed_ours_over_zipnn": zsecs / ours, "cpu_s": {"zoocodec": CPU["ours"], "zipnn": CPU["zipnn"]},
            "decode_cpu_zipnn_over_ours": CPU["zipnn"] / CPU["ours"], "zoocodec_MBps": size / 1e6 / ours,
            "zipnn_MBps": size / 1e6 / zsecs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tag", default="", help="suffix of the results file name (decode-DATE-TAG.json)")
    args = ap.parse_args()
    start = machine(("numpy", "torch", "zipnn", "safetensors"))  # (its load average: before the run)
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
        rans = "lossless:coder=float(planes=rans)"  # (min_size 0: every tensor takes it)
        zoocodec.compress(floats, tmp / "fp32-rans.zc", rans, min_size=0)
        zoocodec.compress(bf16, tmp / "bf16-rans.zc", rans, min_size=0)
        for threads in (1, 2):
            os.environ["ZOOCODEC_THREADS"] = str(threads)
            torch.set_num_threads(threads)
            _, st = best(args.repeats, lambda: load_file(tmp / "m.safetensors"))
            _, st_read = best(args.repeats, lambda: {k: v.clone() for k, v in load_file(tmp / "m.safetensors").items()},
                              "safetensors")
            got, ours = best(args.repeats, lambda: zoocodec.load(tmp / "m8.zc", device="cpu"), "ours")
            old, before = best(args.repeats, lambda: per_tensor_decode(tmp / "m8.zc"), "before")
            assert all(np.array_equal(got[n].view(torch.uint8).numpy(), old[n].view(np.uint8)) for n in old)
            rows.append({"what": "8-bit load", "threads": threads, "bytes_decoded": nbytes,
                         "file_bytes": (tmp / "m8.zc").stat().st_size, "safetensors_s": st,
                         "safetensors_and_copy_s": st_read, "zoocodec_s": ours, "per_tensor_decode_s": before,
                         "zoocodec_over_safetensors_time": ours / st,
                         "zoocodec_over_safetensors_and_copy_time": ours / st_read,
                         "cpu_s": {"zoocodec": CPU["ours"], "safetensors_and_copy": CPU["safetensors"],
                                   "per_tensor_decode": CPU["before"]},
                         "zoocodec_over_safetensors_and_copy_cpu": CPU["ours"] / CPU["safetensors"],
                         "speedup_over_per_tensor_decode": before / ours,
                         "zoocodec_MBps": nbytes / 1e6 / ours, "safetensors_and_copy_MBps": nbytes / 1e6 / st_read})
            for dtype, tensors, name in (("float32", floats, "fp32"), ("bfloat16", bf16, "bf16")):
                size = sum(t.nbytes for t in tensors.values())
                paths = {"": tmp / f"{name}.zc", " (planes=rans)": tmp / f"{name}-rans.zc"}
                zbytes, zipnn_decode = zipnn_round(tensors, dtype, threads)
                fns = {"zipnn": zipnn_decode} | {label: partial(zoocodec.load, p) for label, p in paths.items()}
                wall, cpu = interleaved(args.repeats, fns)
                for label, path in paths.items():
                    got = zoocodec.load(path, device="cpu")
                    assert all(torch.equal(got[n], tensors[n]) for n in tensors)
                    CPU["ours"], CPU["zipnn"] = cpu[label], cpu["zipnn"]
                    rows.append(lossless_row(f"lossless {dtype} load{label}", threads, size, path, zbytes,
                                             wall["zipnn"], wall[label]))
            print(rows[-5:], file=sys.stderr)

    scaling = {r["what"]: r["zoocodec_s"] / next(s["zoocodec_s"] for s in rows if s["what"] == r["what"]
                                                  and s["threads"] == 2) for r in rows if r["threads"] == 1}
    result = {"machine": start, "model": args.model,
              "repeats": args.repeats, "rows": rows, "speedup_2_over_1_threads": scaling,
              "load_average_at_end": os.getloadavg()}
    for r in rows:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
    print("2 threads over 1:", {k: round(v, 2) for k, v in scaling.items()})
    print(f"saved {save('decode', result, args.tag)}")


if __name__ == "__main__":
    main()
