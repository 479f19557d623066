"""Head-to-head on a causal LM: smollm2-135m under GGUF formats and zoocodec, judged by token KL.

Every point is the same weights of the zoo's smollm2-135m, quantized by one peer, run on
task `ppl` (token KL(original || model) and perplexity on lee_background.cor in 512-token
windows; `--windows N` uses N of its 147 windows, evenly spread, with 95% intervals over
the documents they cover), against the original in the same run.

Peers and what their bits per weight count (every byte of every tensor, side information
included; the 1-D norm scales stay float32 in every peer):
- GGUF formats written by gguf-py's own quantizers (`gguf.quants.quantize`): Q8_0, Q5_1,
  Q4_1, Q4_0, MXFP4 (blocks of 32 with their scales and minimums; gguf-py also writes Q5_0
  and Q5_1, left out to keep the run short). gguf-py 0.19.0
  writes no K-quants (it only reads them), so Q4_K and friends are not here.
- HQQ 0.2.8 (`hqq.core.quantize.Quantizer`, half-quadratic zero/scale optimisation, CPU):
  B bits in groups of G weights along the input dimension; the packed weights plus a
  float16 scale and zero per group (HQQ's default meta; `--peers DIR` names a folder where
  `pip install --no-deps --target DIR hqq==0.2.8 termcolor` put it, so torch stays 2.13.0).
- zoocodec: `uniform:bits=B` (min-max steps per output channel) and group-wise
  `uniform:bits=B,group=32,zero=true` (a step and a minimum per 32 weights, as Q4_1;
  steps and minimums coded in the file), ANS-coded: the file's bytes.

Caveat printed beside every 4-bit number: SmolLM2's weights were dequantized from Q4_1 (32
weights per block, 4 bits, a scale and a minimum), so a 4-bit 32-weight asymmetric block
format (Q4_1 itself) reproduces them almost exactly. Judge the region below 4 bits.

    pip install --no-deps --target /tmp/peers hqq==0.2.8 termcolor==3.2.0
    python bench/bench_llm_head_to_head.py --windows 16 --peers /tmp/peers   # JSON, markdown, plot in bench/results/
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import RESULTS, machine, save

MODEL = "smollm2-135m"
GGUF_TYPES = ("Q8_0", "Q4_1", "Q4_0", "MXFP4")
HQQ_SETTINGS = ((4, 64), (3, 64), (2, 32))  # (bits, group size): HQQ's recommended groups per bit width
ZOOCODEC_SPECS = ("bits=3,group=32,zero=true", "bits=4,group=32,zero=true", "bits=3", "bits=4", "bits=5", "bits=8")
BUDGETS = (0.01, 0.05, 0.1)  # token KL, nats, judged by the pessimistic end of the 95% interval
CAVEAT = ("4-bit caveat: the weights were dequantized from Q4_1 (32-weight blocks, 4 bits, scale and minimum); "
          "a 4-bit format with 32-weight asymmetric blocks reproduces them almost exactly")


def gguf_point(weights: dict[str, torch.Tensor], qtype: str) -> tuple[dict[str, torch.Tensor], int]:
    """(the weights as the GGUF type decodes them, bytes of every tensor)."""
    import gguf

    t = getattr(gguf.GGMLQuantizationType, qtype)
    recon, size = {}, 0
    for name, w in weights.items():
        if w.dim() < 2:  # norm scales: float32 in a GGUF file too
            recon[name], size = w, size + w.numel() * 4
            continue
        q = gguf.quants.quantize(w.float().numpy(), t)
        size += q.nbytes
        recon[name] = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(q, t)).reshape(w.shape)).float()
    return recon, size


def hqq_point(weights: dict[str, torch.Tensor], bits: int, group: int) -> tuple[dict[str, torch.Tensor], int]:
    """(the weights as HQQ decodes them, bytes: packed weights + float16 scale and zero per group)."""
    from hqq.core.quantize import Quantizer

    recon, size = {}, 0
    for name, w in weights.items():
        if w.dim() < 2:
            recon[name], size = w, size + w.numel() * 4
            continue
        w_q, meta = Quantizer.quantize(w.float(), nbits=bits, channel_wise=True, group_size=group, optimize=True,
                                       axis=1, compute_dtype=torch.float32, device="cpu")
        size += w_q.numel() * w_q.element_size() + 2 * (meta["scale"].numel() + meta["zero"].numel())
        recon[name] = Quantizer.dequantize(w_q, meta).float().reshape(w.shape)
    return recon, size


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


def smallest_within(points: list[dict], family: str, budget: float) -> dict | None:
    ok = [p for p in points if p["family"] == family and p["kl_high"] <= budget]
    return min(ok, key=lambda p: p["bits_per_weight"]) if ok else None


FOUR_BIT = ("Q4_0", "Q4_1", "MXFP4", "bits=4", "bits=4,group=32,zero=true")
FIRST = ("bits=3,group=64", "bits=3,group=32,zero=true", "bits=2,group=32", "bits=4,group=32,zero=true", "Q4_0",
         "bits=3", "MXFP4", "bits=4,group=64", "bits=4")


def caveat(label: str) -> str:
    return " (4-bit caveat)" if label in FOUR_BIT or label.startswith("bits=4,") else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=None, help="windows of lee_background.cor (default: all 147)")
    ap.add_argument(
        "--peers", type=Path, default=None, help="a folder with hqq installed (--target); none: HQQ left out"
    )
    args = ap.parse_args()
    if args.peers:
        sys.path.append(str(args.peers))
    from zoocodec.eval.evaluate import evaluator, load_weights
    from zoocodec.eval.tasks import TASKS

    info = machine(("numpy", "torch", "transformers", "gguf"))
    weights = load_weights(MODEL)
    params = sum(w.numel() for w in weights.values())
    start = time.perf_counter()
    ev = evaluator(MODEL, TASKS["ppl"], args.windows)
    print(f"reference: perplexity {ev.baseline['ppl']:.3f} on {ev.scorer.n:,} "
          f"tokens ({time.perf_counter() - start:.0f} s)")
    points = []
    runs = [("gguf", q, lambda q=q: gguf_point(weights, q)) for q in GGUF_TYPES] + \
           [("zoocodec uniform", z, lambda z=z: zoocodec_point(z)) for z in ZOOCODEC_SPECS]
    if args.peers:
        runs += [("hqq", f"bits={b},group={g}", lambda b=b, g=g: hqq_point(weights, b, g)) for b, g in HQQ_SETTINGS]
    # below 4 bits first (the region the 4-bit caveat leaves to judge), so a run cut short has it
    runs.sort(key=lambda r: (r[1] not in FIRST, FIRST.index(r[1]) if r[1] in FIRST else 0))
    for family, label, make in runs:
        t0 = time.perf_counter()
        recon, size = make()
        point = {"family": family, "label": label, "bytes": size, "bits_per_weight": 8 * size / params} | judge(
            ev, recon
        )
        point["seconds"] = time.perf_counter() - t0
        points.append(point)
        print(f"{family:18s} {label:8s} {point['bits_per_weight']:.3f} bits/weight  KL {point['kl']['value']:.5f} "
              f"(95% bound {point['kl_high']:.5f})  ppl {point['ppl']['value']:.3f}{caveat(label)}",
              flush=True)
        best = {
            str(b): {f: smallest_within(points, f, b) for f in ("gguf", "hqq", "zoocodec uniform")} for b in BUDGETS
        }
        result = {"machine": info, "model": MODEL, "params": params, "tokens": ev.scorer.n,
                  "windows": args.windows or "all", "baseline_ppl": ev.baseline["ppl"], "caveat": CAVEAT,
                  "complete": len(points) == len(runs), "points": points, "smallest_within": best}
        path = save("llm_head_to_head", result)  # after every point: a run cut short keeps what it measured
        write_markdown(result, RESULTS / "llm_head_to_head.md")
        plot(result, RESULTS / "llm_head_to_head.png")
    print(f"wrote {path}")


def write_markdown(r: dict, path: Path) -> None:
    lines = [f"# {r['model']}: GGUF formats and zoocodec at equal token KL",
             "", f"{r['tokens']:,} tokens of lee_background.cor ({r['windows']} windows of 512), original perplexity "
             f"{r['baseline_ppl']:.3f}; {r['machine']['cpu']}, {r['machine']['date']}, load average at start "
             f"{r['machine']['load_average_at_start'][0]:.1f}." + ("" if r["complete"] else
             " **Partial run: the points below are all it measured.**"), "", f"**{r['caveat']}.**", "",
             "| peer | setting | bits/weight | token KL | KL 95% bound | perplexity | ppl delta 95% interval | note |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for p in r["points"]:
        lines.append(f"| {p['family']} | {p['label']} | {p['bits_per_weight']:.3f} | {p['kl']['value']:.5f} | "
                     f"{p['kl_high']:.5f} | {p['ppl']['value']:.3f} | [{p['ppl']['delta_low']:+.3f}, "
                     f"{p['ppl']['delta_high']:+.3f}] | {caveat(p['label']).strip(' ()')} |")
    lines += ["", "Smallest point within each token-KL budget (pessimistic bound):", "",
              "| KL budget | GGUF | HQQ | zoocodec uniform | best peer / zoocodec |",
              "| ---: | --- | --- | --- | ---: |"]

    def cell(p):
        return "none" if p is None else f"{p['label']} {p['bits_per_weight']:.3f}{caveat(p['label'])}"

    for budget, fam in r["smallest_within"].items():
        g, h, z = fam["gguf"], fam["hqq"], fam["zoocodec uniform"]
        peers = [p["bits_per_weight"] for p in (g, h) if p]
        ratio = f"{min(peers) / z['bits_per_weight']:.2f}x" if peers and z else "-"
        lines.append(f"| {budget} | {cell(g)} | {cell(h)} | {cell(z)} | {ratio} |")
    path.write_text("\n".join(lines) + "\n")


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family, marker in (("gguf", "s"), ("hqq", "^"), ("zoocodec uniform", "o")):
        ps = sorted((p for p in r["points"] if p["family"] == family), key=lambda p: p["bits_per_weight"])
        ax.plot(
            [p["bits_per_weight"] for p in ps], [max(p["kl"]["value"], 1e-6) for p in ps], marker=marker, label=family
        )
        for p in ps:
            ax.annotate(p["label"], (p["bits_per_weight"], max(p["kl"]["value"], 1e-6)), fontsize=7)
    ax.axvspan(4.0, 5.1, color="0.9", label="4-bit caveat (weights on Q4_1's grid)")
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight (every byte)")
    ax.set_ylabel("token KL(original || model), nats")
    ax.set_title(f"{r['model']}, {r['tokens']:,} tokens of lee_background.cor")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
