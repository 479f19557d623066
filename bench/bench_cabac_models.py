"""Would a better probability model make cabac pay? Candidate models' code lengths on a file's own levels.

Every level stream of a .zc coded with ans, ctx or cabac is decoded from the file and priced under each
coder as written today (what automatic mode chooses from), and under candidate models of cabac's bins
(bench_cabac_models.cpp, built here with g++ -O2; it includes the coder, so the plan and the estimator
are the shipped ones): per-context estimator rates chosen by the encoder and signalled (A), and logistic
mixing of several context models per bin with an APM stage (B, integer arithmetic). A candidate's size is
cabac's bytes + (its ideal bits - the shipped model's ideal bits) / 8; the shipped model's ideal bits are
checked against the coder's own cost_bits. The saving that counts is automatic mode's: per stream, the
cheapest of ans, ctx and the candidate against the cheapest today. Decode cost: CPU seconds of each
model's loop over the bins (one thread), against the shipped decoder's (engine cabac_decode, one thread).
    python bench/bench_cabac_models.py A.zc [B.zc ...] [--tag 2026-12-05l]   # bench/results/cabac_models-<tag>.json
"""
from __future__ import annotations

import argparse
import ctypes
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import RESULTS, coded_tensors, machine

HERE = Path(__file__).resolve().parent
CODERS = ("ans", "ctx", "cabac")
PAIRS = ("A: rate pair per context", "A: one rate pair per tensor", "A: rate pair per kind of bin")
MIXES = ("B: fast+slow mixed", "B: fast+slow mixed + APM", "B: + neighbour context", "B: + neighbourhood context",
         "B: 4 inputs + APM", "B: 4 inputs + APM, weights per context, lr 2^-14", "B: 4 inputs + APM, lr 2^-16",
         "B: 4 inputs + APM, faster extra contexts")  # lr 2^-15 and weights per kind of bin unless said
RATES = [f"{f}/{s}" for f in range(4, 8) for s in range(8, 12)] + [f"{r}" for r in range(7, 13)]
CANDIDATES = PAIRS + MIXES


def build() -> ctypes.CDLL:
    native = HERE.parent / "zoocodec" / "codecs" / "native"
    with tempfile.TemporaryDirectory() as tmp:  # loaded, the library outlives its file
        so = Path(tmp) / "cabac_models.so"
        subprocess.run(["g++", "-O2", "-std=c++17", "-shared", "-fPIC", f"-I{native}", "-o", str(so),
                        str(HERE / "bench_cabac_models.cpp"), str(native / "pool.cpp"), "-lpthread"], check=True)
        lib = ctypes.CDLL(str(so))
    lib.zc_cabac_models.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int, ctypes.c_uint64,
                                    ctypes.c_void_p]
    return lib


def streams(path: Path):
    """(tensor, stream, walk matrix, trellis kind, method, bytes per coder) of every ans/ctx/cabac level stream."""
    from zoocodec.codecs import parse_coder
    from zoocodec.codecs.cabac import DQ4, NONE, walk
    from zoocodec.pipeline.core import Archive

    coders = {c: parse_coder(c) for c in CODERS}
    for name, e, spec, coder, data in coded_tensors(Archive(path), CODERS):
        for s in data:
            if spec.coder_for(s) != coder or s not in e.side.get("symbols", {}):  # side streams (steps) as written
                continue
            shape = tuple(e.side["symbols"][s])
            tr = spec.trellis(s, shape)
            sym = coder.decode(data[s], shape, spec.symbol_dtype(s, e.dtype) or np.int64, tr)
            sizes = {c: len(spec.code_stream(s, sym, o)[0]) for c, o in coders.items()}
            method = re.sub(r"\(([^()]{60})[^()]*\)", r"(\1...)", str(spec))  # per-group steps: their start
            yield name, s, walk(sym, tr), NONE if tr is None else DQ4, method, coder.name, sizes


def entropy(keys: np.ndarray, levels: np.ndarray) -> float:
    """Static conditional entropy of `levels` given integer `keys`, in bits (counted; model cost not counted)."""
    a = (levels - levels.min()).astype(np.int64)
    joint = np.unique(keys.astype(np.int64) * (int(a.max()) + 1) + a, return_counts=True)[1]
    marginal = np.unique(keys, return_counts=True)[1]
    return float((marginal * np.log2(marginal)).sum() - (joint * np.log2(joint)).sum())


def oracle(m: np.ndarray, trellis: int) -> dict:
    """Bounds in bits: the levels' static entropy given cabac's contexts (bucket, quantizer state), then with
    the left and upper neighbours' magnitudes (capped at 2) added, then with the (row class, column class) pair
    in place of the bucket. Counted on the levels themselves: optimistic, more so the more contexts."""
    from zoocodec.codecs.cabac import buckets, states

    mm = m.astype(np.int64)
    st = states(mm) if trellis else np.zeros_like(mm)
    key = buckets(mm) * 4 + st
    left, up = np.zeros_like(mm), np.zeros_like(mm)
    left[:, 1:] = np.minimum(np.abs(mm[:, :-1]), 2)
    up[1:, :] = np.minimum(np.abs(mm[:-1, :]), 2)
    a = np.abs(mm).astype(np.float64)
    rc = np.clip(np.rint(2 * np.log2(a.mean(axis=1) + 0.5)), -2, 62).astype(np.int64) + 2
    cc = np.clip(np.rint(2 * np.log2(a.mean(axis=0) + 0.5)), -2, 62).astype(np.int64) + 2
    flat = mm.ravel()
    return {"contexts": entropy(key.ravel(), flat), "+ neighbours": entropy((key * 9 + left * 3 + up).ravel(), flat),
            "row x column class": entropy(((rc[:, None] * 70 + cc[None, :]) * 4 + st).ravel(), flat)}


def kind(name: str) -> str:
    return re.sub(r"\.\d+\.", ".*.", name)


def cpu() -> float:
    return time.process_time()


def main() -> None:
    from zoocodec.codecs.cabac import decode_levels, encode_levels

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--tag", default="2026-12-05l")
    ap.add_argument("--substream", type=int, default=1 << 16)
    args = ap.parse_args()
    lib = build()
    rows = []
    for path in args.files:
        for name, s, m, tr, method, written, sizes in streams(path):
            out = np.zeros(26 + len(RATES), dtype=np.float64)
            if lib.zc_cabac_models(m.ctypes.data, m.shape[0], m.shape[1], tr, args.substream, out.ctypes.data):
                raise SystemExit(f"{name}: the harness failed")
            data = encode_levels(m, tr, args.substream)
            assert len(data) == sizes["cabac"]
            t0 = cpu()
            back = decode_levels(data, m.size, threads=1)
            dec = cpu() - t0
            assert np.array_equal(back, m.ravel())
            base = out[1]
            bound = oracle(m, tr)
            cand = {c: sizes["cabac"] + (out[2 + k] - base) / 8 for k, c in enumerate(CANDIDATES)}
            row = {"file": path.name, "tensor": name, "stream": s, "kind": kind(name), "shape": list(m.shape),
                   "trellis": tr, "method": method, "written": written, "bytes": sizes,
                   "oracle_bits": bound, "cost_bits": out[0], "base_bits": base, "static_bits": out[25],
                   "rate_bits": dict(zip(RATES, out[26:].tolist(), strict=True)),
                   "bins": out[23], "bypass_bits": out[24],
                   "candidate_bytes": cand, "decode_s": dec, "model_s": {"base": out[13], "replay": out[22],
                                                                          **{c: out[14 + k] for k, c in
                                                                             enumerate(MIXES)}}}
            rows.append(row)
            best = min(cand.values())
            print(f"{path.name} {name:50s} {m.size:>9,} {written:5s} ans {sizes['ans']:>9,} ctx {sizes['ctx']:>9,} "
                  f"cabac {sizes['cabac']:>9,} best candidate {best:>11,.0f} ({best / sizes['cabac']:.4f}) "
                  f"cost_bits/base {out[0] / max(base + out[24], 1):.6f}", flush=True)
    summary = summarise(rows)
    result = {"machine": machine(("numpy",)), "files": [str(f) for f in args.files], "substream": args.substream,
              "what": __doc__.split("\n\n")[1].strip(), "summary": summary, "streams": rows}
    path = RESULTS / f"cabac_models-{args.tag}.json"
    path.write_text(json.dumps(rounded(result)))
    print(json.dumps(summary, indent=1))
    print(f"wrote {path}")


BIG = 4096


def rounded(x):
    """Floats to 7 significant digits, for a results file of a sensible size."""
    if isinstance(x, float):
        return float(f"{x:.7g}")
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v) for v in x]
    return x


def ceiling(rows: list[dict], bits) -> float:
    """Automatic mode's saving if each stream's cheapest coder were joined by one of `bits(row)` bits."""
    today = sum(8 * min(r["bytes"].values()) for r in rows)
    return 1 - sum(min(8 * min(r["bytes"].values()), bits(r)) for r in rows) / today


def summarise(rows: list[dict]) -> dict:
    """Per file and candidate: cabac-only ratio, and automatic mode's saving (cheapest coder per stream)."""
    out = {}
    for f in sorted({r["file"] for r in rows}):
        rs = [r for r in rows if r["file"] == f]
        today = sum(min(r["bytes"].values()) for r in rs)
        cabac = sum(r["bytes"]["cabac"] for r in rs)
        share = {c: sum(min(r["bytes"].values()) for r in rs if min(r["bytes"], key=r["bytes"].get) == c) / today
                 for c in CODERS}
        per = {}
        for c in CANDIDATES:
            new = sum(min(r["bytes"]["ans"], r["bytes"]["ctx"], r["candidate_bytes"][c]) for r in rs)
            per[c] = {"vs cabac": sum(r["candidate_bytes"][c] for r in rs) / cabac,
                      "automatic mode saving": 1 - new / today}
        dec = sum(r["decode_s"] for r in rs)
        static = {"base / static entropy of its contexts": sum(r["base_bits"] for r in rs)
                  / sum(r["static_bits"] for r in rs)}
        static["cabac / (static + bypass + side)"] = cabac / sum(
            r["bytes"]["cabac"] - (r["base_bits"] - r["static_bits"]) / 8 for r in rs)
        best = sum(8 * min(r["bytes"].values()) for r in rs)
        lev = sum(r["oracle_bits"]["contexts"] for r in rs)
        bounds = {"today's cheapest / levels' static entropy given cabac's contexts": best / lev,
                  **{f"{c} / that entropy": sum(8 * r["bytes"][c] for r in rs) / lev for c in CODERS},
                  "cabac's bins, static, + bypass bits / that entropy":
                  sum(r["static_bits"] + r["bypass_bits"] for r in rs) / lev,
                  **{f"entropy with {k} / that entropy": sum(r["oracle_bits"][k] for r in rs) / lev
                     for k in ("+ neighbours", "row x column class")},
                  "automatic mode saving if every stream were coded at that entropy (model and side info free)":
                  ceiling(rs, lambda r: r["oracle_bits"]["contexts"])}
        big = [r for r in rs if np.prod(r["shape"]) >= BIG]
        if big:  # counted entropy is far out of reach on small tensors: their bounds say little
            bounds[f"streams of >= {BIG} weights"] = {
                "share of today's bytes": sum(min(r["bytes"].values()) for r in big) / today,
                "today's cheapest / that entropy": sum(8 * min(r["bytes"].values()) for r in big)
                / sum(r["oracle_bits"]["contexts"] for r in big),
                "saving if coded at that entropy": ceiling(big, lambda r: r["oracle_bits"]["contexts"]),
                "saving if cabac lost nothing to its binarisation":
                ceiling(big, lambda r: 8 * r["bytes"]["cabac"] - r["static_bits"] - r["bypass_bits"]
                        + r["oracle_bits"]["contexts"])}
        rates = {v: sum(r["rate_bits"][v] for r in rs) / sum(r["base_bits"] for r in rs) for v in RATES}
        base = sum(r["model_s"]["base"] for r in rs)
        speed = {c: dec / (dec + sum(r["model_s"][c] for r in rs) - base) for c in MIXES}
        kinds = {}
        for k in sorted({r["kind"] for r in rs}):
            kr = [r for r in rs if r["kind"] == k]
            kc = sum(r["bytes"]["cabac"] for r in kr)
            kinds[k] = {"weights": sum(int(np.prod(r["shape"])) for r in kr),
                        "today": {c: sum(r["bytes"][c] for r in kr) / kc for c in CODERS},
                        **{c: sum(r["candidate_bytes"][c] for r in kr) / kc for c in CANDIDATES}}
        out[f] = {"level bytes today (cheapest per stream)": today, "share by coder": share,
                  "cabac bytes": cabac, "candidates": per, "static": static, "bounds": bounds,
                  "one rate pair everywhere (bits / shipped)": rates,
                  "decode speed vs today (estimate)": speed,
                  "cost_bits / (replayed base + bypass bits)": sum(r["cost_bits"] for r in rs)
                  / sum(r["base_bits"] + r["bypass_bits"] for r in rs),
                  "ns per bin": {c: 1e9 * sum(r["model_s"][c] for r in rs) / sum(r["bins"] for r in rs)
                                 for c in ("base", "replay", *MIXES)},
                  "decode ns per bin today": 1e9 * dec / sum(r["bins"] for r in rs),
                  "per kind (bytes / cabac)": kinds}
    return out


if __name__ == "__main__":
    main()
