"""The output of bench/bench_head_to_head.py: per-model tables, the headline, the plot, and the
JSON/markdown/PNG written atomically."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


def fmt(x, spec=".3f", none="-"):
    return none if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def table(model: dict) -> str:
    lines = [f"### {model['model']} ({model['params']:,} float parameters; {model['evaluation']}; "
             f"run {model.get('date', '?')})", "",
             "| tool | setting | bits/weight | ratio | metric | metric loss % [95% interval] | fidelity | SQNR dB "
             "| encode MB/s | decode MB/s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in model["rows"]:
        q = r["quality"]
        lines.append(
            f"| {r['tool']} | {r['setting']} | {r['bits_per_weight']:.3f} | {r['ratio']:.2f}x | "
            f"{fmt(q.get('metric'), '.4f', 'exact' if r['lossless'] else '-')} | {fmt(q.get('loss_pct'), '.2f')}"
            f"{_bracket(q)} | "
            f"{fmt(q.get('fidelity'), '.5f')} | {fmt(q.get('sqnr_db'), '.1f')} | "
            f"{fmt(r['encode_mbps'], '.1f')} | {fmt(r['decode_mbps'], '.1f')} |"
        )
    return "\n".join(lines)


def _bracket(q: dict) -> str:
    if q.get("loss_low_pct") is None:
        return ""
    return f" [{q['loss_low_pct']:.2f}, {q['loss_high_pct']:.2f}]"


def per_tool_table(model: dict) -> str:
    """Each tool's bits/weight at the equal-quality points (- where it never got that good), and speed."""
    c = model["compare"]
    cols = c["columns"]
    lines = ["| tool: bits/weight at | " + " | ".join(cols) + " | encode MB/s | decode MB/s |",
             "| --- |" + " ---: |" * (len(cols) + 2)]
    for tool, v in c["per_tool"].items():
        lines.append(f"| {tool} | " + " | ".join(fmt(b) for b in v["bpw"]) +
                     f" | {fmt(v['encode_mbps'], '.2f')} | {fmt(v['decode_mbps'], '.1f')} |")
    return "\n".join(lines)


def summary_text(model: dict) -> str:
    c, lines = model["compare"], []
    if not c["points"]:
        lines.append("- NNCodec not run: " + model.get("nncodec_skipped", "no rows"))
    for p in c["points"]:
        if p.get("note"):
            lines.append(f"- {p['target']}: {p['note']}")
            continue
        lines.append(f"- {p['target']}: zoocodec {fmt(p['zoocodec_bpw'])} bpw ({p['zoocodec_tool'] or '-'}, "
                     f"{p['zoocodec_how']}) vs NNCodec {fmt(p['nncodec_bpw'])} ({p['nncodec_how']}): "
                     f"**{fmt(p['size_ratio'], '.2f')}x** smaller; that tool encodes "
                     f"{fmt(p.get('encode_speedup'), '.1f')}x and decodes {fmt(p.get('decode_speedup'), '.1f')}x "
                     f"as fast as NNCodec")
    for f in model.get("failures", []):
        lines.append(f"- FAILED: {f['tool']} {f['setting']}: {f['error']}")
    for e in model["lossless"]:
        parts = [f"{k[8:]} {v:.3f}x" for k, v in e.items() if k.startswith("size_vs_")]
        speeds = [f"{k[16:]} {v:.2f}x" for k, v in e.items() if k.startswith("decode_speed_vs_")]
        lines.append(f"- lossless {e['dtype']}: zoocodec {e['zoocodec_ratio']:.3f}x; peer size / zoocodec size: "
                     f"{', '.join(parts)}; zoocodec decode speed / peer: {', '.join(speeds)}")
    return "\n".join(lines)


def plot(models: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(models), figsize=(5 * len(models), 8), squeeze=False)
    for j, m in enumerate(models):
        tools = sorted({r["tool"] for r in m["rows"] if not r["lossless"]})
        panels = (
            ("loss_pct", "metric loss % (lower is better)"),
            ("distortion", "output distortion: KL or 1 - cosine"),
        )
        for i, (key, label) in enumerate(panels):
            ax = axes[i][j]
            for tool in tools:
                pts = sorted((r["bits_per_weight"], r["quality"].get(key)) for r in m["rows"]
                             if r["tool"] == tool and not r["lossless"] and r["quality"].get(key) is not None)
                if key == "distortion":
                    pts = [(b, max(v, 1e-7)) for b, v in pts]
                if pts:
                    ax.plot(*zip(*pts, strict=True), "o-", label=tool, ms=4, lw=2.5 if tool == "NNCodec" else 1.2,
                            color="black" if tool == "NNCodec" else None)
            if key == "distortion":
                ax.set_yscale("log")
            ax.set_xlabel("bits/weight")
            ax.set_ylabel(label)
            ax.set_title(f"{m['model']}")
            ax.grid(alpha=0.3)
        axes[0][j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def headline(results: dict) -> str:
    """One row per model: zoocodec's size and speed ratios vs NNCodec, and the lossless ratios."""
    lines = [
        "| model | size vs NNCodec at loss 0.1% / 0.5% / 1% | at NNCodec's fidelities (min-max, bounds left out) | "
        "encode / decode speedup at those points (min-max) | lossless fp32, bf16: zipnn size / ours | "
        "zstd-19 size / ours | our decode speed / zipnn's |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def span(values, spec=".2f"):
        v = [x for x in values if x is not None]
        return f"{min(v):{spec}}-{max(v):{spec}}x" if v else "-"

    def exact(p):  # both sides measured or interpolated: not a bound
        return p["zoocodec_how"] in ("measured", "interpolated") and p["nncodec_how"] in ("measured", "interpolated")

    for m in results["models"]:
        pts = m["compare"]["points"]
        loss = [p for p in pts if p["target"].startswith("loss")]
        fid = [p for p in pts if p["target"].startswith("fid") and exact(p)]
        ll = {e["dtype"]: e for e in m["lossless"]}
        lossless = [" / ".join(fmt(ll.get(d, {}).get(k), ".3f") + "x" for d in ("fp32", "bf16"))
                    for k in ("size_vs_zipnn", "size_vs_zstd-19", "decode_speed_vs_zipnn")]
        lines.append(f"| {m['model']} | " + " / ".join(p["note"] if p.get("note") else
                                                   fmt(p["size_ratio"], ".2f") + ("x" if exact(p) else "x (bound)")
                                                   for p in loss) +
                     f" | {span(p['size_ratio'] for p in fid)} | {span((p.get('encode_speedup') for p in pts), '.1f')}"
                     f" / {span((p.get('decode_speedup') for p in pts), '.1f')} | " + " | ".join(lossless) + " |")
    return "\n".join(lines)


def save(results: dict, out: Path, stem: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    m = results["machine"]
    md = ["# Head to head: zoocodec vs NNCodec, Deep Compression-style, lossless tools", "",
          f"{m['date']}, {m['cpu']} ({m['cores']} cores shared with other work: see the load column "
          f"of the JSON), {results['seconds'] / 60:.1f} minutes; mode: "
          + ", ".join(f"{x['model']} {x.get('mode', results['mode'])}" for x in results["models"]) + ".", "",
          *([results["note"], ""] if results.get("note") else []), headline(results), ""]
    for model in results["models"]:
        md += [table(model), "", per_tool_table(model), "", summary_text(model), ""]
    _write(out / f"{stem}.json", json.dumps(results, indent=1, default=str))
    _write(out / f"{stem}.md", "\n".join(md))
    plot(results["models"], out / f"{stem}.png")


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
