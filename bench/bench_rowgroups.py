"""A step per row group of minilm's encoder matrices (attention heads for Q/K/V): predicted, then measured.

Automatic mode measures one noise-injection sensitivity per tensor (a word-embedding table: per row group) and
allocates one step per tensor. BERT's query/key/value rows are head-major (12 heads x 32 rows), so a group per
head is a structured unit. At high rate, a step per group (step ~ 1/sqrt(s_g)) instead of one for the tensor
saves 0.5 * log2(AM/GM) bits per weight of the groups' sensitivities.

`predict` measures the groups' sensitivities as automatic mode does (its calibration/search documents, its
16-document subset, rel_noise 0.05): view `A seed 0` (automatic mode's own), `B seed 1` (16 other documents of
the same part, another seed) and `A seed 1` (the seed pair). Two independent measurements' log-sensitivities
have a covariance across groups that estimates the true spread without the noise's share; ln(AM/GM) ~
var(ln s) / 2, so the saving the spread predicts is 0.25 * log2(e) * cov per weight of the tensor (the naive
AM/GM of one measurement counts its noise as spread, so it bounds the saving from above).

`plans` judges fixed plans as automatic mode makes them (its allocation at one strength, its token-weighted
word-embedding rows, data-aware rounding, the coder it prices cheapest) at base steps 0.9-1.1x --base, without
row groups (`none`, automatic mode's plan) and with a step per group of --kinds (`groups VIEW`: each group's
sensitivity is its ratio to the groups' mean in that predict view times automatic mode's per-tensor one; written
as the word-embedding rows are, rdoq:lam=0 with group_steps, GPTQ-rounded row by row), on the held-back
documents: bits/weight where the held-back 95% bound meets the budget (bits + log2(bound / budget) / 2), and
the per-plan difference, mean +- SE. `render` summarises the file again and writes its markdown.

    nice -n 5 python bench/bench_rowgroups.py predict [--tag 2026-12-05i]
    nice -n 5 python bench/bench_rowgroups.py plans --target 0.5 --base 0.0047 [--plans 5] [--strength 0.75]
        [--kinds query,key,value] [--views "A seed 0,B seed 1"]
    python bench/bench_rowgroups.py render

Writes bench/results/rowgroups-TAG.{json,md} (each mode its own section; a run resumes the rows already there,
and runs of two budgets may write at once); automatic mode's own sensitivities go to
rowgroups-TAG.sensitivities.json and are reused. At strength 3/4, 0.0047 meets 0.5% and 0.0022 meets 0.1%.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import RESULTS, machine
from zoocodec.eval.tasks import subset
from zoocodec.methods import parse_spec
from zoocodec.pipeline.policy import for_decoder
from zoocodec.tuning.auto import CONTEXT_CODERS, SPLIT_SEED, Asked, _cheapest_coder, _Clock, _Search
from zoocodec.tuning.calibrate import RATE_LAM
from zoocodec.tuning.sensitivity import measure

MIN_SIZE = 64  # as the head-to-head
BPW = 3.758  # automatic mode's minilm file at 0.5% (head_to_head.md): the savings' reference
SPAN = 0.1  # plans at base steps from (1 - SPAN) to (1 + SPAN) x --base
# matrix kind -> (name pattern, row groups)
KINDS = {
    "query": (r"attention\.self\.query\.weight$", 12),
    "key": (r"attention\.self\.key\.weight$", 12),
    "value": (r"attention\.self\.value\.weight$", 12),
    "attention.output": (r"attention\.output\.dense\.weight$", 8),
    "intermediate": (r"intermediate\.dense\.weight$", 8),
    "intermediate/12": (r"intermediate\.dense\.weight$", 12),
    "output": (r"layer\.\d+\.output\.dense\.weight$", 8),
}


def _write(path: Path, data: dict, key: str | None = None) -> None:
    """Write `data` atomically; with `key`, only that section of the file (a predict and a plans run may write
    the same file at once: the lock keeps each one's section)."""
    with open(Path(tempfile.gettempdir()) / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if key is not None:
            disk = json.loads(path.read_text()) if path.exists() else {}
            mine = data[key]
            if "rows" in mine:  # plans runs of other budgets write the same section: keep their rows too
                have = {(r["config"], r["target_pct"], r["base_step"]) for r in mine["rows"]}
                mine["rows"] += [r for r in disk.get(key, {}).get("rows", [])
                                 if (r["config"], r["target_pct"], r["base_step"]) not in have]
                mine["summary"] = summary(mine["rows"], mine["configs"])
            data = disk | {key: mine, "what": data["what"]}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)


def _search(model: str, target_pct: float) -> _Search:
    spec = for_decoder(parse_spec("uniform"), "any", True)
    asked = Asked(model, target_pct / 100, None, None, spec, MIN_SIZE, None, None, None, True, "gptq", RATE_LAM,
                  None, SPLIT_SEED, False)
    return _Search(_Clock(lambda msg: print("   ", msg, flush=True)), asked)


def groups_of(weights: dict[str, torch.Tensor], kinds: list[str]) -> dict[str, dict[str, int]]:
    """kind -> {tensor name: row groups}."""
    return {kind: {k: KINDS[kind][1] for k in weights if re.search(KINDS[kind][0], k)} for kind in kinds}


def predict(a, result: dict) -> dict:
    run = _search(a.model, 0.5)
    decide, t = run.decide, run.t
    lim = t.sensitivity_limit
    docs_a = decide[subset(len(decide), lim).numpy()]  # automatic mode's own sensitivity documents
    rest = np.setdiff1d(decide, docs_a)
    docs_b = rest[subset(len(rest), lim).numpy()]
    views = {"A seed 0": (docs_a, 0), "B seed 1": (docs_b, 1), "A seed 1": (docs_a, 1)}
    by_kind = groups_of(run.weights, list(KINDS))
    params = sum(v.numel() for v in run.weights.values() if v.is_floating_point())
    measured: dict[str, dict] = result.get("measured", {})
    result["documents"] = {"A": [int(x) for x in docs_a], "B": [int(x) for x in docs_b]}
    # every kind on automatic mode's own view first (its naive saving bounds the saving from above), then the
    # heads on the view that differs in both documents and seed, then the other kinds there, then the seed pair
    heads = ["query", "key", "value"]
    for batch, views_now in ((list(KINDS), ["A seed 0"]), (heads, ["B seed 1"]),
                             ([k for k in KINDS if k not in heads], ["B seed 1"]), (heads, ["A seed 1"])):
        for view in views_now:
            docs, seed = views[view]
            ev = run.whole.part(docs)
            for kind in batch:
                key = f"{view} | {kind}"
                if key in measured:
                    continue
                t0 = time.process_time()
                s = measure(ev, run.weights, list(by_kind[kind]), groups=by_kind[kind], seed=seed)
                measured[key] = {k: [float(x) for x in v] for k, v in s.items()}
                print(key, f"{time.process_time() - t0:.0f} CPU s", flush=True)
                result["measured"] = measured
                result["kinds"] = summarise(measured, by_kind, run.weights, params)
                _write(a.out, a.whole, "predict")
    return summarise(measured, by_kind, run.weights, params)


PAIRS = {"docs+seed": ("A seed 0", "B seed 1"), "seed": ("A seed 0", "A seed 1")}


def summarise(measured: dict, by_kind: dict, weights: dict, params: int) -> dict:
    """Per matrix kind: the spread of the groups' log-sensitivities, the noise's share of it (two independent
    measurements: their difference), and the saving predicted per weight of the kind and of the whole model."""
    table = {}
    for kind, groups in by_kind.items():
        views = [v for v in ("A seed 0", "B seed 1", "A seed 1") if f"{v} | {kind}" in measured]
        if not views:
            continue
        rows = []
        for name in groups:
            ln = {v: np.log(np.asarray(measured[f"{v} | {kind}"][name])) for v in views}
            row = {"name": name, "numel": weights[name].numel(),
                   "ln_sd": {v: float(np.std(x, ddof=1)) for v, x in ln.items()},
                   # one measurement's AM/GM, its noise counted as spread
                   "naive_bits": {v: 0.5 * float(np.log2(np.mean(np.exp(x))) - np.mean(x) / math.log(2))
                                  for v, x in ln.items()}}
            for pair, (u, v) in PAIRS.items():
                if u in ln and v in ln:
                    cov = float(np.cov(ln[u], ln[v])[0, 1])
                    row[pair] = {"ln_cov": cov, "corr": float(np.corrcoef(ln[u], ln[v])[0, 1]),
                                 "saving_bits": 0.25 * math.log2(math.e) * cov,
                                 "noise_ln_sd": float(np.std(ln[u] - ln[v], ddof=1) / math.sqrt(2))}
            rows.append(row)
        numel = sum(r["numel"] for r in rows)
        out = {"tensors": len(rows), "groups": next(iter(groups.values())), "weights": numel,
               "share_of_params": numel / params,
               "ln_sd_mean": {v: float(np.mean([r["ln_sd"][v] for r in rows])) for v in views},
               "naive_model_bpw": {v: sum(r["numel"] * r["naive_bits"][v] for r in rows) / params for v in views}}
        for pair in PAIRS:
            if all(pair in r for r in rows):
                out[pair] = {"noise_ln_sd": float(np.mean([r[pair]["noise_ln_sd"] for r in rows])),
                             "corr_mean": float(np.mean([r[pair]["corr"] for r in rows])),
                             "saving_bits_per_own_weight": sum(r["numel"] * r[pair]["saving_bits"] for r in rows)
                             / numel,
                             "saving_model_bpw": sum(r["numel"] * r[pair]["saving_bits"] for r in rows) / params}
        out["per_tensor"] = rows
        table[kind] = out
    return table


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["predict", "plans", "render"])
    p.add_argument("--model", default="minilm")
    p.add_argument("--tag", default="2026-12-05i")
    p.add_argument("--target", type=float, default=0.5, help="loss in %% at which sizes are compared")
    p.add_argument("--strength", type=float, default=0.75)
    p.add_argument("--base", type=float, default=0.0047)
    p.add_argument("--plans", type=int, default=5)
    p.add_argument("--kinds", default="query,key,value", help="matrix kinds given a step per row group (plans)")
    p.add_argument("--views", default="A seed 0", help="the predict measurements the groups come from (plans)")
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    a.out = RESULTS / f"rowgroups-{a.tag}.json"
    a.whole = whole = json.loads(a.out.read_text()) if a.out.exists() else {}
    whole["what"] = __doc__.split("\n\n")[0]
    if a.mode == "render":  # the prediction summarised again from every measurement in the file
        from zoocodec.eval.evaluate import load_weights

        if "measured" in whole.get("predict", {}):
            weights = load_weights(a.model)
            params = sum(v.numel() for v in weights.values() if v.is_floating_point())
            whole["predict"]["kinds"] = summarise(whole["predict"]["measured"], groups_of(weights, list(KINDS)),
                                                  weights, params)
            _write(a.out, whole, "predict")
        print(render(json.loads(a.out.read_text()), a.out.with_suffix(".md")))
        return
    if a.mode == "predict":
        section = whole.setdefault("predict", {})
        section |= {"machine": machine(), "threads": torch.get_num_threads(), "bpw_reference": BPW,
                    "rel_noise": 0.05}
        whole["predict"] = section
        table = predict(a, section)
        section["kinds"] = table
        _write(a.out, whole, "predict")
        for kind, row in table.items():
            pairs = " | ".join(f"{pair}: noise ln sd {row[pair]['noise_ln_sd']:.3f} corr {row[pair]['corr_mean']:+.2f} "
                               f"saving {row[pair]['saving_model_bpw']:.4f} bpw "
                               f"({100 * row[pair]['saving_model_bpw'] / BPW:.2f}%)" for pair in PAIRS if pair in row)
            print(f"{kind:18s} share {row['share_of_params']:.3f} ln sd {row['ln_sd_mean']} naive "
                  f"{row['naive_model_bpw']} | {pairs}", flush=True)
        return
    plans(a, whole)
    render(json.loads(a.out.read_text()), a.out.with_suffix(".md"))


def plans(a, whole: dict) -> None:
    """Fixed plans with and without the encoder's row-group steps, judged on the held-back documents."""
    from zoocodec.eval.evaluate import metric_row

    section = whole.setdefault("plans", {})
    section |= {"machine": machine(), "threads": torch.get_num_threads(), "strength": a.strength,
                "kinds": a.kinds.split(",")}
    pred = whole.get("predict", {}).get("measured", {})
    run = _search(a.model, a.target)
    sens_file = a.out.with_suffix(".sensitivities.json")  # automatic mode's own per-tensor measurement, kept
    given = None
    if sens_file.exists():
        given = {k: (np.array(v) if len(v) > 1 else v[0]) for k, v in json.loads(sens_file.read_text()).items()}
    run.sensitivities(given)
    if given is None:
        _write(sens_file, {k: [float(x) for x in np.atleast_1d(v)] for k, v in run.usable.items()})
    run.calibrate()
    coded = _cheapest_coder(run.spec, lambda c: run.price(run.plan_for(a.base, a.strength, c)), print, True,
                            CONTEXT_CODERS)
    t = run.t
    params = sum(v.numel() for v in run.weights.values() if v.is_floating_point())
    # a configuration: (matrix kinds given a step per row group, the predict view their groups come from)
    configs = {"none": ([], None)}
    for view in a.views.split(","):
        configs[f"groups {view}"] = (a.kinds.split(","), view)
    section |= {"coder": str(coded.coder), "split": run.where, "configs": list(configs)}
    tokens = dict(run.token_rows)
    rows = section.setdefault("rows", [])

    def ratios(kinds, view) -> dict[str, np.ndarray]:
        """name -> each group's sensitivity over the groups' mean: the tensor keeps automatic mode's level."""
        out = {}
        for kind in kinds:
            for name, g in pred[f"{view} | {kind}"].items():
                out[name] = np.asarray(g) / np.mean(g)
        return out

    for f in np.linspace(1 - SPAN, 1 + SPAN, a.plans):
        base = a.base * f
        for label, (kinds, view) in configs.items():
            if any(r["config"] == label and r["target_pct"] == a.target and math.isclose(r["base_step"], base)
                   for r in rows):
                continue
            t0 = time.process_time()
            # the row groups ride on the path of the word-embedding rows: rdoq:lam=0 with group_steps, GPTQ per row
            run.token_rows = tokens | ratios(kinds, view)
            run._rounded.clear()
            plan = run.plan_for(base, a.strength, coded)
            recon, _targets = run.decoded(plan)
            bpw = run.price(plan) / params
            m = metric_row("", t.name, t.primary, run.held_ev.compare(recon)[t.primary],
                           t.primary in t.lower_is_better, True)
            row = {"config": label, "target_pct": a.target, "base_step": base, "bits_per_weight": bpw,
                   "grouped_tensors": sum(1 for v in plan.values() if getattr(v, "group_steps", None)),
                   "held_back": {"loss_pct": 100 * m.loss, "loss_high_pct": 100 * m.loss_high},
                   "bpw_at_bound": bpw + math.log2(100 * m.loss_high / a.target) / 2,
                   "cpu_seconds": round(time.process_time() - t0, 1), "load": os.getloadavg()[0]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            section["summary"] = summary(rows, list(configs))
            _write(a.out, whole, "plans")
    section["summary"] = summary(rows, list(configs))
    _write(a.out, whole, "plans")
    print(json.dumps(section["summary"], indent=1))


def summary(rows: list[dict], labels: list[str]) -> dict:
    """Per budget and configuration: mean bits/weight at the held-back bound, and the per-plan difference
    from `none` (mean, standard error, each plan's)."""
    out = {}
    for target in sorted({r["target_pct"] for r in rows}, reverse=True):
        mine = [r for r in rows if r["target_pct"] == target]
        first = {r["base_step"]: r["bpw_at_bound"] for r in mine if r["config"] == labels[0]}
        per = {}
        for label in labels:
            at = {r["base_step"]: r["bpw_at_bound"] for r in mine if r["config"] == label and r["base_step"] in first}
            if not at:
                continue
            d = np.array([v - first[b] for b, v in sorted(at.items())])
            per[label] = {"plans": len(d), "bpw_at_bound": float(np.mean(list(at.values()))),
                          "minus_none": float(d.mean()),
                          "se": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None,
                          "minus_none_pct": 100 * float(d.mean()) / float(np.mean(list(first.values()))),
                          "per_plan": [round(float(x), 4) for x in d]}
        out[f"{target:g}%"] = per
    return out


def render(whole: dict, path: Path) -> Path:
    """The results file's tables as markdown: the prediction per matrix kind, then the plans' summary."""
    md = [f"# {whole['what']}", ""]
    pred = whole.get("predict", {}).get("kinds", {})
    if pred:
        md += ["## Predicted: spread of the row groups' sensitivities (automatic mode's documents, rel_noise 0.05)",
               "",
               "Naive: one measurement's 0.5 log2(AM/GM), its noise counted as spread. Pairs: the covariance of two "
               "independent measurements' log-sensitivities (docs+seed: 16 other documents and another seed; seed: "
               "the same documents, another seed), the spread both share. Savings in bits per weight of the whole "
               f"model (22.7M weights) and in % of {BPW} bits/weight.", "",
               "| kind | tensors x groups | share of weights | ln sd (one measurement) | noise ln sd, docs+seed | "
               "corr, docs+seed | naive saving | saving, docs+seed | saving, seed |",
               "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for kind, r in pred.items():
            def cell(pair, key):
                return "-" if pair not in r else f"{r[pair][key]:.3f}" if key != "saving_model_bpw" else \
                    f"{r[pair][key]:.4f} ({100 * r[pair][key] / BPW:.2f}%)"
            naive = r["naive_model_bpw"]["A seed 0"]
            md.append(f"| {kind} | {r['tensors']} x {r['groups']} | {r['share_of_params']:.3f} | "
                      f"{r['ln_sd_mean']['A seed 0']:.2f} | {cell('docs+seed', 'noise_ln_sd')} | "
                      f"{cell('docs+seed', 'corr_mean')} | {naive:.4f} ({100 * naive / BPW:.2f}%) | "
                      f"{cell('docs+seed', 'saving_model_bpw')} | {cell('seed', 'saving_model_bpw')} |")
    measured = whole.get("predict", {}).get("measured", {})
    if "A seed 0 | query" in measured and "A seed 0 | key" in measured:  # noise drawn apart, one head's two
        q, k = measured["A seed 0 | query"], measured["A seed 0 | key"]
        corr = [float(np.corrcoef(np.log(v), np.log(k[n.replace("query", "key")]))[0, 1]) for n, v in q.items()]
        md += ["", "Per layer, the correlation of a head's query and key log-sensitivities (automatic mode's view): "
               + ", ".join(f"{c:+.2f}" for c in corr) + "."]
    plans_ = whole.get("plans", {})
    if plans_.get("summary"):
        md += ["", f"## Measured at fixed plans (strength {plans_['strength']}, coder {plans_.get('coder')}, "
               f"row groups for {', '.join(plans_['kinds'])}; held-back documents)", "",
               "| budget | configuration | plans | bits/weight at the held-back bound | minus none (mean ± SE) | "
               "% | per plan |", "| --- | --- | ---: | ---: | --- | ---: | --- |"]
        for budget, per in plans_["summary"].items():
            for label, c in per.items():
                se = "" if c["se"] is None else f" ± {c['se']:.4f}"
                md.append(f"| {budget} | {label} | {c['plans']} | {c['bpw_at_bound']:.4f} | {c['minus_none']:+.4f}{se} "
                          f"| {c['minus_none_pct']:+.2f}% | {', '.join(f'{x:+.4f}' for x in c['per_plan'])} |")
    path.write_text("\n".join(md) + "\n")
    return path


if __name__ == "__main__":
    main()
