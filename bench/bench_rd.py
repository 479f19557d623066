"""Rate-distortion on minilm and mnist-cnn: one equal step, bit allocation, RDOQ, context coding.

    nice -n 10 python bench/bench_rd.py            # mnist-cnn and minilm (~45 min on 2 busy cores)
    nice -n 10 python bench/bench_rd.py --quick    # mnist-cnn only

For every setting: the real .zc size (bits/weight over all parameters), model SQNR, and
the task metric of the decoded model (minilm: cosine of the 300 lee_background.cor
document embeddings vs fp32, mean/min; mnist-cnn: top-1 on opencv-doc's 5,000 digits).

Settings, each a curve over the base step 2^(k/4):
  uniform       one equal step for every quantized tensor, order-0 ANS (the baseline)
  alloc         per-tensor step from a measured sensitivity (allocate(), equal slope)
  alloc+ctx     the same levels, coded with the context coder (same reconstruction)
  alloc+rdoq    RDOQ levels (lam) under the order-0 model
  alloc+rdoq+ctx RDOQ under the context model, coded with it
  alloc+dq(+ctx) dependent (trellis-coded) quantization, as NNCodec does, order-0 or ctx
Sensitivities are measured by noise injection (allocate.noise_sensitivities) on inputs
the metric does not use (minilm: the first documents of lee.cor, a different corpus from
lee_background.cor; mnist-cnn: output KL on the first 500 digits, labels unused) and
cached in bench/results/rd-sensitivity-<model>.json.

NNCodec's points (NNCodec 2.1.3 with its defaults, same metric) were measured earlier on this
machine type and are written below; they are not re-measured here (bench_head_to_head.py runs
NNCodec itself). The size ratio vs NNCodec
at equal document cosine interpolates each curve's bits/weight in log(1 - cosine).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import zoocodec
from bench_common import RESULTS, machine, save
from zoocodec.eval.evaluate import evaluator, load_weights
from zoocodec.eval.models import build
from zoocodec.eval.tasks import TASKS
from zoocodec.pipeline import zoo
from zoocodec.pipeline.core import DEFAULT_MIN_SIZE, load
from zoocodec.tuning.allocate import allocate, noise_sensitivities

# NNCodec 2.1.3 on minilm, document cosine on lee_background.cor, measured 2026-11: qp, bits/weight, mean, min
NNCODEC = [(-38, 6.380, 0.99883, 0.99810), (-34, 5.358, 0.99479, 0.99242),
           (-32, 4.936, 0.99187, 0.98754), (-30, 4.357, 0.98000, 0.96892)]
LAM = 0.15

SETTINGS = {  # name: (method, use sensitivities, reuse the metric of this setting (same reconstruction))
    "uniform": ("uniform", False, None),
    "alloc": ("uniform", True, None),
    "alloc+ctx": ("uniform:coder=ctx", True, "alloc"),
    "alloc+rdoq": (f"rdoq:lam={LAM},coder=ans", True, None),
    "alloc+rdoq+ctx": (f"rdoq:lam={LAM},coder=ctx", True, None),
    "alloc+dq": (f"dq:lam={LAM},coder=ans", True, None),
    "alloc+dq+ctx": (f"dq:lam={LAM},coder=ctx", True, None),
}
# dq's step spaces the union of its two quantizers: at equal SQNR it is about 2.5 k-units finer
PLANS = {  # model: {setting: base-step exponents k (step 2^(k/4))}, and which settings get the task metric
    "mnist-cnn": ({**{s: (-24, -20, -16, -12) for s in SETTINGS if "dq" not in s},
                   **{s: (-27, -23, -19, -15) for s in SETTINGS if "dq" in s}}, tuple(SETTINGS)),
    "minilm": ({"uniform": (-34, -30, -28), "alloc": (-34, -32, -28, -26), "alloc+ctx": (-34, -32, -28, -26),
                "alloc+rdoq+ctx": (-32, -28, -26), "alloc+dq+ctx": (-36, -34, -31, -29)},
               ("uniform", "alloc", "alloc+rdoq+ctx", "alloc+dq+ctx")),
}
QUICK = {"mnist-cnn": ({s: (-20, -12) for s in SETTINGS}, tuple(SETTINGS))}
SIGMA = {"minilm": 0.004, "mnist-cnn": 0.01}  # absolute noise for the sensitivity probe


def probe_loss(model: str):
    """loss(weights as numpy) -> float on inputs the task metric never sees, and the tensors to probe."""
    tensors = {t.name: t.float64().astype(np.float32) for t in load(model).tensors()
               if t.is_float and t.array.size >= DEFAULT_MIN_SIZE}
    others = {t.name: torch.from_numpy(np.array(t.array)) for t in load(model).tensors() if t.name not in tensors}
    entry = zoo.registry()[model]

    def torch_weights(ws):
        return {**others, **{k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in ws.items()}}

    if entry["arch"] == "sentence-encoder":
        from gensim.test.utils import datapath

        docs = [d for d in Path(datapath("lee.cor")).read_text(errors="replace").splitlines() if d.strip()][:8]
        folder = zoo.resolve(model)
        ref = build(entry["arch"], torch_weights(tensors), folder).encode(docs)

        def loss(ws):
            out = build(entry["arch"], torch_weights(ws), folder).encode(docs)
            return float(1 - torch.nn.functional.cosine_similarity(out.double(), ref.double()).mean())
    else:
        from zoocodec.eval import data

        x = data.opencv_digits()[0][:500]
        with torch.no_grad():
            ref = torch.log_softmax(build(entry["arch"], torch_weights(tensors))(x).double(), 1)

        def loss(ws):
            with torch.no_grad():
                out = torch.log_softmax(build(entry["arch"], torch_weights(ws))(x).double(), 1)
            return float((ref.exp() * (ref - out)).sum(1).mean())
    return tensors, loss


def sensitivities(model: str, fresh: bool) -> dict[str, float]:
    path = RESULTS / f"rd-sensitivity-{model}.json"
    if path.is_file() and not fresh:
        return json.loads(path.read_text())["per_weight"]
    tensors, loss = probe_loss(model)
    start = time.perf_counter()
    sens = noise_sensitivities(tensors, loss, sigma=SIGMA[model])
    path.write_text(json.dumps({"model": model, "sigma": SIGMA[model], "seconds": time.perf_counter() - start,
                                "per_weight": sens}, indent=2))
    return sens


def task_of(model: str):
    return TASKS["lee" if model == "minilm" else "digits"]


def run_model(model: str, plan: dict, evaluated: tuple[str, ...], fresh: bool, log) -> list[dict]:
    sens = sensitivities(model, fresh)
    ev = evaluator(model, task_of(model))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting, ks in plan.items():
            method, use_sens, same_as = SETTINGS[setting]
            for k in ks:
                start = time.perf_counter()
                p = allocate(model, sensitivities=sens if use_sens else None, base_step=2.0 ** (k / 4), method=method)
                report = zoocodec.compress(model, Path(tmp) / "m.zc", plan=p)
                row = {"model": model, "setting": setting, "method": method, "k": k, "base_step": 2.0 ** (k / 4),
                       "bits_per_weight": report.bits_per_weight, "ratio": report.ratio, "sqnr_db": report.sqnr_db,
                       "encode_s": time.perf_counter() - start}
                twin = next((r for r in rows if r["setting"] == same_as and r["k"] == k), None)
                if twin is not None:
                    row["metrics"] = twin["metrics"]
                elif setting in evaluated:
                    row["metrics"] = ev.score(load_weights(Path(tmp) / "m.zc"))
                rows.append(row)
                log(row)
    return rows


def interpolate(rows: list[dict], cosine: float, key: str = "cosine_mean") -> float | None:
    """bits/weight of a curve at a document cosine (linear in log(1 - cosine)); None outside it."""
    pts = sorted((math.log(1 - r["metrics"][key]), r["bits_per_weight"]) for r in rows if "metrics" in r)
    x = math.log(1 - cosine)
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x0 <= x <= x1 and x1 > x0:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def versus_nncodec(rows: list[dict]) -> list[dict]:
    """Per NNCodec point: each setting's bits/weight at NNCodec's mean and at its min document cosine."""
    out = []
    for qp, bpw, mean, low in NNCODEC:
        entry = {"nncodec_qp": qp, "nncodec_bits_per_weight": bpw, "cosine_mean": mean, "cosine_min": low}
        for setting in SETTINGS:
            curve = [r for r in rows if r["model"] == "minilm" and r["setting"] == setting]
            at = {key: interpolate(curve, c, key) for key, c in (("cosine_mean", mean), ("cosine_min", low))}
            entry[setting] = {
                f"at_equal_{key}": None if v is None else {"bits_per_weight": v, "nncodec_over_ours": bpw / v}
                for key, v in at.items()
            }
        out.append(entry)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 8), squeeze=False)
    for j, model in enumerate(models):
        mine = [r for r in rows if r["model"] == model]
        metric = "cosine_mean" if model == "minilm" else "top1"
        for i, setting in enumerate(SETTINGS):
            pts = sorted((r["bits_per_weight"], r["sqnr_db"], r.get("metrics", {}).get(metric))
                         for r in mine if r["setting"] == setting)
            axes[0][j].plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=f"C{i}", label=setting)
            ev = [p for p in pts if p[2] is not None]
            if ev:
                axes[1][j].plot([p[0] for p in ev], [p[2] for p in ev], "o-", color=f"C{i}", label=setting)
        if model == "minilm":
            axes[1][j].plot([n[1] for n in NNCODEC], [n[2] for n in NNCODEC], "ks--", label="NNCodec 2.1.3 (earlier)")
            axes[1][j].set_ylim(0.975, 1.0)
        axes[0][j].set(title=f"{model}: SQNR", xlabel="bits/weight (whole .zc)", ylabel="model SQNR, dB")
        axes[1][j].set(
            title=f"{model}: {'document cosine vs fp32 (mean)' if model == 'minilm' else 'top-1, 5,000 digits'}",
            xlabel="bits/weight (whole .zc)",
            ylabel=metric,
        )
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="mnist-cnn only, two points per setting")
    ap.add_argument("--fresh", action="store_true", help="measure the sensitivities again")
    args = ap.parse_args()
    torch.set_num_threads(2)
    plans = QUICK if args.quick else PLANS
    partial = []

    def log(row):
        partial.append(row)  # a run cut short still leaves its rows behind
        Path(tempfile.gettempdir(), "rd-rows.json").write_text(json.dumps(partial))
        print(f"{row['model']:9s} {row['setting']:15s} k={row['k']:4d} {row['bits_per_weight']:.3f} b/w "
              f"SQNR {row['sqnr_db']:.2f} dB {json.dumps(row.get('metrics', {}))} {row['encode_s']:.1f}s", flush=True)

    rows = []
    for model, (plan, evaluated) in plans.items():
        rows += run_model(model, plan, evaluated, args.fresh, log)
    result = {"machine": machine(("numpy", "torch", "constriction")), "lam": LAM, "rows": rows,
              "nncodec_points": [dict(zip(("qp", "bits_per_weight", "cosine_mean", "cosine_min"), n, strict=True))
                                 for n in NNCODEC],
              "nncodec_source": "earlier run on this machine type (NNCodec 2.1.3, defaults, dependent quantization on)"}
    if any(r["model"] == "minilm" for r in rows):
        result["versus_nncodec"] = versus_nncodec(rows)
        print(json.dumps(result["versus_nncodec"], indent=1))
    name = "rd-quick" if args.quick else "rd"
    out = save(name, result)
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
