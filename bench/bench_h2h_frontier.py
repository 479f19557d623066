"""The equal-quality comparison of bench/bench_head_to_head.py: each tool's rate-distortion
front, its bits/weight at a target interpolated along it, and zoocodec's best tool against
NNCodec at the metric-loss budgets and at NNCodec's own output fidelities. Rows are
bench_h2h_run.Row (or anything with the same fields)."""
from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bench_h2h_run import Row

LOSS_POINTS = (0.1, 0.5, 1.0)  # metric loss, % of the baseline


def front(rows: list[Row], key) -> list[tuple[float, float]]:
    """The (distortion, bits/weight) Pareto front, distortion ascending."""
    pts = sorted((key(r), r.bits_per_weight) for r in rows if key(r) is not None and math.isfinite(key(r)))
    out: list[tuple[float, float]] = []
    for d, b in pts:
        if not out or b < out[-1][1]:
            out.append((d, b))
    return out


def bits_at(rows: list[Row], key, target: float) -> tuple[float | None, str]:
    """Bits/weight a tool needs for distortion <= target, interpolated along its front.

    Returns (bits, how): 'measured' at a point, 'interpolated' between two, 'upper bound'
    when the target lies beyond the tool's cheapest point (it needs at most that), or
    (None, 'not reached') when no setting was that good.
    """
    f = front(rows, key)
    if not f or target < f[0][0]:
        return None, "not reached"
    exact = [b for d, b in f if d == target]
    if exact:
        return exact[-1], "measured"
    for (d0, b0), (d1, b1) in itertools.pairwise(f):
        if d0 <= target <= d1:
            return (b0 + (b1 - b0) * (target - d0) / (d1 - d0) if d1 > d0 else b1), "interpolated"
    return f[-1][1], "upper bound"


def fidelity_key(row: Row) -> float | None:
    """Output distortion: KL vs the original's logits, or 1 - mean embedding cosine."""
    return row.quality.get("distortion")


def loss_key(row: Row) -> float | None:
    """The metric loss at the pessimistic end of its 95% interval, in %."""
    return row.quality.get("loss_high_pct")


def unresolvable(rows: list[Row], target: float) -> str | None:
    """'not resolvable with N inputs' when no row is within `target` by its pessimistic bound
    but one is by its point value, with an interval wider than the target."""
    if any((loss_key(r) or math.inf) <= target for r in rows):
        return None
    for r in rows:
        q = r.quality
        if (
            q.get("loss_pct") is not None
            and q["loss_pct"] <= target
            and q["loss_high_pct"] - q["loss_low_pct"] > target
        ):
            return f"not resolvable with {q['inputs']:,} inputs"
    return None


def tool_speeds(rows: list[Row]) -> dict[str, float | None]:
    """Median encode and decode MB/s over a tool's settings."""
    def median(attr):
        v = [r.mbps(getattr(r, attr)) for r in rows if getattr(r, attr)]
        return float(np.median(v)) if v else None
    return {"encode_mbps": median("encode_s"), "decode_mbps": median("decode_s")}


def best_zoocodec(by_tool: dict[str, list[Row]], key, target: float) -> dict:
    """The zoocodec tool needing the fewest bits/weight at `target`, each interpolated along its own curve."""
    best = {"bpw": None, "how": "not reached", "tool": None}
    for tool, rows in by_tool.items():
        bits, how = bits_at(rows, key, target)
        if bits is not None and (best["bpw"] is None or bits < best["bpw"]):
            best = {"bpw": bits, "how": how, "tool": tool}
    return best


def compare(rows: list[Row]) -> dict:
    """zoocodec vs NNCodec at equal metric loss and at NNCodec's own output fidelities.

    Each tool's bits/weight at a target is interpolated along its own RD front; zoocodec's
    value is its best tool there, and the speed ratio is that tool's (median over its
    settings) vs NNCodec's. Also every tool's bits/weight at every target (per_tool).
    """
    lossy = [r for r in rows if not r.lossless]
    by_tool: dict[str, list[Row]] = {}
    for r in lossy:
        by_tool.setdefault(r.tool, []).append(r)
    ours = {t: rs for t, rs in by_tool.items() if t.startswith("zoocodec")}
    nnc = by_tool.get("NNCodec", [])
    targets = [(f"loss {t}%", loss_key, t) for t in LOSS_POINTS] + [
        (f"fid {r.setting}", fidelity_key, fidelity_key(r)) for r in nnc]
    out: dict = {"columns": [label for label, _, _ in targets], "per_tool": {}, "points": []}
    for tool, rs in by_tool.items():
        out["per_tool"][tool] = {"bpw": [bits_at(rs, key, t)[0] for _, key, t in targets], **tool_speeds(rs)}
    if not nnc:
        return out
    nnc_speed = tool_speeds(nnc)
    for label, key, target in targets:
        b_nnc, how_nnc = bits_at(nnc, key, target)
        zc = best_zoocodec(ours, key, target)
        point = {"target": label, "value": target, "nncodec_bpw": b_nnc, "nncodec_how": how_nnc,
                 "zoocodec_bpw": zc["bpw"], "zoocodec_how": zc["how"], "zoocodec_tool": zc["tool"],
                 "size_ratio": b_nnc / zc["bpw"] if zc["bpw"] and b_nnc else None,
                 "note": unresolvable(lossy, target) if key is loss_key else None}
        if zc["tool"]:
            speed = out["per_tool"][zc["tool"]]
            for attr in ("encode_mbps", "decode_mbps"):
                point[f"{attr[:6]}_speedup"] = speed[attr] / nnc_speed[attr] if speed[attr] else None
        out["points"].append(point)
    return out


def lossless_summary(rows: list[Row]) -> list[dict]:
    out = []
    for label in ("fp32", "bf16"):
        by = {r.tool: r for r in rows if r.lossless and r.setting == label}
        zc = by.get("zoocodec lossless")
        if not zc:
            continue
        entry = {"dtype": label, "zoocodec_ratio": zc.ratio}
        for peer in ("zstd-19", "lzma-9", "zipnn"):
            if peer in by:
                entry[f"size_vs_{peer}"] = by[peer].bytes / zc.bytes
                entry[f"decode_speed_vs_{peer}"] = zc.mbps(zc.decode_s) / by[peer].mbps(by[peer].decode_s)
        out.append(entry)
    return out
