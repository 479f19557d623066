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
import io
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoocodec.fsutil import atomic_file
from zoocodec.jobs.results import Results, model_dir
from zoocodec.jobs.spec import DEFAULT_BUDGETS, short_method
from zoocodec.pipeline import zoo

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
        out.append(_best(others, tests, f"{not_evaluated(sorted(others))}: best compression ratio at each "
                                        "weight SQNR floor"))
    return out


def not_evaluated(models: list[str]) -> str:
    """Why these models have no accuracy numbers: the sweep did not evaluate them (naming the
    zoo tasks it could have run), or they have no task at all."""
    with_tasks = [m for m in models if (zoo.registry().get(m) or {}).get("tasks")]
    parts = []
    if with_tasks:
        parts.append(f"not evaluated in this sweep ({', '.join(with_tasks)}: add their tasks, "
                     f"e.g. tasks: [{', '.join(zoo.registry()[with_tasks[0]]['tasks'])}], to measure accuracy)")
    if len(with_tasks) < len(models):
        parts.append(f"no accuracy task ({', '.join(m for m in models if m not in with_tasks)})")
    return "models " + "; models ".join(parts)


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


def method_name(r: dict[str, Any]) -> str:
    """A plot series: the method alone, so one method is one colour and one legend entry."""
    return short_method(r["params"]).partition(":")[0]


def setting(r: dict[str, Any]) -> str:
    """The parameters that differ from the method's defaults: the label of a point."""
    return short_method(r["params"]).partition(":")[2] or "defaults"


def is_lossless(r: dict[str, Any]) -> bool:
    """Bit-exact runs (infinite SQNR): kept off the lossy axes, where their 16-32 bits/weight
    would squash every lossy point into a corner."""
    return r["sqnr_db"] is None


def colours(runs: list[dict[str, Any]]) -> dict[str, str]:
    """One colour per method for the whole report."""
    names = sorted({method_name(r) for r in runs})
    palette = "tab10" if len(names) <= 10 else "tab20"
    import matplotlib

    cmap = matplotlib.colormaps[palette]
    return {name: matplotlib.colors.to_hex(cmap(i % cmap.N)) for i, name in enumerate(names)}


def _metrics_of(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The primary metric of every task these runs were evaluated on."""
    return sorted({(m["task"], m["metric"]) for r in runs for m in r["metrics"] if m["primary"]})


def plot(model: str, runs: list[dict[str, Any]], metric: tuple[str, str] | None,
         palette: dict[str, str] | None = None) -> tuple[bytes, list]:
    """A bits/weight vs quality PNG of one model's lossy runs: one colour per method, each point
    labelled with its setting, the Pareto front as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    palette = palette or colours(runs)
    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=100)
    points = []
    for name in sorted({method_name(r) for r in runs}):
        mine = [(r["bits_per_weight"], quality(r, metric), r) for r in runs
                if method_name(r) == name and not is_lossless(r) and quality(r, metric) is not None]
        if mine:
            ax.scatter([p[0] for p in mine], [p[1] for p in mine], label=name, s=28, color=palette[name])
            for x, y, r in mine:
                ax.annotate(setting(r), (x, y), xytext=(4, 3), textcoords="offset points", fontsize=6,
                            color=palette[name])
            points += mine
    front = pareto(points)
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front")
    ax.set_xlabel("bits per weight (lossy runs; lossless in the table below)")
    ax.set_ylabel(f"{metric[0]} {metric[1]}" if metric else "weight SQNR (dB)")
    ax.set_title(model)
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue(), front


PAGE = """{% macro table(columns, rows) -%}
<table><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
{%- endmacro %}<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>zoocodec report</title><style>
body{font-family:sans-serif;margin:2em;max-width:72em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}th{background:#eee}img{max-width:100%}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:middle}
</style></head><body>
<h1>{{ title }}</h1>
<p>{{ runs }} successful runs of {{ all_rows }} in <code>{{ out }}</code>.</p>
{% for s in summaries %}<p>{{ s.note }}:</p>{{ table(s.columns, s.rows) }}{% endfor %}
{% if palette %}<p>Methods: {% for name, colour in palette.items() -%}
<span class="swatch" style="background:{{ colour }}"></span>{{ name }} {% endfor %}</p>{% endif %}
{% for m in models %}
<h2>{{ m.name }}</h2>
{% if m.note %}<p>{{ m.note }}</p>{% endif %}
{% for p in m.plots %}
<img alt="{{ p.name }}" src="data:image/png;base64,{{ p.png }}">
<h3>Pareto front</h3>{{ table(p.front_columns, p.front) }}
{% endfor %}
{% if m.lossless %}<h3>Lossless</h3>{{ table(["method", "bits/weight", "ratio", "encode s", "decode s"],
                                             m.lossless) }}{% endif %}
{% endfor %}
</body></html>
"""

def _page():
    """The page template (Jinja2, every value escaped)."""
    import jinja2

    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(PAGE)


def write(out: str | os.PathLike, html_path: str | os.PathLike, budgets: list[float] = DEFAULT_BUDGETS,
          title: str | None = None) -> Path:
    """Write the HTML report of the results in `out`; the PNGs go to <report>_files/ too."""
    runs = ok_runs(out)
    html_path = Path(html_path)
    png_dir = html_path.with_name(html_path.stem + "_files")
    png_dir.mkdir(parents=True, exist_ok=True)
    palette = colours(runs) if runs else {}
    by_model = defaultdict(list)
    for r in runs:
        by_model[r["model"]].append(r)
    models = []
    for model in sorted(by_model):
        mine = by_model[model]
        plots = []
        metrics = _metrics_of(mine)
        for metric in metrics or [None]:
            if all(is_lossless(r) for r in mine):
                break
            png, front = plot(model, mine, metric, palette)
            name = f"{model_dir(model)}{'-' + model_dir(metric[0] + '-' + metric[1]) if metric else ''}.png"
            _atomic_bytes(png_dir / name, png)
            ylabel = f"{metric[0]} {metric[1]}" if metric else "SQNR dB"
            plots.append({"name": name, "png": base64.b64encode(png).decode(),
                          "front_columns": ["method", "bits/weight", "ratio", ylabel, "encode s", "decode s"],
                          "front": [[short_method(r["params"]), f"{b:.3f}", f"{r['ratio']:.2f}x", f"{q:.4g}",
                                     f"{r['encode_s']:.2f}", f"{r['decode_s']:.2f}"] for b, q, r in front]})
        models.append({"name": model, "plots": plots,
                       "note": "" if metrics else f"Quality is the weights' SQNR: {not_evaluated([model])}.",
                       "lossless": [[short_method(r["params"]), f"{r['bits_per_weight']:.3f}", f"{r['ratio']:.4f}x",
                                     f"{r['encode_s']:.2f}", f"{r['decode_s']:.2f}"] for r in mine if is_lossless(r)]})
    page = _page().render(
        title=title or f"zoocodec sweep: {out}", runs=len(runs),
        all_rows=Results(out).runs(columns=["status"]).num_rows,
        out=str(out), summaries=summaries(runs, budgets), palette=palette, models=models)
    _atomic_bytes(html_path, page.encode())
    return html_path


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
