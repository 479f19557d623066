"""Whole-model decoding on the CPU, with the peers in the same run on the same weights:

- `zoocodec.load(path, device="cpu")` of minilm at 8 bits (uniform, the default spec)
  against `safetensors.torch.load_file` of the uncompressed model (both from the page
  cache; load_file maps the file and reads nothing, so it is also timed with a copy of every
  tensor into memory of its own, which is what a decoder hands back), and against each
  method's own per-tensor decode (the path before the fused native decoder: float64
  dequantization, one tensor at a time);
- lossless minilm (fp32 and bf16): `zoocodec.load` against zipnn's decompress of every
  tensor with the same threads; the default float coder (exponents by Huffman) and
  `float(planes=rans)` (rows named "... (planes=rans)").
Each with 1 and 2 threads (ZOOCODEC_THREADS; zipnn's `threads`), the calls of both
interleaved; every decode checked against the original (bit-exact for lossless). Wall
seconds and the process's CPU seconds (all its threads) are both recorded: on a shared,
loaded machine the wall time is mostly waiting for a core, and the CPU seconds say what each
decoder costs. `first_loads`: each file's first load in a fresh process (the safetensors
file's load + copy beside it), the case a CLI call or a server's start meets. `breakdown_ms`:
where a load's time goes, phase by phase, at 1 and 2 threads: the native pool's part
(parallel) against the Python around it (serial), and the 2-thread speed-up Amdahl's law
allows with that serial part.

    python bench/bench_decode.py [--model minilm] [--repeats 3] [--baseline DIR] [--tag TAG]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import zoocodec
from bench_common import from_tree, machine, save
from zoocodec.pipeline import modelio, zoo

CPU = {}  # fastest CPU seconds of the row lossless_row() writes, by label


def per_tensor_decode(path: Path) -> dict[str, np.ndarray]:
    """Each tensor by its method's own decode (no fused native pass): the reference path."""
    with zoocodec.Archive(path) as a:
        return {n: a.decode(n, lambda spec, side, segs, shape, dtype: spec.decode(side, segs, shape, dtype))
                for n in a.names()}


def zipnn_round(tensors: dict[str, torch.Tensor], dtype: str, threads: int, keep: Path | None = None):
    """(zipnn's compressed bytes, a function decompressing every tensor), its round trip checked;
    `keep`: its compressed tensors also written there (a length before each), for first_loads()."""
    import zipnn  # the peer

    z = zipnn.ZipNN(bytearray_dtype=dtype, threads=threads)
    blobs = {n: t.contiguous().view(torch.uint8).numpy().tobytes() for n, t in tensors.items()}
    packed = {n: z.compress(bytearray(b)) for n, b in blobs.items()}  # (it overwrites its input: a copy each)
    back = {n: z.decompress(c) for n, c in packed.items()}
    assert all(bytes(back[n]) == blobs[n] for n in blobs), "zipnn round trip failed"
    if keep:
        keep.write_bytes(b"".join(len(c).to_bytes(8, "little") + bytes(c) for c in packed.values()))
    return sum(map(len, packed.values())), lambda: {n: z.decompress(c) for n, c in packed.items()}


FIRST = """import sys, time, torch, zoocodec, zoocodec.pipeline.core  # (what a first load would import: not timed)
from safetensors.torch import load_file
t = time.perf_counter()
if sys.argv[1].endswith(".zipnn"):  # zipnn's tensors, each after its length; DTYPE and threads in the name
    import zipnn
    raw, blobs, at = open(sys.argv[1], "rb").read(), [], 0
    while at < len(raw):
        n = int.from_bytes(raw[at:at + 8], "little")
        blobs.append(raw[at + 8:at + 8 + n])
        at += 8 + n
    dtype, threads = sys.argv[1].rsplit("/", 1)[1].split(".")[0].split("-")
    z = zipnn.ZipNN(bytearray_dtype=dtype, threads=int(threads))
    t = time.perf_counter()
    out = [z.decompress(b) for b in blobs]
elif sys.argv[1].endswith(".safetensors"):
    out = {k: v.clone() for k, v in load_file(sys.argv[1]).items()}
else:
    out = zoocodec.load(sys.argv[1], device="cpu")
print(time.perf_counter() - t)"""


def first_loads(files: dict[str, Path], repeats: int, baseline: Path | None) -> list[dict]:
    """Each file's first load in a fresh process, 1 and 2 threads, in a seeded random order: what a CLI
    call or a server's start gets (imports done first and not timed; zoocodec's take about 0.15 s).
    The loads timed in-process above reuse memory the previous load freed; a fresh process faults
    in new pages (on a VM that hands free memory back to its host, transparent huge pages cost
    about 6 ms each there: docs/cpu-speed.md). A load right after another process freed its memory
    meets pages the host still backs, several times faster, so the runs take a new seeded order
    each round. `baseline`: the .zc files loaded by that source tree too (rows labelled `baseline`)."""
    times, order = {}, random.Random(0)
    runs = [(label, path, tag, tree) for label, path in files.items()
            for tag, tree in [("", None)] + ([(" (baseline)", baseline)] if baseline and path.suffix == ".zc" else [])]
    for rep in range(repeats + 1):  # (the first round untimed: it writes the .pyc files)
        for threads in (1, 2):
            env = {**os.environ, "ZOOCODEC_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
            env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled once, as an installed package is
            for label, path, tag, tree in order.sample(runs, len(runs)):  # (a new order each round)
                path = Path(str(path).format(threads=threads))
                out = subprocess.run([sys.executable, "-c", from_tree(tree) + FIRST, str(path)], env=env,
                                     capture_output=True, text=True, check=True)
                if rep:
                    times.setdefault((label + tag, threads), []).append(float(out.stdout.split()[-1]))
    return [{"what": f"first load in a fresh process: {label}", "threads": threads,
             "median_s": statistics.median(ts), "runs_s": ts} for (label, threads), ts in times.items()]


def interleaved(repeats: int, fns: dict) -> tuple[dict, dict]:
    """({label: fastest wall s}, {label: fastest CPU s}) of each function, called in turn each
    repeat (A/B/A/B: a loaded machine's moods reach every one alike)."""
    wall, cpu = dict.fromkeys(fns, float("inf")), dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for label, fn in fns.items():
            out = None
            t, c = time.perf_counter(), time.process_time()
            out = fn()
            t, c = time.perf_counter() - t, time.process_time() - c
            wall[label], cpu[label] = min(wall[label], t), min(cpu[label], c)
            del out
    return wall, cpu


def lossless_row(what: str, threads: int, size: int, path: Path, zbytes: int, zsecs: float, ours: float) -> dict:
    """A lossless load's row: zoocodec's time (`ours`, CPU["ours"]) against zipnn's (`zsecs`, CPU["zipnn"])."""
    return {"what": what, "threads": threads, "bytes_decoded": size, "file_bytes": path.stat().st_size,
            "zipnn_bytes": zbytes, "zoocodec_s": ours, "zipnn_decompress_s": zsecs,
            "decode_speed_ours_over_zipnn": zsecs / ours, "cpu_s": {"zoocodec": CPU["ours"], "zipnn": CPU["zipnn"]},
            "decode_cpu_zipnn_over_ours": CPU["zipnn"] / CPU["ours"], "zoocodec_MBps": size / 1e6 / ours,
            "zipnn_MBps": size / 1e6 / zsecs}


def threaded(threads: int, fn):
    """fn called with `threads` threads (ZOOCODEC_THREADS, torch's, the peer's own are its own)."""
    def call():
        os.environ["ZOOCODEC_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        return fn()
    return call


def phases(path: Path, threads: int, repeats: int) -> dict:
    """Where a load's time goes (the fastest of `repeats` loads), by wrapping the functions that
    carry it (nothing of this stays in the package): wall ms and the main thread's CPU ms of each
    phase. The decoding pass (plan.Stream's native Pass) starts at its first `submit` and runs
    beside the Python that builds the next jobs; `wait` is the main thread helping it. So a load is
    `prefix` (serial: open, header, budget, outputs, the first job), `overlap` (the main thread's
    Python while the pass runs), `wait` and `suffix` (serial: results, views released, close)."""
    from zoocodec import container, plan
    from zoocodec.codecs import native
    from zoocodec.pipeline import core

    spent: dict[str, list[float]] = {}
    marks: dict[str, tuple[float, float]] = {}
    clock = (time.perf_counter, time.thread_time)
    real_pass = native.engine().Pass

    class Pass:  # the native pass, its first submit and its wait marked
        def __init__(self, *a):
            self.real = real_pass(*a)

        def submit(self, *a):
            marks.setdefault("submit", tuple(c() for c in clock))
            return self.real.submit(*a)

        def wait(self):
            marks.setdefault("wait", tuple(c() for c in clock))
            try:
                return self.real.wait()
            finally:
                marks.setdefault("waited", tuple(c() for c in clock))

    wrapped = [(container.Container, "_read_header", "header (inflate, parse, validate)"),
               (core.ArchiveBase, "__init__", "open (header included)"),
               (core.ArchiveBase, "check_budget", "memory budget"),
               (core.ArchiveBase, "verify_unread", "padding and attached files"),
               (plan, "outputs", "output block"),
               (plan, "fused_job", "jobs from the header"),
               (plan.Stream, "add", "jobs handed to the pass"),
               (plan.Stream, "finish", "Stream.finish (wait included)"),
               (container.Container, "release", "mapping released"),
               (core, "to_torch", "to torch"),
               (container.Container, "close", "close")]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in wrapped]

    def timer(fn, label):
        def timed(*a, **k):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                got = spent.setdefault(label, [0.0, 0.0])
                got[0] += time.perf_counter() - t
                got[1] += time.thread_time() - c
        return timed

    best = None
    try:
        for owner, name, label in wrapped:
            setattr(owner, name, timer(getattr(owner, name), label))
        native.engine().Pass = Pass
        for _ in range(repeats):
            spent.clear()
            marks.clear()
            start = tuple(c() for c in clock)
            p = time.process_time()
            got = threaded(threads, lambda: zoocodec.load(path, device="cpu"))()
            end, p = tuple(c() for c in clock), time.process_time() - p
            del got  # (freeing the tensors is the caller's time, as in interleaved())
            if best is None or end[0] - start[0] < best["wall_ms"] / 1e3:
                span = {k: [(b[i] - a[i]) * 1e3 for i in (0, 1)] for k, (a, b) in {
                    "prefix": (start, marks["submit"]), "overlap": (marks["submit"], marks["wait"]),
                    "wait": (marks["wait"], marks["waited"]), "suffix": (marks["waited"], end)}.items()}
                best = {"threads": threads, "wall_ms": (end[0] - start[0]) * 1e3, "cpu_ms": p * 1e3,
                        "main_thread_cpu_ms": (end[1] - start[1]) * 1e3,
                        "phases": {k: {"wall_ms": w * 1e3, "main_cpu_ms": c * 1e3} for k, (w, c) in spent.items()},
                        **{f"{k}_wall_ms": v[0] for k, v in span.items()},
                        **{f"{k}_main_cpu_ms": v[1] for k, v in span.items()}}
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
        native.engine().Pass = real_pass
    return best


def amdahl(one: dict, two: dict) -> dict:
    """The 2-thread speed-up, and what it would be with the serial part of a 2-thread load (its
    prefix and suffix: the main thread's CPU before the pass starts and after it ends) as
    measured and the rest of the 1-thread load halved. (At 1 thread the suffix also holds work
    that 2 threads do beside the pass: the zstd planes of large fp32 tensors.)"""
    serial = two["prefix_main_cpu_ms"] + two["suffix_main_cpu_ms"]
    return {"speedup": one["wall_ms"] / two["wall_ms"],
            "serial_ms_1_thread": one["prefix_main_cpu_ms"] + one["suffix_main_cpu_ms"], "serial_ms_2_threads": serial,
            "bound_if_the_rest_halved": one["wall_ms"] / (serial + (one["wall_ms"] - serial) / 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another source tree of zoocodec (its native engine built): first loads by it too")
    ap.add_argument("--tag", default="", help="suffix of the results file name (decode-DATE-TAG.json)")
    args = ap.parse_args()
    start = machine(("numpy", "torch", "zipnn", "safetensors"))  # (its load average: before the run)
    torch.set_num_threads(1)
    src = modelio.open_model(zoo.resolve(args.model))
    model = {n: src.torch(n) for n in src.names}
    floats = {n: t for n, t in model.items() if t.dtype == torch.float32}
    nbytes = sum(t.nbytes for t in model.values())
    rows, breakdown = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_file(model, tmp / "m.safetensors")
        zoocodec.compress(model, tmp / "m8.zc", "uniform:bits=8")
        zoocodec.compress(floats, tmp / "fp32.zc", "lossless", min_size=1 << 62)
        bf16 = {n: t.to(torch.bfloat16) for n, t in floats.items()}
        zoocodec.compress(bf16, tmp / "bf16.zc", "lossless", min_size=1 << 62)
        rans = "lossless:coder=float(planes=rans)"  # (min_size 0: every tensor takes it)
        zoocodec.compress(floats, tmp / "fp32-rans.zc", rans, min_size=0)
        zoocodec.compress(bf16, tmp / "bf16-rans.zc", rans, min_size=0)
        # 1 and 2 threads interleaved, call by call: a shared machine's moods reach both alike
        fns = {}
        for threads in (1, 2):
            fns |= {("safetensors", threads): threaded(threads, lambda: load_file(tmp / "m.safetensors")),
                    ("safetensors_and_copy", threads): threaded(threads, lambda: {
                        k: v.clone() for k, v in load_file(tmp / "m.safetensors").items()}),
                    ("ours", threads): threaded(threads, lambda: zoocodec.load(tmp / "m8.zc", device="cpu")),
                    ("before", threads): threaded(threads, lambda: per_tensor_decode(tmp / "m8.zc"))}
        wall, cpu = interleaved(args.repeats, fns)
        got, old = zoocodec.load(tmp / "m8.zc", device="cpu"), per_tensor_decode(tmp / "m8.zc")
        assert all(np.array_equal(got[n].view(torch.uint8).numpy(), old[n].view(np.uint8)) for n in old)
        for threads in (1, 2):
            st, st_read, ours, before = (wall[k, threads] for k in ("safetensors", "safetensors_and_copy", "ours",
                                                                     "before"))
            rows.append({"what": "8-bit load", "threads": threads, "bytes_decoded": nbytes,
                         "file_bytes": (tmp / "m8.zc").stat().st_size, "safetensors_s": st,
                         "safetensors_and_copy_s": st_read, "zoocodec_s": ours, "per_tensor_decode_s": before,
                         "zoocodec_over_safetensors_time": ours / st,
                         "zoocodec_over_safetensors_and_copy_time": ours / st_read,
                         "cpu_s": {"zoocodec": cpu["ours", threads], "safetensors_and_copy": cpu[
                             "safetensors_and_copy", threads], "per_tensor_decode": cpu["before", threads]},
                         "zoocodec_over_safetensors_and_copy_cpu": cpu["ours", threads] / cpu[
                             "safetensors_and_copy", threads],
                         "speedup_over_per_tensor_decode": before / ours,
                         "zoocodec_MBps": nbytes / 1e6 / ours, "safetensors_and_copy_MBps": nbytes / 1e6 / st_read})
        for dtype, tensors, name in (("float32", floats, "fp32"), ("bfloat16", bf16, "bf16")):
            size = sum(t.nbytes for t in tensors.values())
            paths = {"": tmp / f"{name}.zc", " (planes=rans)": tmp / f"{name}-rans.zc"}
            fns, zbytes = {}, None
            for threads in (1, 2):
                zbytes, zipnn_decode = zipnn_round(tensors, dtype, threads, tmp / f"{dtype}-{threads}.zipnn")
                fns[("zipnn", threads)] = zipnn_decode
                fns |= {(label, threads): threaded(threads, partial(zoocodec.load, p)) for label, p in paths.items()}
            wall, cpu = interleaved(args.repeats, fns)
            for label, path in paths.items():
                got = zoocodec.load(path, device="cpu")
                assert all(torch.equal(got[n], tensors[n]) for n in tensors)
                for threads in (1, 2):
                    CPU["ours"], CPU["zipnn"] = cpu[label, threads], cpu["zipnn", threads]
                    rows.append(lossless_row(f"lossless {dtype} load{label}", threads, size, path, zbytes,
                                             wall["zipnn", threads], wall[label, threads]))
        print(rows[-4:], file=sys.stderr)
        first = first_loads({"8-bit .zc": tmp / "m8.zc", "lossless fp32 .zc": tmp / "fp32.zc",
                             "lossless bf16 .zc": tmp / "bf16.zc", "safetensors + a copy": tmp / "m.safetensors",
                             "zipnn fp32": tmp / "float32-{threads}.zipnn",
                             "zipnn bf16": tmp / "bfloat16-{threads}.zipnn"},
                            max(args.repeats, 3), args.baseline)
        # where the time goes, 1 and 2 threads in turn (Amdahl: the serial part against the pool's)
        for what, file in (("8-bit load", "m8.zc"), ("lossless float32 load", "fp32.zc"),
                           ("lossless bfloat16 load", "bf16.zc")):
            runs = {1: [], 2: []}
            for _ in range(3):
                for threads in (1, 2):
                    runs[threads].append(phases(tmp / file, threads, args.repeats))
            one, two = (min(runs[t], key=lambda r: r["wall_ms"]) for t in (1, 2))
            breakdown[what] = {"1": one, "2": two, "amdahl": amdahl(one, two)}

    scaling = {r["what"]: r["zoocodec_s"] / next(s["zoocodec_s"] for s in rows if s["what"] == r["what"]
                                                  and s["threads"] == 2) for r in rows if r["threads"] == 1}
    result = {"machine": start, "model": args.model,
              "repeats": args.repeats, "rows": rows, "speedup_2_over_1_threads": scaling, "first_loads": first,
              "breakdown_ms": breakdown, "load_average_at_end": os.getloadavg()}
    for r in rows:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
    print("2 threads over 1:", {k: round(v, 2) for k, v in scaling.items()})
    for r in first:
        print(f"{r['what']}, {r['threads']} thread(s): median {r['median_s'] * 1e3:.1f} ms")
    for what, b in breakdown.items():
        print(what, {t: {k: round(b[t][f"{k}_wall_ms"], 2) for k in ("prefix", "overlap", "wait", "suffix")}
                     for t in ("1", "2")}, {k: round(v, 2) for k, v in b["amdahl"].items()})
    print(f"saved {save('decode', result, args.tag)}")


if __name__ == "__main__":
    main()
