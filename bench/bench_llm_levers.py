"""Data-aware rounding's settings on smollm2-135m at fixed plans: what act-order and coordinate descent buy there.

bench_h2h_levers.py's measurement for the causal LM: the plan automatic mode made for one token-KL budget (its
strength and coder, group candidates, the tied embedding/head with a step per row by predicted probability), at
base steps around the one it found; only the rounding differs between the configurations, so the per-plan
difference is the lever and its spread over plans the noise. The loss is the token KL on the calibration/search
part of automatic mode's split of lee.cor (bench_llm_head_to_head's --auto-windows windows, never the judged
lee_background.cor). The layer inputs are measured as automatic mode's `sequential` refresh measures them (GPTQ's
order, zoocodec.tuning.gptq.collect_sequential) at its refresh step, once per configuration, with that
configuration's rounding.

Size: the plan's price (the coder's entropy model, group side streams counted, plus the 1-D tensors left lossless),
moved to the budget through loss ~ step^2 of the tensors whose grid follows the base step (`scaled`: one-step
tensors and the per-row head; the min-max groups' grid does not move with it): bits + scaled share x
log2(loss / budget) / 2. A configuration is `default` (calibrate.ACT_ORDER, SWEEPS) or `order=natural|act cd=N`.
`--no-predicted-rows`: the plan of automatic mode's default (12-05b's), the embedding/head on one step and the
layers that leave Q4_1's grid on one step each, all rounded by GPTQ.

    nice -n 5 python bench/bench_llm_levers.py --budget 0.05 --base 0.02477 --refresh 0.0221 --plans 5 \
        --configs "default,order=natural cd=0" --tag 2026-12-05k-kl0.05
    nice -n 5 python bench/bench_llm_levers.py --budget 0.1 --base 0.05505 --refresh 0.05505 --plans 3 \
        --no-predicted-rows --method uniform:bits=8,per_tensor=False,coder=ans --tag 2026-12-05k-kl0.1-onestep

Writes bench/results/llm-levers-YYYY-MM-DD[-T].json (12-05k's renamed llm-levers-2026-12-05k-kl0.05.json, -kl0.1.json).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import time

import numpy as np
import torch

from bench_common import RESULTS, machine, save

SPAN = 0.1  # plans at base steps from (1 - SPAN) to (1 + SPAN) x --base
METHOD = "uniform:bits=8,per_tensor=False,coder=ctx"  # the coder 12-05h's automatic mode chose at both budgets
SENSITIVITIES = RESULTS / "llm_head_to_head-2026-12-05h.sensitivities.json"  # its role sensitivities


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def on_grid(name: str, w: torch.Tensor, spec) -> bool:
    """The method's own rounding returns `w` unchanged (no error for data-aware rounding to move)."""
    from zoocodec.pipeline.modelio import to_tensordata

    return bool(np.array_equal(np.asarray(spec.quantize(to_tensordata(name, w)).recon), w.numpy()))


def settings(label: str) -> dict:
    """DataAware's act_order / sweeps of a configuration label."""
    out: dict = {}
    for o in label.split():
        if o == "default":
            continue
        key, value = o.split("=")
        if key == "order":
            out["act_order"] = {"act": True, "natural": False}[value]
        elif key == "cd":
            out["sweeps"] = int(value)
        else:
            raise ValueError(f"{o}: order=act|natural or cd=N")
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=float, required=True, help="token KL (nats) the plans were made for")
    p.add_argument("--base", type=float, required=True, help="the base step automatic mode found there")
    p.add_argument("--refresh", type=float, required=True, help="the base step its sequential refresh measured at")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--plans", type=int, default=5)
    p.add_argument("--auto-windows", type=int, default=4)
    p.add_argument("--calibration-windows", type=int, default=8)
    p.add_argument("--configs", default="default,order=natural cd=0")
    p.add_argument("--method", default=METHOD, help="the plan's method and coder (12-05b's `--ans` runs: coder=ans)")
    p.add_argument("--no-predicted-rows", action="store_true",
                   help="the embedding/head on one step (automatic mode's default), not a step per row")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    torch.set_num_threads(2)

    import bench_llm_head_to_head as H
    from zoocodec.eval import lm
    from zoocodec.eval.evaluate import metric_row
    from zoocodec.methods import parse_spec
    from zoocodec.tuning import auto
    from zoocodec.tuning.allocate import plan_bits
    from zoocodec.tuning.auto import Asked, _Clock, _Search, reconstruct
    from zoocodec.tuning.gptq import collect_sequential
    from zoocodec.tuning.groupwise import describe

    lm.CALIBRATION_WINDOWS = a.calibration_windows
    auto.PREDICTED_ROWS = not a.no_predicted_rows
    t0 = time.perf_counter()
    H.calibration_evaluator(a.auto_windows)
    spec = parse_spec(a.method)
    asked = Asked(H.MODEL, a.budget, None, None, spec, auto.DEFAULT_MIN_SIZE, None, None, None, True, "gptq",
                  auto.RATE_LAM, None, auto.SPLIT_SEED, True)
    s = _Search(_Clock(lambda m: print("  " + m, flush=True)), asked)
    s.sensitivities(json.loads(SENSITIVITIES.read_text()))
    s.calibrate()
    w, t, ev = s.weights, s.t, s.decide_ev
    total = sum(v.numel() for v in w.values() if v.is_floating_point())
    setup_s = time.perf_counter() - t0
    print(f"setup {setup_s:.0f} s; judged on {len(ev.ref_out):,} tokens", flush=True)

    labels = a.configs.split(",")
    # a tensor every plan puts in min-max groups that its weights already lie on (SmolLM2's layers on Q4_1's grid)
    # comes back from gptq.round_groups unchanged, whatever its inputs: its inputs and factors are not kept (they
    # took 11 GB with two configurations; the rounding is the same)
    steps = [a.base * f for f in np.linspace(1 - SPAN, 1 + SPAN, a.plans)]
    plans = [s.plan_for(b, a.strength, spec) for b in steps]
    fixed = {k for k, v in plans[0].items() if getattr(v, "group", None) is not None
             and all(p.get(k) == v for p in plans) and on_grid(k, w[k], v)}
    print(f"{len(fixed)} tensors on their groups' grid in every plan", flush=True)
    s.rounder, s._rounded = dataclasses.replace(s.rounder, inputs={}), {}
    rounders, refresh = {}, {}
    for label in labels:
        base_rounder = dataclasses.replace(s.rounder, _factors={}, **settings(label))
        c0, w0 = cpu(), time.perf_counter()
        inputs = collect_sequential(s.cal.net, s.cal.run, s.cal.names, w, s.plan_for(a.refresh, a.strength, spec),
                                    base_rounder)
        refresh[label] = {"cpu_s": cpu() - c0, "wall_s": time.perf_counter() - w0}
        rounders[label] = base_rounder.on({k: v for k, v in inputs.items() if k not in fixed})
        del inputs
        print(f"{label}: sequential inputs {refresh[label]}", flush=True)

    def write() -> None:
        summary = {}
        first = np.array([r["bpw_at_budget"] for r in rows if r["config"] == labels[0]])
        for label in labels:
            xs = np.array([r["bpw_at_budget"] for r in rows if r["config"] == label])
            d = xs - first
            kl = np.array([r["kl"] for r in rows if r["config"] == label])
            kl0 = np.array([r["kl"] for r in rows if r["config"] == labels[0]])
            summary[label] = {
                "bpw_at_budget": float(xs.mean()), "vs_first": float(xs.mean() / first.mean()),
                "minus_first_per_plan": [round(float(x), 5) for x in d],
                "minus_first_mean": float(d.mean()), "minus_first_se": float(d.std(ddof=1) / math.sqrt(len(d))),
                "kl_over_first_per_plan": [round(float(x), 4) for x in kl / kl0],
                "rounding_cpu_s_mean": float(np.mean([r["rounding_cpu_s"] for r in rows if r["config"] == label]))}
            print(label, json.dumps(summary[label]), flush=True)
        save("llm-levers", {"configs": labels, "machine": machine(), "what": __doc__.split("\n\n")[0],
                            "model": H.MODEL, "budget": a.budget, "base": a.base, "refresh_step": a.refresh,
                            "strength": a.strength, "plans": a.plans, "method": a.method,
                            "predicted_rows": not a.no_predicted_rows,
                            "calibration_windows": a.calibration_windows,
                            "judged_on": f"{len(ev.ref_out):,} tokens: the calibration/search part of automatic "
                                         f"mode's split (seed {auto.SPLIT_SEED}) of {a.auto_windows} lee.cor windows",
                            "sequential_refresh": refresh, "setup_s": setup_s,
                            "on_grid_not_rounded": len(fixed), "rows": rows, "summary": summary}, a.tag)

    rows = []
    for b, plan in zip(steps, plans, strict=True):
        scaled = sum(w[k].numel() for k, v in plan.items()
                     if getattr(v, "group", None) is None and w[k].dim() == 2) / total
        for label in labels:
            c0, w0 = cpu(), time.perf_counter()
            targets = rounders[label].targets(w, plan)
            round_cpu, round_wall = cpu() - c0, time.perf_counter() - w0
            recon = reconstruct({**w, **targets}, plan)
            m = metric_row("", t.name, t.primary, ev.compare(recon)[t.primary], t.primary in t.lower_is_better, True)
            bits = plan_bits({**w, **targets}, plan) + 8 * sum(n for k, n in s.exact_bytes.items() if k not in plan)
            bpw = bits / total
            rows.append({"config": label, "base_step": b, "bits_per_weight": bpw, "kl": m.loss,
                         "kl_high": m.loss_high, "scaled_share": scaled,
                         "bpw_at_budget": bpw + scaled * math.log2(m.loss / a.budget) / 2,
                         "rounding_cpu_s": round_cpu, "rounding_wall_s": round_wall,
                         "groupwise": describe(plan, w)["weights"]})
            print(json.dumps(rows[-1]), flush=True)
        write()


if __name__ == "__main__":
    main()
