"""What a sweep found: the summary table, rate-distortion plots, Pareto fronts, an HTML page.

Quality is the accuracy metrics when the sweep evaluated tasks (a run is within a budget
when the pessimistic end of the 95% interval of its worst primary-metric drop, in percent,
is at most the budget; a budget narrower than the interval is "not resolvable with N
inputs"), else the weights' SQNR
(budgets are then SQNR floors). The Pareto front of a model is the set of runs that no
other run beats on both bits per weight and quality.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoocodec.fsutil import publish
from zoocodec.jobs.results import Results, model_dir
from zoocodec.jobs.spec import DEFAULT_BUDGETS, short_method

SQNR_FLOORS = (40.0, 30.0, 20.0)


@dataclass
class Summary:
    columns: list[str]
    rows: list[list[str]]
    note: str


def ok_runs(out: str | os.PathLike, work_ids: set[str] | None = None) -> list[dict[str, Any]]:
    rows = Results(out).runs().to_pylist()
    return [r for r in rows if r["status"] == "ok" and (work_ids is None or r["work_id"] in work_ids)]


def has_metrics(runs: list[dict[str, Any]]) -> bool:
    return any(r["worst_drop_pct"] is not None for r in runs)


def summaries(runs: list[dict[str, Any]], budgets: list[float]) -> list[Summary]:
    """Best ratio per model within each accuracy budget; models the sweep did not evaluate
    get a second table, by weight SQNR floor."""
    by_model = defaultdict(list)
    for r in runs:
        by_model[r["model"]].append(r)
    evaluated = {m: rs for m, rs in by_model.items() if has_metrics(rs)}
    others = {m: rs for m, rs in by_model.items() if m not in evaluated}
    out = []
    if evaluated:
        tests = [(f"drop <= {b:g}%", lambda r, b=b: within(r, b)) for b in budgets]
        out.append(_best(evaluated, tests, "best compression ratio whose accuracy drop (primary metric vs the "
                                           "uncompressed model, upper end of its 95% interval) stays within "
                                           "each budget", unresolved=[lambda rs, b=b: unresolvable(rs, b)
                                                                      for b in budgets]))
    if others:
        tests = [("lossless", lambda r: r["sqnr_db"] is None)] + [
            (f"SQNR >= {f:g} dB", lambda r, f=f: r["sqnr_db"] is None or r["sqnr_db"] >= f) for f in SQNR_FLOORS]
        out.append(_best(others, tests, "models without accuracy tasks: best compression ratio at each "
                                        "weight SQNR floor"))
    return out


def _high(r: dict[str, Any]) -> float | None:
    """The pessimistic worst drop of a run (None for rows written before intervals: never within)."""
    return r.get("worst_drop_high_pct")


def within(r: dict[str, Any], budget: float) -> bool:
    """The run's worst primary drop is within `budget` percent at the pessimistic end of its interval."""
    return _high(r) is not None and _high(r) <= budget


def unresolvable(runs: list[dict[str, Any]], budget: float) -> str | None:
    """'not resolvable with N inputs' when no run is within `budget` by its pessimistic bound but
    one is by its point value and its interval is wider than the budget."""
    for r in runs:
        low, high = r.get("worst_drop_low_pct"), _high(r)
        if (r["worst_drop_pct"] is not None and r["worst_drop_pct"] <= budget and low is not None
                and high is not None and high - low > budget):
            return f"not resolvable with {r['inputs']:,} inputs"
    return None


def _best(by_model: dict[str, list[dict[str, Any]]], tests, note: str, unresolved=None) -> Summary:
    rows = []
    for model in sorted(by_model):
        cells = [model]
        for i, (_, test) in enumerate(tests):
            best = max((r for r in by_model[model] if test(r)), key=lambda r: r["ratio"], default=None)
            why = unresolved[i](by_model[model]) if unresolved and best is None else None
            cells.append(f"{best['ratio']:.2f}x {short_method(best['params'])}" if best else why or "-")
        rows.append(cells)
    return Summary(["model"] + [name for name, _ in tests], rows, note)


def quality(r: dict[str, Any], metric: tuple[str, str] | None) -> float | None:
    """The y value of a run: a metric's value, or SQNR (None: lossless, off the chart)."""
    if metric is None:
        return r["sqnr_db"]
    for m in r["metrics"]:
        if (m["task"], m["metric"]) == metric:
            return m["value"]
    return None


def pareto(points: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """Points (bits, quality, tag) not beaten on both: fewer bits and higher quality."""
    front, best = [], -math.inf
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if p[1] > best:
            front.append(p)
            best = p[1]
    return front


def family(r: dict[str, Any]) -> str:
    """A plot series: the method and which parameters it sets, e.g. 'uniform (bits)'."""
    text = short_method(r["params"])
    name, _, params = text.partition(":")
    keys = [p.split("=")[0] for p in params.split(",") if p]
    return f"{name} ({', '.join(keys)})" if keys else name


def _metrics_of(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The primary metric of every task these runs were evaluated on."""
    return sorted({(m["task"], m["metric"]) for r in runs for m in r["metrics"] if m["primary"]})


def plot(model: str, runs: list[dict[str, Any]], metric: tuple[str, str] | None) -> tuple[bytes, list]:
    """A bits/weight vs quality PNG of one model, one colour per method, the front as a line."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    points = []
    for name in sorted({family(r) for r in runs}):
        xs, ys = [], []
        for r in runs:
            y = quality(r, metric)
            if family(r) == name and y is not None:
                xs.append(r["bits_per_weight"])
                ys.append(y)
                points.append((r["bits_per_weight"], y, r))
        if xs:
            ax.scatter(xs, ys, label=name, s=28)
    front = pareto(points)
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel(f"{metric[0]} {metric[1]}" if metric else "weight SQNR (dB)")
    ax.set_title(model)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue(), front


def write(out: str | os.PathLike, html_path: str | os.PathLike, budgets: list[float] = DEFAULT_BUDGETS,
          title: str | None = None) -> Path:
    """Write the HTML report of the results in `out`; the PNGs go to <report>_files/ too."""
    runs = ok_runs(out)
    html_path = Path(html_path)
    png_dir = html_path.with_name(html_path.stem + "_files")
    png_dir.mkdir(parents=True, exist_ok=True)
    all_rows = Results(out).runs(columns=["status"]).num_rows
    parts = [f"<h1>{html.escape(title or f'zoocodec sweep: {out}')}</h1>",
             f"<p>{len(runs)} successful runs of {all_rows} in <code>{html.escape(str(out))}</code>.</p>"]
    for s in summaries(runs, budgets):
        parts += [f"<p>{html.escape(s.note)}:</p>", _table(s.columns, s.rows)]
    by_model = defaultdict(list)
    for r in runs:
        by_model[r["model"]].append(r)
    for model in sorted(by_model):
        parts.append(f"<h2>{html.escape(model)}</h2>")
        for metric in _metrics_of(by_model[model]) or [None]:
            png, front = plot(model, by_model[model], metric)
            name = f"{model_dir(model)}{'-' + model_dir(metric[0] + '-' + metric[1]) if metric else ''}.png"
            _atomic_bytes(png_dir / name, png)
            parts.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
            ylabel = f"{metric[0]} {metric[1]}" if metric else "SQNR dB"
            parts.append("<h3>Pareto front</h3>" + _table(
                ["method", "bits/weight", "ratio", ylabel, "encode s", "decode s"],
                [[short_method(r["params"]), f"{b:.3f}", f"{r['ratio']:.2f}x", f"{q:.4g}", f"{r['encode_s']:.2f}", f"{r['decode_s']:.2f}"]
                 for b, q, r in front]))
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>zoocodec report</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:72em}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}th{background:#eee}img{max-width:100%}"
            "</style></head><body>" + "\n".join(parts) + "</body></html>")
    _atomic_bytes(html_path, page.encode())
    return html_path


def _table(columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    publish(tmp, path)
