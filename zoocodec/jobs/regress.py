"""Nightly regression: compare two sweeps' runs by work id and flag what got worse.

A work id is the same model content, method spec and format version, so a change in
its numbers is a change in zoocodec. Checked per matching id: status (ok -> failed),
compression ratio (relative, `ratio=1%`), every accuracy metric (its drop, in percentage
points of its baseline, `metric=0.2%`) and weight SQNR (`sqnr=0.1` dB). A baseline id
missing from the current results counts as a regression: the work silently vanished. An id
only in the current results is listed as new. The counts are of work items, and add up: every
baseline item is compared or missing; an item regressed once, however many of its measures
got worse.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from zoocodec.errors import ZoocodecError
from zoocodec.jobs.results import Results

DEFAULT_TOLERANCE = {"ratio": 1.0, "metric": 0.2, "sqnr": 0.1}


@dataclass
class Change:
    verdict: str  # regression | improvement | new
    work_id: str
    model: str
    method: str
    measure: str
    baseline: str
    current: str
    change: str


@dataclass
class Comparison:
    baseline: int  # work items in each results folder
    current: int
    matched: int
    changes: list[Change] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regression"]

    def items(self, verdict: str, measure: str | None = None) -> int:
        """How many work items have a change of this verdict (and measure)."""
        return len({c.work_id for c in self.changes if c.verdict == verdict and measure in (None, c.measure)})

    def improved(self) -> int:
        """Work items that got better and none of whose measures got worse."""
        worse = {c.work_id for c in self.regressions}
        return len({c.work_id for c in self.changes if c.verdict == "improvement" and c.work_id not in worse})

    def markdown(self) -> str:
        missing, new = self.items("regression", "missing"), self.items("new")
        regressed = self.items("regression")
        lines = [f"{self.baseline} work items in the baseline, {self.current} in the current results: "
                 f"{self.matched} compared, {missing} missing, {new} new. {regressed} regressed "
                 f"({missing} missing, {regressed - missing} worse), {self.improved()} improved.", ""]
        if self.changes:
            lines += ["| verdict | model | method | measure | baseline | current | change |",
                      "| --- | --- | --- | --- | ---: | ---: | ---: |"]
            rank = {"regression": 0, "new": 1, "improvement": 2}
            order = sorted(self.changes, key=lambda c: (rank[c.verdict], c.model, c.method, c.measure))
            lines += [
                f"| {c.verdict} | {c.model} | `{c.method}` | {c.measure} | {c.baseline} | {c.current} | {c.change} |"
                for c in order
            ]
        return "\n".join(lines) + "\n"


def parse_tolerance(text: str | None) -> dict[str, float]:
    """'ratio=1%,metric=0.2%,sqnr=0.1' -> {'ratio': 1.0, 'metric': 0.2, 'sqnr': 0.1} (percent, dB)."""
    tol = dict(DEFAULT_TOLERANCE)
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in tol:
            raise ZoocodecError(f"tolerance {part!r}: expected KEY=VALUE with KEY one of {', '.join(tol)}")
        try:
            tol[key] = float(value.strip().removesuffix("%").removesuffix("dB"))
        except ValueError:
            raise ZoocodecError(f"tolerance {part!r}: {value!r} is not a number") from None
        if tol[key] < 0:
            raise ZoocodecError(f"tolerance {part!r} must not be negative")
    return tol


def compare(
    baseline: str | os.PathLike, current: str | os.PathLike, tolerance: dict[str, float] | None = None
) -> Comparison:
    tol = tolerance or DEFAULT_TOLERANCE
    base = {r["work_id"]: r for r in Results(baseline).runs().to_pylist()}
    cur = {r["work_id"]: r for r in Results(current).runs().to_pylist()}
    out = Comparison(baseline=len(base), current=len(cur), matched=len(base.keys() & cur.keys()))
    for wid in sorted(cur.keys() - base.keys()):
        c = cur[wid]
        out.changes.append(Change("new", wid, c["model"], c["method"], "added", "absent", c["status"], ""))
    for wid, b in sorted(base.items()):
        c = cur.get(wid)
        if c is None:
            out.changes.append(Change("regression", wid, b["model"], b["method"], "missing", b["status"], "absent", ""))
            continue
        if b["status"] != c["status"]:
            verdict = "regression" if b["status"] == "ok" else "improvement"
            out.changes.append(Change(verdict, wid, b["model"], b["method"], "status", b["status"], c["status"],
                                      (c["error"] or "")[:80]))
            continue
        if b["status"] != "ok":
            continue
        rel = 100 * (c["ratio"] / b["ratio"] - 1)
        if abs(rel) > tol["ratio"]:
            out.changes.append(Change("regression" if rel < 0 else "improvement", wid, b["model"], b["method"], "ratio",
                                      f"{b['ratio']:.4f}", f"{c['ratio']:.4f}", f"{rel:+.2f}%"))
        bs, cs = b["sqnr_db"], c["sqnr_db"]
        if (bs is None) != (cs is None) or (bs is not None and abs(cs - bs) > tol["sqnr"]):
            worse = cs is not None and (bs is None or cs < bs)
            out.changes.append(Change("regression" if worse else "improvement", wid, b["model"], b["method"], "SQNR dB",
                                      _db(bs), _db(cs), "" if bs is None or cs is None else f"{cs - bs:+.2f} dB"))
        cur_metrics = {(m["task"], m["metric"]): m for m in c["metrics"]}
        for m in b["metrics"]:
            n = cur_metrics.get((m["task"], m["metric"]))
            name = f"{m['task']} {m['metric']}"
            if n is None:
                out.changes.append(
                    Change("regression", wid, b["model"], b["method"], name, f"{m['value']:.5g}", "absent", "")
                )
                continue
            worse_by = _worse_by(m, n)
            if abs(worse_by) > tol["metric"]:
                kind = "regression" if worse_by > 0 else "improvement"
                out.changes.append(Change(kind, wid, b["model"], b["method"], name,
                                          f"{m['value']:.5g}", f"{n['value']:.5g}", f"{-worse_by:+.3f} pp"))
    return out


def _worse_by(base: dict, cur: dict) -> float:
    """How much more the metric dropped now, in percentage points of its uncompressed value."""
    return cur["drop_pct"] - base["drop_pct"]


def _db(x: float | None) -> str:
    return "lossless" if x is None else f"{x:.2f}"
