"""Rounding levers of automatic mode at fixed plans: what each buys at equal size, without the search's luck.

A whole automatic-mode run ends wherever its step search lands, and on effnet-lite0 the loss moves by
+-15% between steps 2% apart (another rounding), so two runs differ by a few % of size whatever the lever.
Here each lever rounds the *same* plans (the allocation at one strength, base steps around the one automatic
mode finds), and the loss is measured on the calibration/search part of automatic mode's split (never the
held-back part). Each point's size at the target loss follows from loss ~ step^2 (bits + log2(loss / target)
/ 2), and the points of one configuration are averaged:
- `nearest`: the method's own rounding;
- `gptq`: error feedback against the original model's layer inputs, bias correction (the default until
  2026-12-05), with a layer seen on fewer calibration inputs than its size at nearest rounding;
- `gptq few`: the same, such layers (effnet-lite0's classifier) dampened by their mean diagonal (FEW_DAMP);
- `sequential`, `sequential few`: every layer rounded against what the quantized layers before it give
  (zoocodec.tuning.sequential, measured once at the middle step as automatic mode does), with the drift of
  the mean input corrected too.
A gptq configuration's `cal=` names the images its layer inputs are measured on: `photos` (the task's own
calibration, the default; effnet-lite0's has held 32 distilled images beside its crops since 2026-12-05h, so
`mixed` adds them twice), `distilled` (--distilled images synthesised from the model's BatchNorm statistics,
zoocodec.eval.distilled) or `mixed` (both; `share=S` gives the distilled images the share S of each H and mean,
by default their share of the images). `method=dq` plans dq instead of uniform (its data-aware form, column walks at
lam 0: calibrate.for_rounding), at DQ_STEP times the base steps (about uniform's loss there). `order=act`
rounds the columns in decreasing diag(H) order (GPTQ's
act-order), `order=natural` in their own, `order=dense+few` takes act-order for those layer kinds only
(calibrate.kind_of), and `cd=N` gives N sweeps of coordinate descent after the feedback (CDQuant;
calibrate.descend). `lam=L` adds L x rate_price x order-0 bits to the objective of the feedback and of the
descent (since 2026-12-05k the descent runs under it too), `cdlam=L` to the descent's alone. Without them
calibrate.ACT_ORDER and SWEEPS hold, act-order and 2 sweeps since 2026-12-05j: `order=natural cd=0` is plain
GPTQ, what the gptq rows measured before then.
Sizes are the coder's entropy-model price of the planned tensors (plus the 1-D tensors left lossless).

    nice -n 10 python bench/bench_h2h_levers.py [--model effnet-lite0] [--strength 0.5] [--base 0.0057]
        [--sensitivities sens.json] [--target 0.8] [--configs "gptq few,gptq few grouped=0.3 lam=0.02"] [--tag T]
        [--distilled 64] [--proxy] [--inputs-cache /tmp/effnet-inputs.pkl]

`--proxy` first measures each gptq configuration layer by layer at the middle plan: every layer's output
error on its inputs from the calibration/search views (bench_h2h_damping.py's measure), over the first
configuration's, averaged per layer kind weighted by the layer's predicted share of the loss.

Writes bench/results/h2h-levers-YYYY-MM-DD[-T].json; `vs_first` is each configuration's size over the first's.
"""
from __future__ import annotations

import argparse
import json
import math
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import machine, save
from zoocodec.eval import calibration as C, distilled as D
from zoocodec.eval.data import photo_views
from zoocodec.eval.evaluate import evaluator, load_weights, metric_row, tasks_of
from zoocodec.eval.tasks import _logits, subset
from zoocodec.methods import parse_spec
from zoocodec.tuning import calibrate
from zoocodec.tuning.allocate import allocate, plan_bits
from zoocodec.tuning.auto import _flatten, _one_d_where_it_pays, reconstruct, split
from zoocodec.tuning.calibrate import DataAware, LayerInputs, collect, output_error
from zoocodec.tuning.sensitivity import measure, quantized_names
from zoocodec.tuning.sequential import collect_in_order

MIN_SIZE = 64  # as the head-to-head
SPAN = 0.1  # plans at base steps from (1 - SPAN) to (1 + SPAN) x --base
DQ_STEP = 0.6  # method=dq: its base steps over uniform's (dq's levels lie 2 steps apart in each of its two quantizers)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="effnet-lite0")
    p.add_argument("--strength", type=float, default=0.5)
    p.add_argument("--base", type=float, default=0.0057)
    p.add_argument("--tag", default="", help="results file suffix")
    p.add_argument("--plans", type=int, default=5,
                   help="plans per configuration (base steps spread evenly over 0.9-1.1x --base): a lever worth ~1%% "
                        "needs more than 5, each plan's rounding moves the loss by +-15%%")
    p.add_argument("--target", type=float, default=0.8, help="loss in %% at which sizes are compared")
    p.add_argument("--sensitivities", type=Path,
                   help="JSON of measured sensitivities; where the file does not exist, measured here and written "
                        "there")
    p.add_argument("--sensitivity-views", type=int,
                   help="inputs of the calibration/search part the sensitivities are measured on (default: the task's "
                        "sensitivity_limit, 16 views on effnet-lite0)")
    p.add_argument("--one-d-from", type=Path,
                   help="with --sensitivity-views: the 1-D tensors' sensitivities from this JSON, only the others "
                        "measured")
    p.add_argument("--configs", default="nearest,gptq,gptq few,sequential,sequential few",
                   help="comma-separated; a gptq one may add `damp=D` (H dampened by D of its mean diagonal; GPTQ: "
                        "0.01), `dense=D` / `grouped=D` (one layer kind only), `lam=L` (rate-aware rounding; "
                        "`cdlam=L` in the descent only), `order=act|natural|dense+few`, `cd=N` and "
                        "`cal=photos|distilled|mixed` with `share=S` (the images its layer inputs are measured on)")
    p.add_argument("--distilled", type=int, default=64, help="images distilled from the BN statistics for cal=")
    p.add_argument("--proxy", action="store_true",
                   help="first each configuration's output error per layer kind on the search views, at --base")
    p.add_argument("--inputs-cache", type=Path,
                   help="pickle of the measured layer inputs (calibration, and the search views' for --proxy): read "
                        "where it exists, else written")
    a = p.parse_args()
    torch.set_num_threads(2)
    w = load_weights(a.model)
    t = tasks_of(a.model)[0]
    whole = evaluator(a.model, t)
    own = whole.compare(None)
    decide, _held = split(len(whole.ref_out), own[t.primary].groups)
    ev = whole.part(decide)
    if a.sensitivities and a.sensitivities.exists():
        sens = _read(a.sensitivities)
    else:
        views = a.sensitivity_views or t.sensitivity_limit
        sens_ev = whole.part(decide[subset(len(decide), views).numpy()]) if views and views < len(decide) else ev
        names = quantized_names(w, MIN_SIZE)
        sens = {}
        if a.one_d_from:  # as it stores them: a 1-D tensor its run found broken (left out) stays out
            sens = {k: v for k, v in _read(a.one_d_from).items() if w[k].dim() < 2}
            names = [k for k in names if w[k].dim() >= 2]
        sens |= measure(sens_ev, w, names)
        if a.sensitivities:  # as a file's header stores them: a list per tensor
            a.sensitivities.write_text(json.dumps({k: np.atleast_1d(v).tolist() for k, v in sens.items()}))
    usable = {k for k, v in sens.items() if np.isfinite(np.asarray(v, dtype=np.float64)).all()}  # as auto.py
    cal = C.for_zoo(whole.arch, whole.folder, t, w)
    cache = pickle.loads(a.inputs_cache.read_bytes()) if a.inputs_cache and a.inputs_cache.exists() else {}
    t0 = time.perf_counter()
    if "photos" not in cache:
        cache["photos"] = collect(cal.net, cal.run, cal.names)
        _keep(a.inputs_cache, cache)
    original = cache["photos"]
    cal_seconds = {"photos": time.perf_counter() - t0}
    sources = calibration_sources(a.configs.split(","), cal, w, a.distilled, original, cal_seconds)
    exact: dict[str, int] = {}

    def plan_at(base: float, method: str = "uniform"):
        plan = allocate(w, sensitivities=_flatten(sens, a.strength), base_step=base,
                        method=calibrate.for_rounding(parse_spec(method)), min_size=MIN_SIZE)
        # as automatic mode: a tensor without a usable sensitivity (its noise broke the model) stays lossless
        return _one_d_where_it_pays(w, {k: v for k, v in plan.items() if k in usable}, exact)

    def sequential(few: float | None) -> dict:
        calibrate.FEW_DAMP = few
        return collect_in_order(cal.net, cal.whole, cal.names, w, plan_at(a.base), original)

    labels = a.configs.split(",")
    layers, by_kind = [], {}
    if a.proxy:
        if "unseen" not in cache:
            cache["unseen"] = search_inputs(whole, t, cal, w, decide)
            _keep(a.inputs_cache, cache)
        layers, by_kind = proxy(labels, w, sens, plan_at(a.base), original, cache["unseen"])
    t0 = time.perf_counter()
    seq = {few: sequential(few) for few, label in ((1.0, "sequential few"), (None, "sequential")) if label in labels}
    seq_seconds = (time.perf_counter() - t0) / max(len(seq), 1)
    configs = {"nearest": (None, None), "gptq": (original, None), "gptq few": (original, 1.0),
               "sequential": (seq.get(None), None), "sequential few": (seq.get(1.0), 1.0)}
    rows = []
    for label in labels:
        base, *options = label.split(" ")
        if base == "gptq" and options and options[0] == "few":
            base, options = "gptq few", options[1:]
        inputs, few = configs[base]
        calibrate.FEW_DAMP = few
        source = _source(options)
        if base.startswith("gptq") and source != "photos":
            inputs = sources[source]
        rounder = DataAware(inputs, **_options(options)) if inputs is not None else None
        method = next((o.split("=")[1] for o in options if o.startswith("method=")), "uniform")
        for f in np.linspace(1 - SPAN, 1 + SPAN, a.plans):
            t0 = time.perf_counter()
            step = a.base * f * (DQ_STEP if method == "dq" else 1.0)
            plan = plan_at(step, method)
            targets = rounder.targets(w, plan) if rounder is not None else {}
            recon = reconstruct({**w, **targets}, plan)
            m = metric_row("", t.name, t.primary, ev.compare(recon)[t.primary], t.primary in t.lower_is_better, True)
            bits = plan_bits({**w, **targets}, plan) + 8 * sum(n for k, n in exact.items() if k not in plan)
            bpw = bits / sum(v.numel() for v in w.values() if v.is_floating_point())
            at_target = bpw + math.log2(m.loss / (a.target / 100)) / 2
            rows.append({"config": label, "seconds": round(time.perf_counter() - t0, 1), "base_step": step,
                         "bits_per_weight": bpw, "loss_pct": 100 * m.loss,
                         "loss_high_pct": 100 * m.loss_high, "bpw_at_target": at_target})
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for label in labels:
        xs = np.array([r["bpw_at_target"] for r in rows if r["config"] == label])
        first = np.array([r["bpw_at_target"] for r in rows if r["config"] == labels[0]])
        # the plans are the same in every configuration: the difference per plan is the lever, its spread the noise
        summary[label] = {"bpw_at_target": float(np.mean(xs)), "spread": float(np.std(xs, ddof=1)),
                          "vs_first": float(np.mean(xs)) / float(np.mean(first)),
                          "minus_first_per_plan": [round(float(d), 4) for d in xs - first]}
        print(label, summary[label], flush=True)
    save("h2h-levers", {"configs": labels, "machine": machine(), "what": __doc__.split("\n\n")[0], "model": a.model,
                        "strength": a.strength, "base": a.base, "plans": a.plans, "target_pct": a.target,
                        "judged_on": f"the {len(decide)} calibration/search inputs of automatic mode's split (seed 0)",
                        "sequential_measure_seconds": seq_seconds, "distilled": a.distilled,
                        "calibration_seconds": cal_seconds, "rows": rows, "summary": summary,
                        **({"proxy": {"base": a.base, "by_kind": by_kind, "layers": layers}} if a.proxy else {})},
         a.tag)


def search_inputs(whole, t, cal: C.Calibration, w: dict, decide: np.ndarray) -> dict[str, LayerInputs]:
    """Layer inputs of the calibration/search part of the split (bench_h2h_damping.py's `unseen`)."""
    if t.kind == "text":  # minilm: the search half's documents through a second encoder
        from zoocodec.eval.text import TextModel

        enc = TextModel(whole.folder, w)
        part = tuple(int(i) for i in decide)
        return collect(enc.model, lambda n: t.outputs(enc, part), cal.names)
    if t.name != "photos":
        raise ValueError(f"--proxy: the photos and text tasks only, not {t.name}")
    views = photo_views()[torch.as_tensor(decide)]  # what the photo task judges, in its order
    return collect(cal.net, lambda n: _logits(lambda: views, 32)(n, None), cal.names)


def proxy(labels: list[str], w: dict, sens: dict, plan: dict, original: dict[str, LayerInputs],
          unseen: dict[str, LayerInputs]) -> tuple[list[dict], dict]:
    """Per layer, each gptq configuration's output error on the search inputs at `plan` (one step per tensor), over
    the first configuration's and over nearest rounding's; per layer kind the ratios averaged, weighted by the
    layer's predicted share of the loss (its sensitivity x nearest rounding's squared weight error)."""
    gptqs = [c for c in labels if c.startswith("gptq") and _source(c.split(" ")[1:]) == "photos"]
    layers = []
    for name, li in original.items():
        spec = plan.get(name)
        if spec is None or spec.step is None or name not in unseen:
            continue
        w2 = w[name].detach().to(torch.float64).reshape(w[name].shape[0], -1).numpy()
        near = np.rint(w2 / spec.step) * spec.step
        row = {"name": name, "kind": calibrate.kind_of(li), "weights": int(w2.size),
               "share": float(np.mean(sens[name]) * np.sum((w2 - near) ** 2)),
               "over_nearest": {}}
        for c in gptqs:
            calibrate.FEW_DAMP = 1.0 if c.startswith("gptq few") else None
            options = c.split(" ")[2 if c.startswith("gptq few") else 1:]
            hat = DataAware({name: li}, bias_correction=False, **_options(options)).targets(w, {name: spec})
            got = hat[name].double().reshape(w2.shape).numpy() if name in hat else near
            row["over_nearest"][c] = output_error(w2, got, unseen[name]) / output_error(w2, near, unseen[name])
        layers.append(row)
        print(json.dumps(row), flush=True)
    by_kind = {}
    for kind in sorted({r["kind"] for r in layers}):
        rows = [r for r in layers if r["kind"] == kind]
        share = np.array([r["share"] for r in rows])
        mean = {c: float(np.average([r["over_nearest"][c] for r in rows], weights=share)) for c in gptqs}
        by_kind[kind] = {"layers": len(rows), "share_of_loss": float(share.sum() / sum(r["share"] for r in layers)),
                         "over_nearest": mean, "over_first": {c: mean[c] / mean[gptqs[0]] for c in gptqs}}
        print(kind, json.dumps(by_kind[kind]), flush=True)
    return layers, by_kind


def calibration_sources(configs: list[str], cal: C.Calibration, w: dict, n: int, photos: dict,
                        seconds: dict) -> dict[str, dict[str, LayerInputs]]:
    """The layer inputs each `cal=` source of the configurations names: the photos' (given), the distilled
    images' and their mixtures (`seconds` gets what the distilled images and their layer inputs took)."""
    wanted = {_source(c.split(" ")): c for c in configs}
    out = {"photos": photos}
    if set(wanted) - {"photos"}:
        t0 = time.perf_counter()
        x = D.cached(cal.net, w, n)
        seconds["distilled_images"] = time.perf_counter() - t0  # near 0 where the zoo cache had them
        t0 = time.perf_counter()
        out["distilled"] = collect(cal.net, lambda net: _logits(lambda: x, 13)(net, None), cal.names)
        seconds["distilled"] = time.perf_counter() - t0
    for source, config in wanted.items():
        if source.startswith("mixed"):
            share = [float(o.split("=")[1]) for o in config.split(" ") if o.startswith("share=")]
            out[source] = mix(photos, out["distilled"], share[0] if share else None)
    return out


def mix(a: dict[str, LayerInputs], b: dict[str, LayerInputs], share: float | None) -> dict[str, LayerInputs]:
    """Layer inputs of both sets of images: b's H and mean weighted by `share` (None: by its share of the input
    vectors, as one run over both sets gives)."""
    out = {}
    for name in a.keys() & b.keys():
        la, lb = a[name], b[name]
        s = lb.count / (la.count + lb.count) if share is None else share
        out[name] = LayerInputs((1 - s) * la.h + s * lb.h, (1 - s) * la.mean + s * lb.mean, la.count + lb.count,
                                la.bias)
    return out


def _source(options: list[str]) -> str:
    """A configuration's `cal=` source, with its `share=` where given (each mixture is a source of its own)."""
    cal = next((o.split("=")[1] for o in options if o.startswith("cal=")), "photos")
    share = [o for o in options if o.startswith("share=")]
    return f"{cal} {share[0]}" if cal == "mixed" and share else cal


def _keep(path: Path | None, cache: dict) -> None:
    """Write the layer inputs measured so far (--inputs-cache)."""
    if path is not None:
        path.write_bytes(pickle.dumps(cache))


def _read(path: Path) -> dict:
    """Sensitivities as a file's header stores them (a list per tensor)."""
    return {k: (np.array(v) if len(v) > 1 else v[0]) for k, v in json.loads(path.read_text()).items()}


def _options(options: list[str]) -> dict:
    """DataAware's settings from a configuration's `damp=D` (every layer but the few-input ones), `dense=D` /
    `grouped=D` (one kind of layer: calibrate.kind_of), `lam=L` (rate-aware rounding: the feedback and the
    descent), `cdlam=L` (the descent only), `order=act|natural|dense+few` (act-order: every layer, none, or
    those kinds) and `cd=N` (sweeps of coordinate descent); `cal=` and `share=` name the layer inputs (_source)."""
    out: dict = {"kind_damp": {}}
    for o in options:
        key, value = o.split("=")
        if key in ("dense", "grouped"):
            out["kind_damp"][key] = float(value)
        elif key == "order":
            kinds = tuple(value.split("+"))
            if value not in ("act", "natural") and not set(kinds) <= {"dense", "grouped", "few"}:
                raise ValueError(f"order={value}: act, natural or layer kinds joined by + (dense+few)")
            out["act_order"] = value == "act" if value in ("act", "natural") else kinds
        elif key == "cd":
            out["sweeps"] = int(value)
        elif key == "cdlam":
            out["lam"], out["feedback_rate"] = float(value), False
        elif key not in ("cal", "share", "method"):
            out[{"damp": "damp", "lam": "lam"}[key]] = float(value)
    return out


if __name__ == "__main__":
    main()
