"""Foundation benchmark on `minilm`, in one run:

- uniform quantization (one step for the whole model at several sizes; 8/6/4 bits per
  channel): ratio, bits/weight, coded size vs the symbols' order-0 entropy, SQNR, and the
  document-embedding cosine vs fp32 (300 documents of gensim's lee_background.cor);
- lossless: zoocodec's float coder vs zstd-19 and zipnn on fp32 and bf16 weights;
- encode and decode MB/s (fp32 bytes per second) for everything.

    python bench/bench_foundation.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zstandard

import zoocodec
from bench_common import machine, save
from zoocodec.codecs import ans, floatplanes
from zoocodec.codecs.base import order0_bits
from zoocodec.eval.data import lee_documents
from zoocodec.eval.text import TextModel
from zoocodec.kernels import uniform as K
from zoocodec.methods import TensorData, parse_spec
from zoocodec.pipeline import zoo

STEPS = [2 ** (-e / 4) for e in (36, 34, 32, 30, 28)]
BITS = [8, 6, 4]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def cosine(encoder_ref: torch.Tensor, folder: Path, tensors: dict, docs: list[str]) -> tuple[float, float]:
    emb = TextModel(folder, tensors).encode(docs)
    cos = (emb * encoder_ref).sum(1)
    return float(cos.mean()), float(cos.min())


def entropy_bits(tensors: dict, spec_text: str, min_size: int) -> tuple[float, int]:
    """Order-0 entropy of every quantized tensor's symbols (bits) and their coded bytes."""
    spec = parse_spec(spec_text)
    bits, coded = 0.0, 0
    for name, t in tensors.items():
        if not t.is_floating_point() or t.numel() < min_size:
            continue
        w = TensorData(name, "float32", t.numpy()).float64()
        symbols = K.quantize(w, spec.steps_for(w), np)
        bits += order0_bits(symbols)
        coded += len(ans.encode(symbols))
    return bits, coded


def lossy(folder: Path, tensors: dict, ref: torch.Tensor, docs: list[str], specs: list[str], log) -> list[dict]:
    rows = []
    fp32_bytes = sum(t.numel() * 4 for t in tensors.values() if t.dtype == torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            out = Path(tmp) / "m.zc"
            t0 = time.perf_counter()
            rep = zoocodec.compress(folder, out, spec)
            t1 = time.perf_counter()
            back = zoocodec.decompress(out)
            t2 = time.perf_counter()
            ent, coded = entropy_bits(tensors, spec, 4096)
            mean, low = cosine(ref, folder, back, docs)
            rows.append({
                "spec": spec, "ratio": rep.ratio, "bits_per_weight": rep.bits_per_weight, "sqnr_db": rep.sqnr_db,
                "symbols_entropy_bits": ent, "symbols_coded_bits": 8 * coded,
                "entropy_overhead_pct": 100 * (8 * coded / ent - 1),
                "doc_cosine_mean": mean, "doc_cosine_min": low,
                "encode_MBps": fp32_bytes / 1e6 / (t1 - t0), "decode_MBps": fp32_bytes / 1e6 / (t2 - t1),
            })
            log(rows[-1])
    return rows


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def lossless(tensors: dict, quick: bool, log) -> list[dict]:
    import zipnn

    rows = []
    for dtype in ("float32", "bfloat16"):
        arrays = [t.to(getattr(torch, dtype)).contiguous() for t in tensors.values() if t.dtype == torch.float32]
        raw = [(a.view(torch.int16).numpy().view(np.uint16) if dtype == "bfloat16" else a.numpy()) for a in arrays]
        nbytes = sum(r.nbytes for r in raw)
        coded, enc = timed(lambda: [floatplanes.encode(r) for r in raw])
        _, dec = timed(lambda: [floatplanes.decode(c, r.size, r.dtype) for c, r in zip(coded, raw, strict=True)])
        rows.append({"dtype": dtype, "tool": "zoocodec lossless", "ratio": nbytes / sum(map(len, coded)),
                     "encode_MBps": nbytes / 1e6 / enc, "decode_MBps": nbytes / 1e6 / dec})
        z = zipnn.ZipNN(bytearray_dtype=dtype, threads=1)
        blobs = [r.tobytes() for r in raw]
        coded, enc = timed(lambda: [z.compress(bytearray(b)) for b in blobs])  # zipnn overwrites its input
        out, dec = timed(lambda: [z.decompress(c) for c in coded])
        assert all(bytes(o) == b for o, b in zip(out, blobs, strict=True)), "zipnn round trip failed"
        rows.append({"dtype": dtype, "tool": "zipnn (1 thread)", "ratio": nbytes / sum(map(len, coded)),
                     "encode_MBps": nbytes / 1e6 / enc, "decode_MBps": nbytes / 1e6 / dec})
        level = 3 if quick else 19
        coded, enc = timed(lambda: [zstandard.ZstdCompressor(level=level).compress(b) for b in blobs])
        _, dec = timed(lambda: [zstandard.ZstdDecompressor().decompress(c) for c in coded])
        rows.append({"dtype": dtype, "tool": f"zstd-{level}", "ratio": nbytes / sum(map(len, coded)),
                     "encode_MBps": nbytes / 1e6 / enc, "decode_MBps": nbytes / 1e6 / dec})
        for r in rows[-3:]:
            log(r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two lossy settings, 60 documents, zstd-3")
    args = ap.parse_args()
    torch.set_num_threads(1)
    folder = zoo.resolve("minilm")
    tensors = weights(folder)
    docs = list(lee_documents())[: 60 if args.quick else 300]
    ref = TextModel(folder, tensors).encode(docs)
    specs = [f"uniform:step={s!r}" for s in STEPS] + [f"uniform:bits={b}" for b in BITS]
    if args.quick:
        specs = [specs[1], "uniform:bits=8"]
    def log(r):
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, file=sys.stderr)

    result = {"model": "minilm", "machine": machine(("numpy", "torch", "constriction", "zstandard", "zipnn")),
              "documents": len(docs), "lossy": lossy(folder, tensors, ref, docs, specs, log),
              "lossless": lossless(tensors, args.quick, log)}
    print_tables(result)
    print(f"saved {save('foundation-quick' if args.quick else 'foundation', result)}")


def print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"minilm: uniform quantization ({result['documents']} documents)")
    for col in ("setting", "ratio", "bits/w", "entropy overhead %", "SQNR dB", "doc cosine mean/min", "enc MB/s",
                "dec MB/s"):
        t.add_column(col, justify="left" if col == "setting" else "right")
    for r in result["lossy"]:
        t.add_row(r["spec"], f"{r['ratio']:.2f}", f"{r['bits_per_weight']:.3f}", f"{r['entropy_overhead_pct']:.2f}",
                  f"{r['sqnr_db']:.1f}", f"{r['doc_cosine_mean']:.5f} / {r['doc_cosine_min']:.5f}",
                  f"{r['encode_MBps']:.0f}", f"{r['decode_MBps']:.0f}")
    lossless = Table(title="minilm: lossless")
    for col in ("dtype", "tool", "ratio", "enc MB/s", "dec MB/s"):
        lossless.add_column(col, justify="left" if col in ("dtype", "tool") else "right")
    for r in result["lossless"]:
        lossless.add_row(
            r["dtype"], r["tool"], f"{r['ratio']:.4f}", f"{r['encode_MBps']:.0f}", f"{r['decode_MBps']:.0f}"
        )
    Console(width=150).print(t, lossless)


if __name__ == "__main__":
    main()
