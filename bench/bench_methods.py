"""Rate-distortion of dither, dct, klt, prune and lowrank against plain uniform, in one run.

    python bench/bench_methods.py [--quick]      (--quick: mnist-cnn only)

For each model (mnist-cnn, minilm) every float tensor the pipeline would quantize
(>= 4096 weights) is encoded by each method setting; bits/weight counts every payload
byte of those tensors (symbols, masks, steps, bases, factors; not the container's JSON),
SQNR sums signal and noise energy over them. The peer is plain uniform quantization with
one step for the whole model (`uniform:step=S`, the MSE-optimal allocation under entropy
coding) swept over steps in the same run; every point reports the SQNR uniform reaches at
the same bits/weight (linear interpolation between its points) and the difference in dB.
On mnist-cnn every point also gets top-1 on the 5,000 opencv-doc digits (zoocodec.eval).
A second table measures what pruning saves at one step: the pruned tensor (mask + kept
symbols) against the dense tensor and against the pruned tensor with its zeros left in.
Results: bench/results/methods[-quick]-DATE.json.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")  # before NumPy loads its BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
import numpy as np
import torch

from bench_common import machine, save
from zoocodec.kernels.prune import magnitude_mask
from zoocodec.methods import TensorData, parse_spec
from zoocodec.pipeline.core import DEFAULT_MIN_SIZE, load

UNIFORM_STEPS = [2.0**-k for k in range(1, 12)]


def settings(quick: bool) -> list[str]:
    """Method settings; steps and water levels on the same grid as the uniform peer."""
    steps = [2.0**-6, 2.0**-8] if quick else [2.0**-5, 2.0**-7, 2.0**-9]
    out = []
    for s in steps:
        out += [f"dither:step={s}", f"dither:step={s},lattice=d4", f"dither:step={s},lattice=e8"]
        out += [f"dct:theta={s * s / 12:.6g}", f"klt:theta={s * s / 12:.6g},block=8"]
    out += ["dct:bits=2", "klt:bits=2,block=8"]  # a per-tensor budget instead of one water level
    for sparsity in (0.5, 0.9):
        out += [f"prune:sparsity={sparsity},then=uniform:step={s}" for s in steps[:2]]
    out += ["prune:sparsity=0.5,per_row=true,then=uniform:bits=6"]
    out += ["lowrank:energy=0.5", "lowrank:energy=0.8,bits=8", "lowrank:energy=0.95,bits=8"]
    return out


def run(tensors: list[TensorData], spec_text: str) -> dict:
    """Encode every tensor with one spec: bits/weight, SQNR, seconds, reconstructions."""
    spec = parse_spec(spec_text)
    nbytes = signal = noise = 0.0
    recon = {}
    start = time.perf_counter()
    for t in tensors:
        enc = spec.encode(t)
        nbytes += sum(len(v) for v in enc.segments.values())
        w = t.float64()
        r = TensorData(t.name, t.dtype, enc.recon).float64()
        signal += float(np.sum(w * w))
        noise += float(np.sum((w - r) ** 2))
        recon[t.name] = enc.recon
    seconds = time.perf_counter() - start
    n = sum(t.array.size for t in tensors)
    return {"spec": str(spec), "bits_per_weight": 8 * nbytes / n, "sqnr_db": 10 * np.log10(signal / noise),
            "encode_s": round(seconds, 3), "recon": recon}


def uniform_at(curve: list[dict], bits: float) -> float | None:
    """The peer's SQNR at `bits`, interpolated linearly in bits; None outside its range."""
    pts = sorted((p["bits_per_weight"], p["sqnr_db"]) for p in curve)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if not xs[0] <= bits <= xs[-1]:
        return None
    return float(np.interp(bits, xs, ys))


def top1(model: str, tensors: list[TensorData], recon: dict) -> float | None:
    if model != "mnist-cnn":
        return None
    from zoocodec.eval.evaluate import evaluator, load_weights, tasks_of

    weights = dict(load_weights(model))
    for t in tensors:
        weights[t.name] = torch.from_numpy(np.ascontiguousarray(recon[t.name]))
    return float(evaluator(model, tasks_of(model, "digits")[0]).score(weights)["top1"])


def prune_savings(tensors: list[TensorData], step: float) -> list[dict]:
    """Bytes of pruned coding vs the dense tensor and vs the pruned tensor with zeros kept, same step."""
    uniform = parse_spec(f"uniform:step={step}")
    dense = sum(sum(map(len, uniform.encode(t).segments.values())) for t in tensors)
    rows = []
    for sparsity in (0.5, 0.9):
        spec = parse_spec(f"prune:sparsity={sparsity},then=uniform:step={step}")
        pruned = zeros_in = mask = 0
        for t in tensors:
            enc = spec.encode(t)
            pruned += sum(map(len, enc.segments.values()))
            mask += len(enc.segments["mask"])
            kept = magnitude_mask(t.float64(), sparsity, np)
            zeroed = TensorData(t.name, t.dtype, np.where(kept, t.array, 0).astype(t.array.dtype))
            zeros_in += sum(map(len, uniform.encode(zeroed).segments.values()))
        n = sum(t.array.size for t in tensors)
        rows.append({"sparsity": sparsity, "step": step, "bits_dense": 8 * dense / n, "bits_pruned": 8 * pruned / n,
                     "bits_mask": 8 * mask / n, "bits_zeros_in_uniform": 8 * zeros_in / n,
                     "pruned_over_dense": pruned / dense, "pruned_over_zeros_in": pruned / zeros_in})
    return rows


def bench_model(model: str, quick: bool) -> dict:
    tensors = [t for t in load(model).tensors() if t.is_float and t.array.size >= DEFAULT_MIN_SIZE]
    n = sum(t.array.size for t in tensors)
    print(f"{model}: {len(tensors)} tensors, {n:,} weights", flush=True)
    curve = []
    for s in UNIFORM_STEPS:
        p = run(tensors, f"uniform:step={s}")
        p["top1"] = top1(model, tensors, p.pop("recon"))
        curve.append(p)
        print(
            f"  {p['spec']:60s} {p['bits_per_weight']:6.3f} b/w  {p['sqnr_db']:6.2f} dB  top1 {p['top1']}", flush=True
        )
    points = []
    for text in settings(quick):
        p = run(tensors, text)
        p["top1"] = top1(model, tensors, p.pop("recon"))
        peer = uniform_at(curve, p["bits_per_weight"])
        p["uniform_sqnr_db_at_equal_bits"] = peer
        p["delta_sqnr_db"] = None if peer is None else p["sqnr_db"] - peer
        points.append(p)
        print(f"  {p['spec']:60s} {p['bits_per_weight']:6.3f} b/w  {p['sqnr_db']:6.2f} dB  "
              f"vs uniform {p['delta_sqnr_db'] if peer is None else round(p['delta_sqnr_db'], 2)} dB  "
              f"top1 {p['top1']}  {p['encode_s']} s", flush=True)
    return {"tensors": len(tensors), "weights": n, "uniform": curve, "methods": points,
            "prune_savings": prune_savings(tensors, 2.0**-7)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="mnist-cnn only, fewer settings")
    args = ap.parse_args()
    torch.set_num_threads(2)
    models = ["mnist-cnn"] if args.quick else ["mnist-cnn", "minilm"]
    result = {"machine": machine(), "peer": "uniform:step=S (one step for all tensors), same run",
              "models": {m: bench_model(m, args.quick) for m in models}}
    print(save("methods-quick" if args.quick else "methods", result))


if __name__ == "__main__":
    main()
