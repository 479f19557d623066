"""Side information of smollm2-135m's min-max groups at the precision it needs: bits saved against token KL.

Every decoder-layer matrix (210, 105.8M weights; Q4_1-derived, so `uniform:bits=4,group=32,zero=true` reproduces
them exactly with float16 steps and minimums) in 4-bit groups of 32. Each variant rounds each group's step to M
mantissa bits and its centre (zero point + 7.5 steps) to a grid of step / 2^F (zoocodec.methods.uniform.coded_side),
the weights then rounded to the nearest of the group's 16 levels. Per variant: bits/weight of the side information
(order-0 ans of the two code streams, its tables counted, against the float coder's bytes of the float16 values), of
the indices (ans's entropy model), the squared weight error over the groups' exact step d^2 (d^2/12 would be one
whole step of rounding error), and the token KL of the model with every other tensor exact, on 4 windows of lee.cor
(automatic mode's calibration text, never the judged lee_background.cor). `refit` variants: given the exact
indices, the zero point refitted by least squares after the step is rounded (then put on its grid).

    nice -n 10 python bench/bench_group_side_lossy.py --tag n   # 12-05n: renamed group_side_lossy-2026-12-05n.json
"""
from __future__ import annotations

import argparse
import json
import resource

import numpy as np
import torch

from bench_common import machine, save

VARIANTS = ((4, 1), (4, 2), (5, 2), (5, 3), (6, 3), (6, 4), (7, 4), (8, 5))  # (mantissa bits M, centre grid 2^-F)
REFIT = ((5, 3), (6, 3))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--kl", default="all", help="variants judged by token KL: all, or none")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    torch.set_num_threads(1)

    import bench_llm_head_to_head as H
    from zoocodec.codecs.ans import Ans
    from zoocodec.eval.evaluate import load_weights
    from zoocodec.kernels import uniform as K
    from zoocodec.methods import parse_spec
    from zoocodec.methods.uniform import coded_side, side_step, side_zero
    from zoocodec.pipeline.modelio import to_tensordata

    w = load_weights(H.MODEL)
    names = sorted(n for n in w if w[n].dim() == 2 and "layers." in n)
    spec = parse_spec("uniform:bits=4,group=32,zero=true")
    labels = ["float16 (today)", *(f"M={m},F={f}" for m, f in VARIANTS), *(f"M={m},F={f},refit" for m, f in REFIT)]
    acc = {k: {"side_bits": 0.0, "index_bits": 0.0, "err2_over_d2": 0.0, "err2": 0.0} for k in labels}
    recon = {k: {} for k in labels}
    count = 0
    for name in names:
        x = w[name].double().numpy()
        n = x.size
        count += n
        rows, cols = x.shape
        q = spec.quantize(to_tensordata(name, w[name]))
        side = sum(len(spec.coder_for(s).encode(q.symbols[s])) for s in ("group_steps", "group_zeros"))
        d0 = q.symbols["group_steps"].view("<f4").astype(np.float64).reshape(rows, -1)
        sym0 = q.symbols["symbols"]
        rec0 = np.asarray(q.recon, dtype=np.float64)
        d2 = K.expand(d0 * d0, 32, cols, np)

        def add(label, side_bytes, sym, rec):
            e2 = (x - rec) ** 2
            r = acc[label]
            r["side_bits"] += 8.0 * side_bytes
            r["index_bits"] += Ans().model(sym).bits(sym)
            r["err2_over_d2"] += float((e2 / d2).sum())
            r["err2"] += float(e2.sum())
            if a.kl == "all":
                recon[label][name] = torch.from_numpy(rec.astype(np.float32))

        add(labels[0], side, sym0, rec0)
        lo, hi = K.group_ranges(x, 32, np)
        for m, f in VARIANTS:
            steps, zeros, codes, centres = coded_side(lo, hi, 4, m, f)
            sym = K.quantize_groups(x, steps, zeros, 32, np)
            rec = K.dequantize_groups(sym, steps, zeros, 32, np)
            add(f"M={m},F={f}", len(Ans().encode(codes.ravel())) + len(Ans().encode(centres.ravel())), sym, rec)
        z0 = q.symbols["group_zeros"].view("<f4").astype(np.float64).reshape(rows, -1)
        for m, f in REFIT:
            steps, _, codes, _ = coded_side(lo, hi, 4, m, f)
            # least squares zero point given the exact indices and the rounded step: mean of w - k d
            resid = (x - K.dequantize_groups(sym0, steps, None, 32, np)).reshape(rows, -1, 32)
            zfit = resid.mean(axis=2) if cols % 32 == 0 else z0
            centres = np.rint((zfit / steps + 7.5) * (1 << f)).astype(np.int64)
            zeros = side_zero(centres, steps, 4, f)
            sym = K.quantize_groups(x, steps, zeros, 32, np)
            rec = K.dequantize_groups(sym, steps, zeros, 32, np)
            add(f"M={m},F={f},refit", len(Ans().encode(codes.ravel())) + len(Ans().encode(centres.ravel())), sym, rec)
        assert np.array_equal(side_step(codes, m), steps)
        print(name, f"{cpu():.0f} CPU s", flush=True)
    out = {"machine": machine(("numpy", "torch")), "what": __doc__.split("\n\n")[0], "tensors": len(names),
           "weights": count, "model_weights": sum(v.numel() for v in w.values() if v.is_floating_point()),
           "variants": {}}
    ev = H.calibration_evaluator(a.windows) if a.kl == "all" else None
    for label in labels:
        r = {k: v / count for k, v in acc[label].items()}
        r["total_bits"] = r["side_bits"] + r["index_bits"]
        if ev is not None:
            m = ev.judge({**w, **recon[label]})
            r.update(kl=m.loss, kl_low=m.loss_low, kl_high=m.loss_high, kl_value=m.value)
            recon[label] = None
        out["variants"][label] = r
        print(label, json.dumps(r), flush=True)
        path = save("group_side_lossy", out, a.tag)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
