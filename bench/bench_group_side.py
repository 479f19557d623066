"""Where the bits of smollm2-135m's group formats go: indices against side information, and what coding could save.

For the 7 matrices of decoder layers 2, 15 and 27 (Q4_1-derived: 4-bit groups of 32 with zero points
reproduce them exactly): the 4-bit indices under ans, ctx and cabac; the groups' steps and zero points
(float16 values) under the float coder they are written with, and under order-0 rANS of their float16 bits
(each table counted), alone and predicted (a step from the one before it in its row, a zero point from
-7.5 steps). Then one step per tensor at 1.5, 2 and 3x the groups' RMS step: the symbols under ans, ctx and
cabac against the conditional entropy given each group's own (oracle) step class, the most a context on
the group's scale could take off.
    python bench/bench_group_side.py   # writes bench/results/group_side-<date>.json
"""
from __future__ import annotations

import json

import numpy as np
import torch

from bench_common import machine, save

LAYERS = ("layers.2.", "layers.15.", "layers.27.")


def entropy(x: np.ndarray) -> float:
    _, c = np.unique(x, return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def conditional(x: np.ndarray, ctx: np.ndarray) -> float:
    return sum((ctx == c).sum() * entropy(x[ctx == c]) for c in np.unique(ctx)) / x.size


def main() -> None:
    from zoocodec.codecs import parse_coder
    from zoocodec.codecs.ans import Ans
    from zoocodec.eval.evaluate import load_weights
    from zoocodec.methods import parse_spec
    from zoocodec.pipeline.modelio import to_tensordata

    w = load_weights("smollm2-135m")
    spec = parse_spec("uniform:bits=4,group=32,zero=true")
    coders = {c: parse_coder(c) for c in ("ans", "ctx", "cabac")}
    rows, totals = [], {}
    for name in sorted(n for n in w if w[n].dim() == 2 and any(s in n for s in LAYERS)):
        n = w[name].numel()
        q = spec.quantize(to_tensordata(name, w[name]))
        sym = q.symbols["symbols"]
        row = {"tensor": name, "weights": n, "exact": bool(np.asarray(q.recon).tobytes() == w[name].numpy().tobytes())}
        for c, coder in coders.items():
            row[f"indices {c}"] = len(coder.encode(sym)) * 8 / n
        steps = q.symbols["group_steps"].view("<f4")
        zeros = q.symbols["group_zeros"].view("<f4")
        side = ("group_steps", "group_zeros")
        row["side float"] = sum(len(spec.coder_for(k).encode(q.symbols[k])) for k in side) * 8 / n
        s16 = steps.astype(np.float16).view(np.uint16).astype(np.int64)
        z16 = zeros.astype(np.float16).view(np.uint16).astype(np.int64)
        zs = (z16 & 0x7FFF) * np.where(z16 >> 15, -1, 1)  # ordered as the values
        pred = (-7.5 * steps).astype(np.float16).view(np.uint16).astype(np.int64)
        ps = (pred & 0x7FFF) * np.where(pred >> 15, -1, 1)
        grid = s16.reshape(w[name].shape[0], -1)
        delta = np.diff(grid, axis=1, prepend=grid[:, :1])
        row["side rANS of float16 bits"] = (len(Ans().encode(s16)) + len(Ans().encode(zs))) * 8 / n
        row["side rANS, step from the last in its row"] = (len(Ans().encode(delta)) + len(Ans().encode(zs))) * 8 / n
        row["side rANS, zero point from -7.5 steps"] = (len(Ans().encode(s16)) + len(Ans().encode(zs - ps))) * 8 / n
        row["side order-0 entropy (no tables)"] = (entropy(s16) + entropy(zs)) * len(s16) / n
        m = w[name].double().numpy()
        gstep = steps.astype(np.float64).reshape(m.shape[0], -1)
        rms = float(np.sqrt((gstep**2).mean()))
        cls = np.repeat(np.rint(2 * np.log2(gstep / np.median(gstep))), 32, axis=1)[:, :m.shape[1]].ravel()
        for f in (1.5, 2.0, 3.0):
            k = np.rint(m / (f * rms)).astype(np.int32)
            for c, coder in coders.items():
                row[f"one step {f}x: {c}"] = len(coder.encode(k)) * 8 / n
            row[f"one step {f}x: given the group's step class (oracle)"] = conditional(k.ravel(), cls)
        rows.append(row)
        for key, v in row.items():
            if isinstance(v, float):
                totals[key] = totals.get(key, 0.0) + v * n
        print(json.dumps(row), flush=True)
    count = sum(r["weights"] for r in rows)
    out = {"machine": machine(("numpy", "torch")), "tensors": rows,
           "weighted mean, bits/weight": {k: v / count for k, v in totals.items()}}
    path = save("group_side", out)
    print(f"wrote {path}: {json.dumps(out['weighted mean, bits/weight'], indent=1)}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
