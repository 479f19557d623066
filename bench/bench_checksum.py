"""Chunk checksums of container format 4 (XXH3-64, the vendored xxHash) against format 3's CRC32,
and a whole minilm load before and after the change, peers in the same run:

- throughput of one thread over 1 MiB chunks (the format's chunk), from cache (the same chunk
  again and again) and from memory (a buffer far larger than the caches, chunk by chunk): the
  engine's XXH3-64 (native/checksum.cpp), the hand-written CRC32 that format 3's decode pass used
  (native/crc32.cpp of --before-commit, built here into a small library and called through
  ctypes), zlib-ng's CRC32 (what the writer and now the readers of version-3 files use), the
  system zlib's CRC32, and PyPI xxhash's XXH3-64 (the same library, built by its wheel). The
  methods take turns chunk by chunk, repeat by repeat; GB/s by this thread's CPU time and by wall.
- with --before DIR (a checkout of --before-commit with its engine built): `zoocodec.load` of
  minilm at 8 bits and lossless bf16, each file written by its own checkout's writer (format 3
  before, 4 after), and `Container.verify` of it, in two worker processes that take turns call
  by call (1 and 2 threads); also today's reader on the format-3 file (its CRC32 chunks checked
  by zlib-ng on Python threads before the native pass). CPU ms of the worker (all its threads)
  and wall ms.

    python bench/bench_checksum.py [--before DIR] [--repeats 7] [--tag TAG]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from bench_common import machine, save

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def old_crc32(commit: str, work: Path):
    """The CRC32 of native/crc32.cpp at `commit` (deleted since), as a ctypes function (crc, data, n)."""
    src = work / "crc32"
    src.mkdir()
    for name in ("crc32.cpp", "crc32.h"):
        text = subprocess.run(["git", "show", f"{commit}:zoocodec/codecs/native/{name}"], cwd=ROOT, check=True,
                              capture_output=True).stdout
        (src / name).write_bytes(text)
    (src / "c_api.cpp").write_text('#include "crc32.h"\nextern "C" uint32_t old_crc32(uint32_t c, const uint8_t* p, '
                                   'std::size_t n) { return zc::crc32(c, p, n); }\n')
    lib = src / "libcrc32.so"
    subprocess.run([os.environ.get("CXX", "g++"), "-std=c++17", "-O3", "-shared", "-fPIC", str(src / "crc32.cpp"),
                    str(src / "c_api.cpp"), "-o", str(lib)], check=True)
    fn = ctypes.CDLL(str(lib)).old_crc32
    fn.argtypes, fn.restype = (ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t), ctypes.c_uint32
    return lambda chunk: fn(0, chunk.ctypes.data, chunk.nbytes)


def throughput(methods: dict, repeats: int, memory_mib: int) -> dict:
    """GB/s of each method over 1 MiB chunks, from cache and from memory, methods taking turns."""
    g = np.random.default_rng(0)
    big = g.integers(0, 256, memory_mib * MiB, dtype=np.uint8)
    chunks = [big[at : at + MiB] for at in range(0, big.size, MiB)]
    hot = chunks[0]
    out = {}
    for where, feed in (("cache", [hot] * 256), ("memory", chunks)):
        spent = {name: [np.inf, np.inf] for name in methods}
        for _ in range(repeats):
            for name, fn in methods.items():
                order = feed if where == "cache" else feed[::-1] if _ % 2 else feed  # (memory: no reuse)
                t, c = time.perf_counter(), time.thread_time()
                for chunk in order:
                    fn(chunk)
                wall, cpu = time.perf_counter() - t, time.thread_time() - c
                spent[name] = [min(spent[name][0], wall), min(spent[name][1], cpu)]
        n = len(feed) * MiB
        out[where] = {name: {"GBps_cpu": n / 1e9 / cpu, "GBps_wall": n / 1e9 / wall, "bytes": n}
                      for name, (wall, cpu) in spent.items()}
    return out


# ---- before/after loads: one worker process per checkout ---------------------------------------
def worker() -> None:
    """Serve JSON requests on stdin: compress, load, verify; answer wall and CPU seconds."""
    import torch

    import zoocodec
    from zoocodec.container import Container
    from zoocodec.pipeline import modelio, zoo

    torch.set_num_threads(1)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "compress":
            src = modelio.open_model(zoo.resolve("minilm"))
            model = {n: src.torch(n) for n in src.names}
            if req["spec"] == "lossless":
                model = {n: t.to(torch.bfloat16) for n, t in model.items() if t.dtype == torch.float32}
            extra = {"min_size": 1 << 62} if req["spec"] == "lossless" else {}  # (as bench_decode.py writes them)
            zoocodec.compress(model, req["path"], req["spec"], **extra)
            answer = {"version": Container.open(req["path"]).version, "bytes": Path(req["path"]).stat().st_size}
        else:
            os.environ["ZOOCODEC_THREADS"] = str(req["threads"])
            t, c = time.perf_counter(), time.process_time()
            if req["op"] == "load":
                got = zoocodec.load(req["path"], device="cpu")
            else:
                with Container.open(req["path"]) as f:
                    got = f.verify()
            answer = {"wall": time.perf_counter() - t, "cpu": time.process_time() - c}
            del got
        print(json.dumps(answer), flush=True)


class Worker:
    def __init__(self, tree: Path):
        env = {**os.environ, "PYTHONPATH": f"/tmp/fr/site:{tree}:{ROOT / 'bench'}"}
        self.p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"], cwd=tree, env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **req) -> dict:
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker died on {req}")
        return json.loads(line)

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait()


def loads(before: Path, repeats: int, work: Path) -> dict:
    """Interleaved minilm loads and verifies: the before checkout's reader on its own (format 3)
    files, today's on its own (format 4) files and on the before checkout's."""
    trees = {"before": Worker(before), "after": Worker(ROOT)}
    try:
        files = {}
        for who, w in trees.items():
            for spec in ("uniform:bits=8", "lossless"):
                path = work / f"{who}-{spec.split(':')[0]}.zc"
                files[who, spec] = {"path": str(path), **w.ask(op="compress", spec=spec, path=str(path))}
        cases = {(f"{who} reader, {label} file", spec, threads, op): (trees[who], files[owner, spec]["path"])
                 for who, owner, label in (("before", "before", "own (v3)"), ("after", "after", "own (v4)"),
                                           ("after", "before", "v3"))
                 for spec in ("uniform:bits=8", "lossless") for threads in (1, 2) for op in ("load", "verify")}
        best = {k: [np.inf, np.inf] for k in cases}
        for _ in range(repeats):
            for key, (w, path) in cases.items():
                got = w.ask(op=key[3], path=path, threads=key[2])
                best[key] = [min(best[key][0], got["wall"]), min(best[key][1], got["cpu"])]
        rows = [{"case": who, "spec": spec, "threads": threads, "op": op, "wall_ms": 1e3 * wall, "cpu_ms": 1e3 * cpu}
                for (who, spec, threads, op), (wall, cpu) in best.items()]
        return {"files": {f"{who} {spec}": v for (who, spec), v in files.items()}, "rows": rows}
    finally:
        for w in trees.values():
            w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, help="a checkout of --before-commit, its engine built")
    ap.add_argument("--before-commit", default="d715602")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--memory-mib", type=int, default=512)
    ap.add_argument("--tag", default="")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker()
        return
    import xxhash
    from zlib_ng import zlib_ng

    from zoocodec.codecs import native

    start = machine(("numpy", "xxhash", "zlib-ng"))
    eng = native.engine()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        methods = {"xxh3 native (xxHash 0.8.4, run-time dispatch)": eng.xxh3,
                   f"crc32 native hand-written ({args.before_commit} crc32.cpp)": old_crc32(args.before_commit, tmp),
                   "crc32 zlib-ng 1.1.0": zlib_ng.crc32,
                   f"crc32 system zlib {zlib.ZLIB_RUNTIME_VERSION}": zlib.crc32,
                   "xxh3 PyPI xxhash 4.1.0": xxhash.xxh3_64_intdigest}
        chunk = np.random.default_rng(1).integers(0, 256, MiB, dtype=np.uint8)
        assert methods["crc32 zlib-ng 1.1.0"](chunk) == zlib.crc32(chunk) == list(methods.values())[1](chunk)
        assert eng.xxh3(chunk) == xxhash.xxh3_64_intdigest(chunk)
        result = {"machine": start, "chunk_bytes": MiB, "repeats": args.repeats,
                  "throughput_one_thread": throughput(methods, args.repeats, args.memory_mib)}
        for where, rows in result["throughput_one_thread"].items():
            for name, r in rows.items():
                print(f"{where:6s} {name:55s} {r['GBps_cpu']:7.1f} GB/s CPU  {r['GBps_wall']:7.1f} GB/s wall")
        if args.before:
            result["minilm"] = loads(args.before, args.repeats, tmp)
            for r in result["minilm"]["rows"]:
                print(f"{r['case']:32s} {r['spec']:15s} {r['op']:6s} {r['threads']} thread(s): "
                      f"{r['cpu_ms']:7.2f} CPU ms  {r['wall_ms']:7.2f} wall ms")
    result["load_average_at_end"] = os.getloadavg()
    print(f"saved {save('checksum', result, args.tag)}")


if __name__ == "__main__":
    main()
