"""Lossless coding of every zoo model's float weights, fp32 and bf16: zoocodec's float
coder (byte planes; the exponents by Huffman, the default `planes=huffman`, and by rANS,
`planes=rans`) against zipnn, measured in the same run on the same bytes, tensor by tensor,
in memory, with 1 and 2 threads (their calls interleaved). Reports size and speed ratios
(ours / zipnn) by wall seconds and by the process's CPU seconds (all its threads: on a
shared machine the wall time is mostly waiting for a core); every decode is checked
bit-exact.

    python bench/bench_lossless.py [--models mnist-cnn,...] [--repeats 3] [--suffix b]

zipnn overwrites the buffer handed to compress(): it gets a fresh copy each time.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from bench_common import machine, save
from zoocodec.codecs import floatplanes
from zoocodec.pipeline import modelio, zoo

MODELS = ["mnist-cnn", "fmnist-cnn", "effnet-lite0", "minilm"]
THREADS = (1, 2)


def float_tensors(model: str) -> list[torch.Tensor]:
    src = modelio.open_model(zoo.resolve(model))
    return [t for t in (src.torch(n) for n in src.names) if t.dtype == torch.float32]


def as_bits(t: torch.Tensor, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16).ravel()
    return t.contiguous().numpy().view(np.uint32).ravel()


def timed(fn):
    """(result, wall seconds, CPU seconds of the process)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def measure(model: str, dtype: str, repeats: int, planes: str) -> list[dict]:
    """One row per thread count (1 and 2), every call of both interleaved in each repeat."""
    import zipnn

    bits = [as_bits(t, dtype) for t in float_tensors(model)]
    values = [b.view(np.float32 if dtype == "float32" else np.float16) for b in bits]  # bf16 bits: any 2-byte view
    nbytes = sum(b.nbytes for b in bits)
    blobs = [b.tobytes() for b in bits]
    zips = {threads: zipnn.ZipNN(bytearray_dtype=dtype, threads=threads) for threads in THREADS}
    wall, cpu, coded = {t: {} for t in THREADS}, {t: {} for t in THREADS}, {}
    for _ in range(repeats):  # interleaved (peer and ours, 1 and 2 threads): all see the same machine load
        for threads in THREADS:
            z = zips[threads]
            zc, *z_enc = timed(lambda: [z.compress(bytearray(b)) for b in blobs])
            zback, *z_dec = timed(lambda: [z.decompress(c) for c in zc])
            oc, *o_enc = timed(lambda: [floatplanes.encode(v, threads=threads, huffman=planes == "huffman")
                                        for v in values])
            oback, *o_dec = timed(lambda: [floatplanes.decode(c, v.size, v.dtype, threads=threads)
                                           for c, v in zip(oc, values, strict=True)])
            for key, (w, c) in (("z_enc", z_enc), ("z_dec", z_dec), ("o_enc", o_enc), ("o_dec", o_dec)):
                wall[threads][key] = min(wall[threads].get(key, float("inf")), w)
                cpu[threads][key] = min(cpu[threads].get(key, float("inf")), c)
            assert all(bytes(a) == b for a, b in zip(zback, blobs, strict=True)), "zipnn round trip failed"
            assert all(a.tobytes() == v.tobytes() for a, v in zip(oback, values, strict=True)), "round trip failed"
            coded[threads] = (sum(map(len, oc)), sum(map(len, zc)))
    rows = []
    for threads in THREADS:
        (ours, theirs), w, c = coded[threads], wall[threads], cpu[threads]
        rows.append({
            "model": model, "dtype": dtype, "planes": planes, "threads": threads, "tensors": len(bits),
            "bytes": nbytes, "ours_bytes": ours, "zipnn_bytes": theirs, "ours_ratio": nbytes / ours,
            "zipnn_ratio": nbytes / theirs, "size_zipnn_over_ours": theirs / ours,
            "wall_s": w, "cpu_s": c,
            "ours_encode_MBps": nbytes / 1e6 / w["o_enc"], "ours_decode_MBps": nbytes / 1e6 / w["o_dec"],
            "zipnn_encode_MBps": nbytes / 1e6 / w["z_enc"], "zipnn_decode_MBps": nbytes / 1e6 / w["z_dec"],
            "encode_speed_ours_over_zipnn": w["z_enc"] / w["o_enc"],
            "decode_speed_ours_over_zipnn": w["z_dec"] / w["o_dec"],
            "encode_cpu_zipnn_over_ours": c["z_enc"] / c["o_enc"],
            "decode_cpu_zipnn_over_ours": c["z_dec"] / c["o_dec"],
        })
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | dtype | planes | threads | ratio ours / zipnn | size: zipnn / ours "
             "| decode speed: ours / zipnn, CPU (wall) | encode speed: ours / zipnn, CPU (wall) |",
             "| --- | --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['dtype']} | {r['planes']} | {r['threads']} "
                     f"| {r['ours_ratio']:.3f} / {r['zipnn_ratio']:.3f} "
                     f"| {r['size_zipnn_over_ours']:.4f} "
                     f"| {r['decode_cpu_zipnn_over_ours']:.2f} ({r['decode_speed_ours_over_zipnn']:.2f}) "
                     f"| {r['encode_cpu_zipnn_over_ours']:.2f} ({r['encode_speed_ours_over_zipnn']:.2f}) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--suffix", default="", help="appended to the results file's date (a second run that day)")
    ap.add_argument("--planes", default="huffman,rans", help="the float coder's plane coders to measure")
    args = ap.parse_args()
    start = machine(("numpy", "torch", "zipnn", "zstandard"))  # (its load average: before the run)
    torch.set_num_threads(1)
    rows = []
    for model in args.models.split(","):
        for dtype in ("float32", "bfloat16"):
            for planes in args.planes.split(","):
                rows += measure(model, dtype, args.repeats, planes)
                print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, file=sys.stderr)
    scaling = {f"{r['model']}/{r['dtype']}/{r['planes']}": next(
        s["ours_decode_MBps"] for s in rows if s["model"] == r["model"] and s["dtype"] == r["dtype"]
        and s["planes"] == r["planes"] and s["threads"] == 2) / r["ours_decode_MBps"]
        for r in rows if r["threads"] == 1}
    result = {"machine": start, "load_average_at_end": os.getloadavg(), "repeats": args.repeats, "rows": rows,
              "decode_scaling_2_over_1_threads": scaling}
    print(table(rows))
    print("decode speed-up (wall), 2 threads over 1:", {k: round(v, 2) for k, v in scaling.items()})
    out = save("lossless", result)
    if args.suffix:
        out = out.replace(out.with_name(f"{out.stem}{args.suffix}.json"))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
