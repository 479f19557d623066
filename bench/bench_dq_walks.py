"""dq with data-aware rounding (column walks, calibrate.gptq_walks) against uniform with data-aware rounding (GPTQ,
act-order, two sweeps of coordinate descent: automatic mode's default), matrix by matrix at equal layer-output error.

For each matrix of a zoo model with one H (grouped convolutions left out) and each of six steps (multiples of the
weights' RMS), both roundings give a layer-output error tr((W - W_hat) H (W - W_hat)^T) on the calibration H and a
size: the bytes of the smallest of the `ans`, `ctx` and `cabac` payloads of its levels (dq's walks down the columns,
as the file codes them). dq's curve is interpolated at each of uniform's errors (in log error) and the sizes compared
there: below 1 dq is smaller at equal output error.

    nice -n 10 python bench/bench_dq_walks.py [--models minilm effnet-lite0] [--layers 0 5 11]

Writes bench/results/dq-walks-YYYY-MM-DD.json.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench_common import machine, save, zoo_layer_inputs

MULTS = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4)


def payload_bits(q: np.ndarray, trellis: int | None) -> int:
    from zoocodec.codecs.ans import Ans
    from zoocodec.codecs.cabac import Cabac
    from zoocodec.codecs.context import Ctx

    return 8 * min(len(c.encode(q, trellis)) for c in (Ans(), Ctx(), Cabac()))


def curves(w: np.ndarray, h: np.ndarray) -> dict[str, list[tuple[float, float]]]:
    """Per rounding: (bits a weight, output error) at each step of MULTS."""
    from zoocodec.kernels import rdoq as R
    from zoocodec.tuning import calibrate as C

    act = C.prepare(h, C.DAMP, act_order=True)
    rms = float(np.sqrt((w**2).mean()))
    out: dict[str, list[tuple[float, float]]] = {"uniform": [], "dq": []}
    for m in MULTS:
        s = m * rms
        q = C.gptq(w, np.array([s]), h, act_order=True, sweeps=C.SWEEPS, prepared=act)
        out["uniform"].append((payload_bits(q, None) / w.size, _error(w, q * s, h)))
        s = 0.6 * m * rms  # dq's levels are 2 steps apart in each quantizer: about the same errors at 0.6x the step
        k = C.gptq_walks(w, s, act)
        out["dq"].append((payload_bits(k, 0) / w.size, _error(w, R.dq_dequantize(k, np, True) * s, h)))
    return out


def _error(w: np.ndarray, w_hat: np.ndarray, h: np.ndarray) -> float:
    e = w - w_hat
    return float(np.einsum("ij,jk,ik->", e, h, e))


def at_equal_error(ref: list[tuple[float, float]], other: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(ref's bits, other's bits interpolated at ref's error) wherever ref's error is inside other's range."""
    le = np.log([e for _, e in other])
    bits = np.array([b for b, _ in other])
    order = np.argsort(le)
    return [(b, float(np.interp(np.log(e), le[order], bits[order]))) for b, e in ref
            if le.min() <= np.log(e) <= le.max()]


def model_rows(model: str, layers: list[int] | None) -> dict:
    start = time.process_time()
    weights, cal, inputs = zoo_layer_inputs(model)
    rows, ratios, sizes = [], [], []
    for name, li in inputs.items():
        if li.h.shape[0] != 1 or li.h.shape[-1] < 8:
            continue
        if layers is not None and not any(f".{i}." in name for i in layers):
            continue
        w = weights[name].double().reshape(weights[name].shape[0], -1).numpy()
        c = curves(w, li.h[0])
        pairs = at_equal_error(c["uniform"], c["dq"])
        ratio = float(np.mean([d / u for u, d in pairs])) if pairs else None
        rows.append({"tensor": name, "shape": list(w.shape), "curves": c, "uniform_vs_dq_bits": pairs,
                     "dq_over_uniform": ratio})
        if ratio is not None:
            ratios.append(ratio)
            sizes.append(w.size)
        print(f"{model} {name} {tuple(w.shape)}: dq/uniform at equal output error "
              + " ".join(f"{u:.3f}->{d:.3f}" for u, d in pairs), flush=True)
    weighted = float(np.average(ratios, weights=sizes)) if ratios else None
    return {"model": model, "calibration": cal.about, "matrices": len(rows), "dq_over_uniform_weighted": weighted,
            "dq_over_uniform_range": [min(ratios), max(ratios)] if ratios else None, "rows": rows,
            "cpu_seconds": time.process_time() - start}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["minilm", "effnet-lite0"])
    p.add_argument("--layers", nargs="*", type=int, default=None, help="only tensors named .N. (blocks or layers)")
    a = p.parse_args(argv)
    out = {"machine": machine(), "mults": MULTS, "models": []}
    for m in a.models:
        r = model_rows(m, a.layers)
        out["models"].append(r)
        print(f"{m}: {r['matrices']} matrices; dq's size over uniform's at equal layer-output error "
              f"{r['dq_over_uniform_weighted']:.4f} (weighted by size; {r['dq_over_uniform_range']})", flush=True)
    print(save("dq-walks", out))
    return out


if __name__ == "__main__":
    main()
