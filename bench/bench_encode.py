"""Encode speed on the CPU: `zoocodec compress` of a zoo model (uniform:bits=8 and lossless,
end to end: the safetensors read from the page cache, the .zc written) against zipnn's
lossless compress of the same float tensors, with the same threads, in the same run
(interleaved repeats, the best of each; wall and the process's CPU seconds, all threads: on a
shared machine the wall time is mostly waiting for a core). zipnn is timed twice: on the bytes already in
memory (its compress() alone, what it advertises) and end to end (the file read, every
tensor compressed, the result written), the like-for-like peer of `zoocodec compress`.

    python bench/bench_encode.py [--model minilm] [--threads 2] [--repeats 5] [--suffix=-b]

Targets (issue 25): uniform:bits=8 at least 1x zipnn's speed, lossless at least 0.5x.
zipnn overwrites the buffer handed to compress(): it gets a fresh copy, made untimed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import machine, save


def zipnn_inputs(model_path: Path) -> list[tuple[str, bytes]]:
    """(dtype, bytes) of every float tensor of the model's safetensors file(s)."""
    from safetensors.numpy import load_file

    files = [model_path] if model_path.is_file() else sorted(model_path.rglob("*.safetensors"))
    out = []
    for f in files:
        for a in load_file(str(f)).values():
            if a.dtype in (np.float32, np.float16):
                out.append((str(a.dtype), a.tobytes()))
    return out


def zipnn_end_to_end(zipnn, model_path: Path, out: Path, threads: int) -> int:
    """Read the model's safetensors, zipnn-compress every float tensor, write the blobs."""
    from safetensors.numpy import load_file

    files = [model_path] if model_path.is_file() else sorted(model_path.rglob("*.safetensors"))
    coders = {d: zipnn.ZipNN(bytearray_dtype=d, threads=threads) for d in ("float32", "float16")}
    size = 0
    with open(out, "wb") as f:
        for path in files:
            for a in load_file(str(path)).values():
                blob = coders[str(a.dtype)].compress(bytearray(a.tobytes())) if str(a.dtype) in coders else a.tobytes()
                f.write(blob)
                size += len(blob)
    return size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--suffix", default="", help="appended to the results file's date (a second run that day)")
    args = ap.parse_args()
    os.environ["ZOOCODEC_THREADS"] = str(args.threads)  # read by the native engine at every call

    import torch
    import zipnn

    import zoocodec
    from zoocodec.pipeline import zoo

    torch.set_num_threads(args.threads)
    start = machine(("numpy", "torch", "zipnn", "zstandard"))
    path = Path(zoo.resolve(args.model))
    inputs = zipnn_inputs(path)
    nbytes = sum(len(b) for _, b in inputs)
    coders = {d: zipnn.ZipNN(bytearray_dtype=d, threads=args.threads) for d in ("float32", "float16")}
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}  # the process's CPU seconds (all threads), the best of the repeats
    sizes: dict[str, int] = {}

    def timed(name: str, fn, *args):
        t, c = time.perf_counter(), time.process_time()
        out = fn(*args)
        best[name] = min(best.get(name, 1e9), time.perf_counter() - t)
        cpu[name] = min(cpu.get(name, 1e9), time.process_time() - c)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m.zc"
        for _ in range(args.repeats):  # interleaved: every case sees the same load
            copies = [bytearray(b) for _, b in inputs]
            blobs = timed("zipnn_in_memory", lambda cs: [coders[d].compress(c) for (d, _), c in
                                                         zip(inputs, cs, strict=True)], copies)
            sizes["zipnn"] = sum(len(b) for b in blobs)
            del copies, blobs
            timed("zipnn_end_to_end", lambda: zipnn_end_to_end(zipnn, path, Path(tmp) / "z.bin", args.threads))
            for name, spec in (("uniform8", "uniform:bits=8"), ("lossless", "lossless")):
                report = timed(name, zoocodec.compress, args.model, out, spec)
                sizes[name] = report.weight_bytes
                sizes[f"{name}_file"] = report.file_bytes
                bytes_in = report.bytes_in
    rows = {
        "model": args.model, "threads": args.threads, "repeats": args.repeats,
        "float_bytes_zipnn_sees": nbytes, "bytes_in": bytes_in, "seconds_best": best, "sizes": sizes,
        "MBps": {k: bytes_in / 1e6 / v for k, v in best.items()},
        "ratio_zipnn": nbytes / sizes["zipnn"], "ratio_uniform8": bytes_in / sizes["uniform8"],
        "ratio_lossless": bytes_in / sizes["lossless"],
        "speed_vs_zipnn_in_memory": {k: best["zipnn_in_memory"] / best[k] for k in ("uniform8", "lossless")},
        "speed_vs_zipnn_end_to_end": {k: best["zipnn_end_to_end"] / best[k] for k in ("uniform8", "lossless")},
        "cpu_seconds_best": cpu,
        "cpu_speed_vs_zipnn_in_memory": {k: cpu["zipnn_in_memory"] / cpu[k] for k in ("uniform8", "lossless")},
        "cpu_speed_vs_zipnn_end_to_end": {k: cpu["zipnn_end_to_end"] / cpu[k] for k in ("uniform8", "lossless")},
        "targets": {"uniform8": 1.0, "lossless": 0.5},
    }
    result = {"machine": start, "load_average_at_end": os.getloadavg(), "rows": [rows]}
    for key in ("seconds_best", "MBps", "speed_vs_zipnn_in_memory", "speed_vs_zipnn_end_to_end", "cpu_seconds_best",
                "cpu_speed_vs_zipnn_in_memory", "cpu_speed_vs_zipnn_end_to_end"):
        print(key, {k: round(v, 3) for k, v in rows[key].items()}, file=sys.stderr)
    out = save("encode", result)
    if args.suffix:
        out = out.replace(out.with_name(f"{out.stem}{args.suffix}.json"))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
