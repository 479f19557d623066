"""Video coding of weights vs zoocodec's entropy coders, measured on real models.

    python bench/bench_video.py [--quick]

1. Lossless, single models (minilm, mnist-cnn) at 4/6/8 bits per channel: bits/weight of
   H.264 and HEVC (x264/x265 through PyAV) vs the order-0 ANS coder and the context coder
   'ctx' on the very same symbols; encode/decode speed (million weights per second).
2. Lossy video (CRF) vs plain requantization + ANS: bits/weight vs weight error (SQNR),
   and top-1 on mnist-cnn's 5,000 real digits.
3. The fmnist-cnn checkpoint sequence (zoocodec/data/fmnist-cnn/epoch-*.safetensors), and a
   synthetic sparse-update sequence from mnist-cnn: bits/weight per member for inter-coded
   video, delta + entropy coding, independent coding; the time to read the last member.

minilm is measured on layer 0 (six matrices) + the position embeddings, and (not with
--quick) on the 11.7M-weight word-embedding table: x265 encodes about 0.6 M weights/s on
this 2-core machine, so all 22.7M weights at three bit depths would take ten minutes.
Results: bench/results/video-DATE.json (with the machine and versions).
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import zoocodec
from bench_common import machine, save
from zoocodec.codecs import CODERS, parse_coder
from zoocodec.codecs.base import order0_bits
from zoocodec.kernels import uniform as K
from zoocodec.methods import parse_spec
from zoocodec.pipeline.core import DEFAULT_MIN_SIZE, load
from zoocodec.pipeline.sequence import SeqArchive, compress_seq

MINILM_SUBSET = ("encoder.layer.0.", "embeddings.position_embeddings.weight")
CHECKPOINTS = Path(zoocodec.__file__).parent / "data" / "fmnist-cnn"


def tensors(model: str, names=None) -> dict[str, np.ndarray]:
    """The float tensors zoocodec quantizes (>= 4096 weights), as float64."""
    out = {}
    for t in load(model).tensors():
        if t.is_float and t.array.size >= DEFAULT_MIN_SIZE and (names is None or t.name.startswith(names)):
            out[t.name] = t.float64()
    return out


def coders() -> dict:
    """name -> (encode, decode) of symbols; video in software, lossless, default preset."""
    out = {}
    for name in ("ans", "ctx", "video-h264(hw=cpu)", "video-hevc(hw=cpu)"):
        coder = parse_coder(name)
        out[name.split("(")[0]] = (coder.encode, lambda b, n, c=coder: c.decode(b, (n,)))
    return out


def lossless_table(label: str, weights: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for bits in (4, 6, 8):
        spec = parse_spec(f"uniform:bits={bits}")
        symbols = {n: K.quantize(w, spec.steps_for(w), np) for n, w in weights.items()}
        count = sum(s.size for s in symbols.values())
        entropy = sum(order0_bits(s) for s in symbols.values()) / count
        for name, (enc, dec) in coders().items():
            size = t_enc = t_dec = 0.0
            for s in symbols.values():
                t = time.perf_counter()
                data = enc(s)
                t_enc += time.perf_counter() - t
                t = time.perf_counter()
                back = dec(data, s.size)
                t_dec += time.perf_counter() - t
                assert np.array_equal(back, s.reshape(-1)), f"{name} is not lossless"
                size += len(data)
            rows.append({"model": label, "bits": bits, "coder": name, "weights": count,
                         "bits_per_weight": 8 * size / count, "order0_entropy": entropy,
                         "encode_mweights_per_s": count / t_enc / 1e6, "decode_mweights_per_s": count / t_dec / 1e6})
            print(f"  {label} {bits}-bit {name:11s} {rows[-1]['bits_per_weight']:.3f} bits/w "
                  f"(entropy {entropy:.3f}) enc {rows[-1]['encode_mweights_per_s']:.2f} "
                  f"dec {rows[-1]['decode_mweights_per_s']:.2f} Mw/s", flush=True)
        ans_bpw = next(r["bits_per_weight"] for r in rows if r["bits"] == bits and r["coder"] == "ans")
        for r in rows:
            if r["bits"] == bits:
                r["ratio_to_ans"] = r["bits_per_weight"] / ans_bpw
    return rows


def weight_error(weights: dict[str, np.ndarray], recon: dict[str, np.ndarray]) -> dict:
    signal = sum(float(np.sum(w ** 2)) for w in weights.values())
    noise = sum(float(np.sum((weights[n] - recon[n]) ** 2)) for n in weights)
    count = sum(w.size for w in weights.values())
    return {"sqnr_db": math.inf if noise == 0 else 10 * math.log10(signal / noise), "rmse": math.sqrt(noise / count)}


def lossy_table(label: str, model: str, names, crfs, top1: bool) -> list[dict]:
    """Same container pipeline: video CRF sweeps vs requantization + ANS (`names`: a subset only)."""
    weights = tensors(model, names)
    source = model if names is None else {n: torch.from_numpy(w.astype(np.float32)) for n, w in weights.items()}
    specs = [f"uniform:bits={b}" for b in (3, 4, 5, 6, 7, 8)]
    specs += [f"uniform:bits=8,coder=video-{c}(crf={q},hw=cpu)" for c in ("h264", "hevc") for q in crfs]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            path = Path(tmp) / "m.zc"
            zoocodec.compress(source, path, spec)
            with zoocodec.Archive(path) as a:
                recon = {n: a.read(n).astype(np.float64) for n in weights}
                size = sum(sum(s[1] for s in a.entries[n]["segments"].values()) for n in weights)
            row = {"model": label, "spec": spec, "weights": sum(w.size for w in weights.values()),
                   "bits_per_weight": 8 * size / sum(w.size for w in weights.values()), **weight_error(weights, recon)}
            if top1:
                from zoocodec.eval import evaluate

                m = next(m for m in evaluate(path, reference=model) if m.metric == "top1")
                row.update(top1=m.value, top1_baseline=m.baseline)
            rows.append(row)
            print(f"  {label} {spec:42s} {row['bits_per_weight']:.3f} bits/w SQNR {row['sqnr_db']:.2f} dB"
                  + (f" top-1 {row['top1']:.4f}" if top1 else ""), flush=True)
    return rows


def sparse_sequence(steps: int = 4, fraction: float = 0.1) -> list[dict[str, torch.Tensor]]:
    """Synthetic: mnist-cnn's real weights, then steps that each move `fraction` of every tensor a little
    (the regime of fine-tunes that touch few weights; the real checkpoints below change far more)."""
    base = {t.name: torch.from_numpy(t.array.copy()) for t in load("mnist-cnn").tensors()}
    g = torch.Generator().manual_seed(0)
    members = [base]
    for _ in range(steps):
        nxt = {}
        for k, w in members[-1].items():
            if w.dtype.is_floating_point:
                w = w + (
                    (torch.rand(w.shape, generator=g) < fraction) * torch.randn(w.shape, generator=g) * 0.01 * w.std()
                ).to(w.dtype)
            nxt[k] = w
        members.append(nxt)
    return members


def sequence_rows(label: str, members: list, bits: int) -> list[dict]:
    runs = [("video-hevc", f"uniform:bits={bits},coder=video-hevc", "video"),
            ("video-h264", f"uniform:bits={bits},coder=video-h264", "video"),
            ("delta+ans", f"uniform:bits={bits}", "delta"), ("independent ans", f"uniform:bits={bits}", "independent")]
    if "ctx" in CODERS:
        runs += [("delta+ctx", f"uniform:bits={bits},coder=ctx", "delta")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for coding, spec, mode in runs:
            path = Path(tmp) / "s.zc"
            r = compress_seq(members, path, spec, mode)
            with SeqArchive(path) as a:  # random access to the last member (the whole chain for video/delta)
                t = time.perf_counter()
                for name in a.names():
                    a.read(len(members) - 1, name)
                t_last = time.perf_counter() - t
            rows.append({"sequence": label, "bits": bits, "coding": coding, "spec": spec, "mode": mode,
                         "members": r.labels, "quantized_weights_per_member": r.quantized_params,
                         "bits_per_weight": r.bits_per_weight, "mean_bits_per_weight": r.mean_bits_per_weight,
                         "file_bytes": r.file_bytes, "encode_s": r.seconds, "read_last_member_s": t_last})
            print(
                f"  {label} {bits}-bit {coding:16s} "
                + " ".join(f"{b:.3f}" for b in r.bits_per_weight)
                + f" mean {r.mean_bits_per_weight:.3f} (encode {r.seconds:.1f} s, last member {t_last:.2f} s)",
                flush=True,
            )
    indep = next(r["mean_bits_per_weight"] for r in rows if r["coding"] == "independent ans")
    for r in rows:
        r["ratio_to_independent_ans"] = r["mean_bits_per_weight"] / indep
    return rows


def sequence_table() -> dict:
    checkpoints = sorted(CHECKPOINTS.glob("epoch-*.safetensors"))
    out = {"checkpoints": [p.name for p in checkpoints], "rows": []}
    if len(checkpoints) < 2:
        out["note"] = f"no checkpoint sequence in {CHECKPOINTS}"
    for bits in (8, 6):
        if len(checkpoints) >= 2:
            out["rows"] += sequence_rows("fmnist-cnn checkpoints", checkpoints, bits)
        out["rows"] += sequence_rows("mnist-cnn + 10% sparse steps (synthetic)", sparse_sequence(), bits)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the minilm word-embedding table")
    ap.add_argument("--parts", default="lossless,lossy,sequence", help="comma-separated subset to run")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    import av

    result = {
        "machine": machine(("numpy", "torch", "constriction", "av")),
        "ffmpeg": av.library_versions["libavcodec"],
        "notes": "video: x264/x265 preset medium, lossless unless crf; ANS/ctx: zoocodec entropy coders on the same "
        "symbols (uniform, per-channel min-max). Speeds: million weights per second, one process.",
        "lossless": [],
        "lossy": [],
    }
    if "lossless" in parts:
        print("1. lossless", flush=True)
        result["lossless"] += lossless_table("mnist-cnn", tensors("mnist-cnn"))
        result["lossless"] += lossless_table("minilm layer 0 + position embeddings", tensors("minilm", MINILM_SUBSET))
        if not args.quick:
            result["lossless"] += lossless_table(
                "minilm word embeddings", tensors("minilm", ("embeddings.word_embeddings",))
            )
    if "lossy" in parts:
        print("2. lossy", flush=True)
        crfs = (0, 12, 18, 24, 30, 36)
        result["lossy"] += lossy_table("mnist-cnn", "mnist-cnn", None, crfs, top1=True)
        result["lossy"] += lossy_table(
            "minilm layer 0 + position embeddings", "minilm", MINILM_SUBSET, crfs, top1=False
        )
    if "sequence" in parts:
        print("3. sequences", flush=True)
        result["sequence"] = sequence_table()
    name = "video" if parts == {"lossless", "lossy", "sequence"} else "video-" + "-".join(sorted(parts))
    print(f"wrote {save(name + ('-quick' if args.quick else ''), result)}")


if __name__ == "__main__":
    main()
