"""What the command line prints: consoles, progress and notes on stderr, tables and summary lines."""
from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


def _console(stderr: bool = False) -> Console:
    """A terminal's own width; anywhere else (a log, a pipe) no width limit, so tables and
    lines are never cut or wrapped at 80 columns."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=LOG_WIDTH)


LOG_WIDTH = 10_000
console = _console()
err_console = _console(stderr=True)
PLAIN_PROGRESS_SECONDS = 10.0


@contextmanager
def progress(total: int, what: str) -> Iterator[Callable[[str], None]]:
    """Progress over `total` named steps: a bar on a terminal, else a plain line every few
    seconds (and the last one) once work has run that long, so logs show that work is moving
    and short commands stay quiet. Yields step(name)."""
    if err_console.is_terminal:
        with Progress(TextColumn(f"{what} [cyan]{{task.fields[name]}}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("", total=total, name="")
            yield lambda name: bar.update(task, advance=1, name=name)
        return
    done, start = 0, time.monotonic()
    last = start

    def step(name: str) -> None:
        nonlocal done, last
        done += 1
        now = time.monotonic()
        if now - last >= PLAIN_PROGRESS_SECONDS or (done == total and last > start):
            last = now
            err_console.print(f"{what} {done}/{total} {name} ({now - start:.0f} s)", markup=False,
                              highlight=False, soft_wrap=True)

    yield step


@contextmanager
def working(what: str) -> Iterator[None]:
    """A step whose progress cannot be counted (evaluation, bit allocation): a spinner on a
    terminal, else a plain line every few seconds that it is still running."""
    if err_console.is_terminal:
        with err_console.status(what):
            yield
        return
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(PLAIN_PROGRESS_SECONDS):
            err_console.print(f"{what} ({time.monotonic() - start:.0f} s)", markup=False, highlight=False,
                              soft_wrap=True)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextmanager
def sweep_progress() -> Iterator[Callable[[int, int, int, int], None]]:
    """A sweep's counts: a bar on a terminal, else a plain line every few seconds (and the last)."""
    if err_console.is_terminal:
        with Progress(TextColumn("[green]{task.fields[ok]} ok [red]{task.fields[failed]} failed "
                                 "[cyan]{task.fields[running]} running"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err_console) as bar:
            task = bar.add_task("", total=None, ok=0, failed=0, running=0)
            yield lambda ok, failed, running, total: bar.update(task, completed=ok + failed, total=total, ok=ok,
                                                                failed=failed, running=running)
        return
    start = time.monotonic()
    last = start

    def update(ok: int, failed: int, running: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PLAIN_PROGRESS_SECONDS or (ok + failed == total and last > start):
            last = now
            err_console.print(f"sweep: {ok + failed}/{total} done ({ok} ok, {failed} failed), {running} running "
                              f"({now - start:.0f} s)", markup=False, highlight=False, soft_wrap=True)

    yield update


NOTES: list[str] = []


def note(text: str) -> None:
    """A `note:` line for stderr, printed once the command has succeeded: a failed or
    interrupted command prints its one error line alone."""
    if text not in NOTES:
        NOTES.append(text)


class _Notes(logging.Handler):
    """zoocodec's warnings (e.g. NVDEC falling back to software) as notes."""

    def emit(self, record: logging.LogRecord) -> None:
        note(record.getMessage())


def show_warnings() -> None:
    logger = logging.getLogger("zoocodec")
    if not any(isinstance(h, _Notes) for h in logger.handlers):
        logger.addHandler(_Notes(logging.WARNING))
        logger.setLevel(logging.WARNING)


def short_spec(method: str, keep: int = 3) -> str:
    """A method spec with each long tuple of values cut to its first `keep` and a count: a tensor
    with a step per row group (smollm2's embedding: 49,152 of them) would fill the terminal."""
    def cut(m: re.Match) -> str:
        items = m.group(2).split(", ")
        if len(items) <= 2 * keep:
            return m.group(0)
        return f"{m.group(1)}{', '.join(items[:keep])}, ... {len(items):,} values{m.group(3)}"

    return re.sub(r"([(\[])([^()\[\]]*)([)\]])", cut, method)


def sqnr(x: float | None, lossless: bool) -> str:
    """An SQNR in dB, or why there is none: a lossless method's output is `lossless`; a quantizer
    that made no error found every value already on its grid (a decompressed file compressed
    again with its own spec), and says so instead of claiming a lossless method."""
    if x is not None and math.isfinite(x):
        return f"{x:.1f}"
    return "lossless" if lossless else "on grid"


def is_lossless(method: str) -> bool:
    return method.partition(":")[0] == "lossless"


def sqnr_summary(report) -> str:
    """The model's SQNR for the summary line (see sqnr)."""
    if math.isfinite(report.sqnr_db):
        return f"SQNR {report.sqnr_db:.1f} dB"
    if all(is_lossless(t.method) for t in report.tensors):
        return "lossless"
    return "exact: every quantized value already sat on its grid"


def metrics_table(title: str, metrics) -> None:
    """evaluate's metrics: value, original, delta and its 95% interval per task and metric."""
    table = Table(title=escape(title))
    for col in ("task", "metric", "value", "original", "delta", "95% interval", "inputs"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right", no_wrap=True)
    for m in metrics:
        interval = "-" if m.low is None else f"[{m.low:+.5f}, {m.high:+.5f}]"
        table.add_row(m.task, m.metric + (" *" if m.primary else ""), f"{m.value:.5f}", f"{m.baseline:.5f}",
                      f"{m.delta:+.5f}", interval, f"{m.n:,}")
    console.print(table)
    console.print("* primary metric (budgets apply to the pessimistic end of its interval); intervals: "
                  "paired bootstrap over inputs, Newcombe paired score for 0/1 outcomes (top-k, agreement)")


def auto_lines(meta: dict) -> list[str]:
    """What automatic mode decided and verified, as stored in the header."""
    auto = meta.get("auto")
    if not isinstance(auto, dict):
        return []
    v = auto.get("verified") or {}
    lines = [
        f"automatic mode: {meta.get('zoo', '?')} {auto.get('task')} {auto.get('metric')} kept within "
        f"{100 * auto.get('target_loss', 0):g}% with {auto.get('method')}, base step {auto.get('base_step', 0):.4g}"
    ]
    if v:
        on = (auto.get("split") or {}).get("about")
        lines.append(
            f"  verified on {f'the held-back part of a {on}' if on else 'all inputs'}: {v.get('value', 0):.5f} "
            f"vs original {v.get('baseline', 0):.5f} (loss {100 * v.get('loss', 0):.3f}%, 95% bound "
            f"{100 * v.get('loss_high', 0):.3f}%)"
        )
    if auto.get("search"):
        lines.append(f"  search: {len(auto['search'])} steps tried on {auto.get('search_inputs')} inputs")
    return lines


def inspect_table(container, info: dict) -> None:
    """A container's tensors, its totals and what automatic mode decided."""
    table = Table(title=escape(f"{container}  ({info['source']}, zoocodec {info['zoocodec']})"))
    for col in ("tensor", "shape", "dtype", "method", "bits/w", "ratio", "SQNR dB"):
        table.add_column(col, justify="right" if col in ("bits/w", "ratio", "SQNR dB") else "left")
    for r in info["tensors"]:
        table.add_row(r["name"], "x".join(map(str, r["shape"])), r["dtype"], escape(short_spec(r["method"])),
                      f"{r['bits_per_weight']:.3f}", f"{r['ratio']:.2f}", sqnr(r["sqnr_db"], r["lossless"]))
    console.print(table)
    if any(sqnr(r["sqnr_db"], r["lossless"]) == "on grid" for r in info["tensors"]):
        console.print("on grid: the tensor's values already sat exactly on its quantization grid (no error; "
                      "a decompressed file compressed again)", highlight=False, markup=False)
    console.print(
        f"{info['params']:,} weights, {info['bytes_in']:,} -> {info['weight_bytes']:,} bytes "
        f"(+{info['file_bytes'] - info['weight_bytes']:,} attached), "
        f"ratio {info['ratio']:.2f}x, {info['bits_per_weight']:.3f} bits/weight",
        highlight=False,
        markup=False,
    )
    for line in auto_lines(info["meta"]):
        console.print(line, highlight=False)


def seq_lines(info: dict) -> list[str]:
    """The summary lines compress-seq and inspect print for a sequence file."""
    n, params = len(info["member_bytes"]), info["params_per_member"]
    return ["members (own streams): " + ", ".join(f"{k} {v:.3f}" for k, v in info["member_bits_per_weight"].items())
            + f" bits/weight; shared by all (steps, header): {info['shared_bytes']:,} bytes",
            f"{n} members x {params:,} weights, {info['bytes_in']:,} -> {info['weight_bytes']:,} bytes, "
            f"ratio {info['ratio']:.2f}x, {info['bits_per_weight']:.3f} bits/weight on average (whole file)"]


def seq_table(container, info: dict) -> None:
    """A sequence file: members, mode, and per tensor and per member what it costs."""
    seq = info["sequence"]
    table = Table(
        title=escape(f"{container}  (sequence of {len(seq['members'])}, mode {seq['mode']}, keyint {seq['keyint']})")
    )
    for col in ("tensor", "shape", "dtype", "coding", "bytes", "bits/w per member"):
        table.add_column(col, justify="right" if col in ("bytes", "bits/w per member") else "left")
    for r in info["tensors"]:
        table.add_row(r["name"], "x".join(map(str, r["shape"])), r["dtype"], r["coding"], f"{r['bytes']:,}",
                      f"{r['bits_per_weight']:.3f}")
    console.print(table)
    for line in seq_lines(info):
        console.print(line, highlight=False, markup=False)


def print_summaries(name: str, summaries) -> None:
    """A sweep's summary tables, their text printed as written (`tasks: [lee, wordsim]` is no markup)."""
    for s in summaries:
        table = Table(title=escape(f"sweep {name}: {s.note}"))
        for col in s.columns:
            table.add_column(escape(col))
        for row in s.rows:
            table.add_row(*map(escape, row))
        console.print(table)


def catalog_listing(listed: list[dict], coders: list[dict] | None, presets: dict) -> None:
    """`zoocodec methods`: each method with its parameter table; with `coders`, the coders and presets too."""
    for m in listed:
        print_spec(m, "lossless" if m["lossless"] else "")
    if coders is not None:
        console.print("[bold]coders[/bold] (a method's coder=NAME or coder=NAME(key=value,...))")
        for c in coders:
            print_spec(c, "")
        console.print("[bold]presets[/bold] (compress --preset NAME)")
        for k, p in presets.items():
            opts = " ".join(f"--{o.replace('_', '-')} {v}" for o, v in p["options"].items())
            console.print(f"  {k:<14} {opts}: {p['about']}", highlight=False, markup=False)


def print_spec(m: dict, note: str) -> None:
    console.print(f"[bold]{m['name']}[/bold] (version {m['version']}{', ' + note if note else ''}): {m['about']}",
                  highlight=False)
    if m["params"]:
        table = Table(box=None, padding=(0, 2))
        for col in ("parameter", "type", "default", "range"):
            table.add_column(col)
        for p in m["params"]:
            table.add_row(p["name"], p["type"], "none" if p["default"] is None else str(p["default"]), p["range"])
        console.print(table)


def zoo_table(models: list[dict]) -> None:
    table = Table(title="zoo models")
    for col in ("name", "installed", "tasks", "format", "about", "install"):
        table.add_column(col)
    for m in models:
        table.add_row(m["name"], "yes" if m["installed"] else "no", ", ".join(m["tasks"]), m["format"], m["about"],
                      "" if m["installed"] else m["install"])
    console.print(table)
