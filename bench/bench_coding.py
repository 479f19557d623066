"""Coding alone: zoocodec's `cabac` coder vs NNCodec 2.1.3 (DeepCABAC) on NNCodec's own levels.

    python bench/bench_coding.py [--models mnist-cnn fmnist-cnn effnet-lite0 minilm] [--qp -38 ... -20]

For every zoo model and qp, NNCodec (in its own venv: bench/peers/setup_nncodec.sh;
NNCODEC_PYTHON) encodes all float tensors with its defaults (8-state dependent
quantization, 1-D tensors at qp -75) and the runner saves the integer levels its entropy
coder received. cabac codes exactly those levels (NNCodec's 8-state machine drives its
contexts), decodes them and checks they are identical, so both reconstruct the same
weights: equal weight SQNR by construction, and the bits/weight ratio is the coders'
alone. NNCodec's bytes are its whole bitstream (its per-tensor headers, a few bytes each,
included); cabac's are its streams.

Speed (minilm): cabac encode and decode of every tensor's levels with 1 and 2 threads
(fastest of --repeat), beside NNCodec's encode (which includes its quantization) and
decode times from the same run. Also what cutting tensors into 2^16-weight substreams
costs against one stream per tensor.

--reuse DIR takes NNCodec's levels, sizes and decoded weights from an earlier run of the
same runner (`nncodec_runner.py IN DIR/MODEL --qp ... --levels`, stdout in DIR/MODEL.jsonl,
input in DIR/MODEL.safetensors) instead of rerunning it; the speed row still runs
NNCodec afresh, beside cabac.

Writes bench/results/coding-DATE.json and prints a Markdown table (bench/results/coding.md).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import RESULTS, machine, save
from zoocodec.codecs import cabac

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "bench" / "peers" / "nncodec_runner.py"
MODELS = ["mnist-cnn", "fmnist-cnn", "effnet-lite0", "minilm"]
QPS = [-38, -35, -32, -29, -26, -23, -20]
NEXT8 = ((0, 2), (7, 5), (1, 3), (6, 4), (2, 0), (5, 7), (3, 1), (4, 6))  # NNCodec's Trellis8States
NNR8 = 2
SPEED_QP = -32  # NNCodec's default


def nncodec_python() -> Path:
    env = os.environ.get("NNCODEC_PYTHON")
    path = Path(env) if env else ROOT / ".venv-nncodec" / "bin" / "python"
    if not path.exists():
        raise SystemExit(
            f"NNCodec's Python not found at {path}: run bench/peers/setup_nncodec.sh or set NNCODEC_PYTHON"
        )
    return path


def halve(v: np.ndarray) -> np.ndarray:
    """NNCodec's quantization indices -> the levels its coder codes (state-dependent halving)."""
    flat = v.ravel().tolist()
    out, s = [0] * len(flat), 0
    for i, x in enumerate(flat):
        if x:
            odd = s & 1
            x = (x + (odd if x > 0 else -odd)) >> 1
        out[i] = x
        s = NEXT8[s][x & 1]
    return np.array(out, dtype=np.int32).reshape(v.shape)


def unhalve(k: np.ndarray) -> np.ndarray:
    flat = k.ravel().tolist()
    out, s = [0] * len(flat), 0
    for i, x in enumerate(flat):
        out[i] = 2 * x - (s & 1) * (1 if x > 0 else -1 if x < 0 else 0)
        s = NEXT8[s][x & 1]
    return np.array(out, dtype=np.int64).reshape(k.shape)


def matrix(k: np.ndarray) -> np.ndarray:
    """NNCodec's scan: axis 0 x the rest, row-major (one row for 1-D)."""
    return k.reshape(k.shape[0], -1) if k.ndim >= 2 else k.reshape(1, -1)


def run_nncodec(model: str, qps: list[int], work: Path) -> list[dict]:
    from safetensors.numpy import save_file

    from zoocodec.pipeline.core import load

    src = work / f"{model}.safetensors"
    if not src.exists():
        save_file({t.name: np.ascontiguousarray(t.array, dtype=np.float32) for t in load(model).tensors()
               if np.issubdtype(t.array.dtype, np.floating)}, str(src))
    cmd = [str(nncodec_python()), str(RUNNER), str(src), str(work / model), "--qp", *map(str, qps), "--levels"]
    if len(qps) == 1:  # the speed run: NNCodec's best of three, as for cabac
        cmd += ["--repeat", "3"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"NNCodec runner failed: {done.stderr.strip()[-2000:]}")
    return [json.loads(line) for line in done.stdout.splitlines()]


def sqnr_db(src: Path, decoded: Path) -> float:
    from safetensors.numpy import load_file

    a, b = load_file(str(src)), load_file(str(decoded))
    num = sum(float((a[n].astype(np.float64) ** 2).sum()) for n in a)
    den = sum(float(((a[n].astype(np.float64) - b[n].reshape(a[n].shape)) ** 2).sum()) for n in a)
    return 10 * np.log10(num / den)


def timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def code_levels(levels: dict[str, np.ndarray], substream: int, threads: int) -> list[bytes]:
    return [cabac.encode_levels(matrix(k), NNR8, substream, threads) for k in levels.values()]


def measure(model: str, row: dict, work: Path, speed: bool, repeat: int) -> dict:
    z = np.load(work / model / f"qp{row['qp']}-levels.npz")
    names = [n for n in z.files if ":" not in n]
    if any(int(z[n + ":dq"]) != 1 for n in names):
        raise RuntimeError(f"{model}: NNCodec coded a tensor without dependent quantization")
    levels = {n: halve(z[n]) for n in names}
    weights = sum(k.size for k in levels.values())
    streams = code_levels(levels, 1 << 16, 0)
    for (n, k), s in zip(levels.items(), streams, strict=True):  # identical levels back, identical reconstruction
        back = cabac.decode_levels(s, k.size).reshape(k.shape)
        if not (np.array_equal(back, k) and np.array_equal(unhalve(back), z[n])):
            raise RuntimeError(f"{model} {n}: cabac did not return NNCodec's levels")
    ours = sum(len(s) for s in streams)
    out = {"qp": row["qp"], "weights": weights, "nncodec_bytes": row["bytes"], "cabac_bytes": ours,
           "nncodec_bpw": 8 * row["bytes"] / weights, "cabac_bpw": 8 * ours / weights, "ratio": ours / row["bytes"],
           "sqnr_db": sqnr_db(work / f"{model}.safetensors", Path(row["path"])),
           "nncodec_encode_s": row["encode_s"], "nncodec_decode_s": row["decode_s"]}
    if speed:
        whole = sum(len(s) for s in code_levels(levels, 1 << 40, 0))
        out["one_stream_per_tensor_bytes"] = whole
        out["substream_cost"] = ours / whole - 1
        for threads in (1, 2):
            enc_s, coded = timed(lambda: code_levels(levels, 1 << 16, threads), repeat)
            dec_s, _ = timed(
                lambda: [cabac.decode_levels(s, k.size, threads) for s, k in zip(coded, levels.values(), strict=True)],
                repeat,
            )
            out[f"cabac_encode_s_{threads}t"], out[f"cabac_decode_s_{threads}t"] = enc_s, dec_s
        out["encode_speedup_2t"] = row["encode_s"] / out["cabac_encode_s_2t"]
        out["decode_speedup_2t"] = row["decode_s"] / out["cabac_decode_s_2t"]
        out["decode_threads_gain"] = out["cabac_decode_s_1t"] / out["cabac_decode_s_2t"]
    return out


def table(results: dict) -> str:
    lines = ["| model | qp | weight SQNR dB | NNCodec bits/weight | cabac bits/weight | cabac / NNCodec |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for model, rows in results["models"].items():
        for r in rows:
            lines.append(
                f"| {model} | {r['qp']} | {r['sqnr_db']:.1f} | {r['nncodec_bpw']:.3f} | {r['cabac_bpw']:.3f} | "
                f"{r['ratio']:.4f} |"
            )
    speed = [(m, r) for m, rows in results["models"].items() for r in rows if "cabac_decode_s_1t" in r]
    if speed:
        lines += ["", "| model | qp | NNCodec encode s | cabac encode s (1 / 2 threads) | NNCodec decode s | "
                  "cabac decode s (1 / 2 threads) | encode x | decode x | 2 threads / 1 | substream cut cost |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for m, r in speed:
            lines.append(
                f"| {m} | {r['qp']} | {r['nncodec_encode_s']:.2f} | {r['cabac_encode_s_1t']:.3f} / "
                f"{r['cabac_encode_s_2t']:.3f} | {r['nncodec_decode_s']:.2f} | {r['cabac_decode_s_1t']:.3f} / "
                f"{r['cabac_decode_s_2t']:.3f} | {r['encode_speedup_2t']:.1f} | {r['decode_speedup_2t']:.1f} | "
                f"{r['decode_threads_gain']:.2f} | {100 * r['substream_cost']:+.2f}% |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--qp", type=int, nargs="+", default=QPS)
    p.add_argument("--speed-model", default="minilm")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--work", type=Path, help="keep NNCodec's outputs here (default: a temporary folder)")
    p.add_argument("--reuse", type=Path, help="NNCodec's outputs of an earlier run of its runner (see above)")
    a = p.parse_args()
    results = {"machine": machine(), "qps": a.qp, "models": {}}
    if a.reuse:
        results["nncodec_reused_from"] = str(a.reuse)
    with tempfile.TemporaryDirectory() as tmp:
        work = a.reuse or a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for model in a.models:
            if a.reuse:
                rows = [json.loads(line) for line in (work / f"{model}.jsonl").read_text().splitlines()]
                rows = [r for r in rows if r["qp"] in a.qp]
            else:
                rows = run_nncodec(model, a.qp, work)
            if model == a.speed_model:  # NNCodec's times from this run, beside cabac's
                fresh = run_nncodec(model, [SPEED_QP], work)[0]
                rows = [{**r, "encode_s": fresh["encode_s"], "decode_s": fresh["decode_s"], "timed_now": True}
                        if r["qp"] == SPEED_QP else r for r in rows]
            results["models"][model] = [measure(model, r, work, model == a.speed_model and r["qp"] == SPEED_QP,
                                                a.repeat) for r in rows]
            print(table({"models": {model: results["models"][model]}}), flush=True)
    results["load_average_at_end"] = os.getloadavg()
    ratios = [r["ratio"] for rows in results["models"].values() for r in rows]
    results["summary"] = {"worst_ratio": max(ratios), "best_ratio": min(ratios), "target": 0.95}
    path = save("coding", results)
    (RESULTS / "coding.md").write_text(table(results))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
