"""GPU benchmarks of issue 13, each with its peer in the same run (needs CuPy, torch CUDA and a GPU).

1. k-means: one fused Lloyd iteration (kernels/kmeans.cu) on 64M and 256M float32 weights,
   k = 4 and 16, per tensor and per output channel, as a fraction of HBM bandwidth: the
   datasheet peak and a device-to-device copy measured in the same run.
2. load into GPU memory: zoocodec.load(path, device="cuda") of a uniform:bits=8 .zc vs
   safetensors.torch.load_file(uncompressed, device="cuda"), both files read once before
   (same page cache), on an mpnet-shaped fp32 model and a 1B bf16 model; and the decode
   call alone (CUDA events) in GB/s of decoded weights. Last (after the compress cases),
   the same for the kernels added since: dq:bits=6,coder=ans (Trellis: rans_index, dq_maps,
   dq_values) on mpnet's 49 square matrices, uniform:bits=4,group=32,zero=true (Grouped) and
   automatic mode's file for a language model, the same with side=5,coder=ctx (group values from
   their codes, levels under ctx's group ends), on the mpnet-shaped model, each file written on
   the GPU.
3. compress a model held in host memory on the GPU vs the CPU path of the same machine,
   same bytes (sha256): uniform:bits=8 (the default spec), kmeans:k=16, dq:bits=6, on the
   mpnet-shaped model and the 1B bf16 model; dq:bits=6 and rdoq:bits=6 on fmnist-cnn (the
   real model, whole on both) and on two fp32 2048x4096 matrices; the GPU batched (pipeline/batch.py) and one
   tensor at a time. Where the CPU path would take minutes it runs on a slice (the first
   tensors, `slice_weights` in the row): the speedup is then per weight, and the bytes are
   compared on that slice (the GPU compresses the slice too, and one tensor at a time).

4. the rdoq/dq kernels alone (kernels/rdoq.cu): rdoq.decide and rdoq.dq_trellis on CuPy vs
   the same call on NumPy arrays (the native engine's codecs/native/rdoq.cpp since 2026-12-07), on
   fmnist-cnn-sized (141K), 1.2M and 8.4M weights in step units,
   under a fitted order-0 table and a 4-state cabac table; the levels compared element for
   element (the CPU runs on at most 1.2M weights; the speedup is per weight).

5. the ans coder's rANS encoder on the GPU (kernels/rans_encode.cu, `compress --device gpu`
   codes its symbols there) against the native CPU encoder (ans.encode, every core) on the
   same symbols: 8-bit uniform levels of Laplace weights (int8) and 12-bit ones (int16), 64M
   and 16M symbols at scale 1; seconds (the GPU's from symbols on the device to the frame's
   bytes on the host), symbols per second, and the bytes compared.

6. last, a cProfile of compress(device="gpu") of the 1B bf16 model at 8 bits: the main
   thread's top 25 functions by own time, toward the 1-s target; then the same of
   zoocodec.load(device="cuda") of that file (a second load), toward the safetensors target.

The models are generated (Laplace weights): mpnet's own weights are not on the GPU machine,
so "mpnet-shaped" has every matrix shape of all-mpnet-base-v2 (109M weights); "1B" is
llama-like bf16 (hidden 2048, 19 layers of q/k/v/o and 2048x8192 up/down, a 32000x2048
embedding: 1.02B weights).

    python bench/bench_gpu.py [--scale 1.0] [--out DIR]    (JSON to DIR/gpu-bench.json, written after each case)
    python bench/bench_gpu.py --dry-run                   (no GPU: every case on the CPU at a tiny scale,
                                                          to check the script)
    python bench/bench_gpu.py --only compress,load        (those cases alone: a rerun of what failed, when
                                                          device time is short)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from bench_common import gpu_time, machine

PEAK = {"H100": 3.35e12, "H200": 4.8e12}  # HBM bytes/s by the datasheets


def laplace(g, shape, scale: float = 0.02):
    import torch

    return torch.from_numpy(g.laplace(0, scale, shape).astype(np.float32))


def mpnet_shaped(scale: float = 1.0, seed: int = 0) -> dict:
    """Every weight matrix and vector of all-mpnet-base-v2 (fp32), Laplace values; `scale` < 1 keeps fewer layers."""
    g = np.random.default_rng(seed)
    m = {"embeddings.word_embeddings.weight": laplace(g, (max(64, int(30527 * min(scale, 1))), 768)),
         "embeddings.position_embeddings.weight": laplace(g, (514, 768))}
    for i in range(max(1, round(12 * min(scale, 1)))):
        p = f"encoder.layer.{i}."
        for name in ("attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o"):
            m[p + name + ".weight"] = laplace(g, (768, 768))
            m[p + name + ".bias"] = laplace(g, (768,), 0.01)
        m[p + "intermediate.dense.weight"] = laplace(g, (3072, 768))
        m[p + "intermediate.dense.bias"] = laplace(g, (3072,), 0.01)
        m[p + "output.dense.weight"] = laplace(g, (768, 3072))
        m[p + "output.dense.bias"] = laplace(g, (768,), 0.01)
        for ln in ("attention.LayerNorm", "output.LayerNorm"):
            m[p + ln + ".weight"] = 1 + laplace(g, (768,), 0.01)
            m[p + ln + ".bias"] = laplace(g, (768,), 0.01)
    m["pooler.dense.weight"] = laplace(g, (768, 768))
    return m


def billion(scale: float = 1.0, seed: int = 1) -> dict:
    """A llama-like bf16 model of 1.02B weights (scale multiplies the layer count)."""
    import torch

    g = np.random.default_rng(seed)
    h = 2048 if scale >= 0.05 else 256  # (a dry run's tiny model)
    m = {}
    for i in range(max(1, round(19 * scale))):
        for name in "qkvo":
            m[f"layers.{i}.{name}.weight"] = laplace(g, (h, h)).to(torch.bfloat16)
        m[f"layers.{i}.up.weight"] = laplace(g, (4 * h, h)).to(torch.bfloat16)
        m[f"layers.{i}.down.weight"] = laplace(g, (h, 4 * h)).to(torch.bfloat16)
    m["embed.weight"] = laplace(g, (max(64, int(32000 * min(scale, 1))), h)).to(
        torch.bfloat16
    )  # last: slices are layers
    return m


def fmnist_cnn() -> dict:
    """The zoo's fmnist-cnn (shipped in the repository: the real weights)."""
    from safetensors.torch import load_file

    from zoocodec.pipeline import zoo

    return load_file(zoo.resolve("fmnist-cnn"))


def weights(tensors: dict) -> int:
    return sum(t.numel() for t in tensors.values())


def first(tensors: dict, count: int) -> dict:
    """The first tensors holding at least `count` weights (at least one)."""
    out, n = {}, 0
    for k, v in tensors.items():
        out[k] = v
        n += v.numel()
        if n >= count:
            break
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sync(gpu: str) -> None:
    if gpu != "cpu":
        import cupy

        cupy.cuda.Device().synchronize()


def compress_case(tmp: Path, model: str, spec: str, tensors: dict, cpu_weights: int | None, gpu: str,
                  one_at_a_time: bool = True) -> dict:
    """The GPU, batched, on the whole model; on the CPU slice (the whole model, or its first
    tensors): the GPU again (its bytes), the GPU one tensor at a time, and the CPU."""
    from zoocodec.pipeline.core import compress

    def timed(name: str, part: dict, **kw) -> float:
        start = time.perf_counter()
        rep = compress(part, tmp / f"{name}.zc", spec, **kw)
        sync(kw.get("device", "cpu"))
        row[f"{name}_s"] = time.perf_counter() - start
        return rep

    total = weights(tensors)
    part = tensors if cpu_weights is None or cpu_weights >= total else first(tensors, cpu_weights)
    row = {"model": model, "spec": spec, "weights": total, "slice_weights": weights(part)}
    compress(first(tensors, 1), tmp / "warm.zc", spec, device=gpu)  # kernels compiled, pools warm
    sync(gpu)
    rep = timed("gpu_batched", tensors, device=gpu)
    row.update(gpu_device=rep.device, ratio=rep.ratio)
    if part is not tensors:
        timed("gpu_batched_slice", part, device=gpu)
    row["gpu_sha256"] = sha(tmp / ("gpu_batched.zc" if part is tensors else "gpu_batched_slice.zc"))
    if one_at_a_time:
        timed("gpu_one_at_a_time", part, device=gpu, batch=False)
    timed("cpu_one_at_a_time", part, device="cpu", batch=False)
    row["cpu_sha256"] = sha(tmp / "cpu_one_at_a_time.zc")
    row["same_bytes"] = row["gpu_sha256"] == row["cpu_sha256"]
    gpu_per_weight = row["gpu_batched_s"] / total
    row["speedup_gpu_vs_cpu_per_weight"] = row["cpu_one_at_a_time_s"] / row["slice_weights"] / gpu_per_weight
    row["target_20x_met"] = row["speedup_gpu_vs_cpu_per_weight"] >= 20
    if model == "1B bf16" and spec == "uniform:bits=8":  # issue 25: the whole model in at most 1.0 s
        row["target_1B_in_1s_met"] = row["gpu_batched_s"] <= 1.0
    if one_at_a_time:
        row["speedup_batched_vs_one_at_a_time_gpu_per_weight"] = \
            row["gpu_one_at_a_time_s"] / row["slice_weights"] / gpu_per_weight
    print(
        f"compress {model} {spec}: {total / 1e6:.0f}M weights, GPU batched {row['gpu_batched_s']:.2f} s; on "
        f"{row['slice_weights'] / 1e6:.1f}M: GPU one at a time {row.get('gpu_one_at_a_time_s', float('nan')):.2f} s, "
        f"CPU {row['cpu_one_at_a_time_s']:.2f} s: GPU {row['speedup_gpu_vs_cpu_per_weight']:.1f}x the CPU per weight, "
        f"same bytes {row['same_bytes']}",
        flush=True,
    )
    return row


def load_case(tmp: Path, model: str, tensors: dict, gpu: str, spec: str = "uniform:bits=8") -> dict:
    import torch
    from safetensors.torch import load_file, save_file

    import zoocodec
    from zoocodec.pipeline.core import compress

    raw, zc = tmp / "m.safetensors", tmp / "m.zc"
    save_file(tensors, raw)
    compress(raw, zc, spec, device=gpu)
    for p in (raw, zc):  # both in the page cache
        p.read_bytes()
    total = weights(tensors)
    itemsize = next(iter(tensors.values())).element_size()
    row = {"model": model, "spec": spec, "weights": total, "safetensors_bytes": raw.stat().st_size,
           "zc_bytes": zc.stat().st_size}
    target = "cuda" if gpu != "cpu" else "cpu"
    cases = (("zoocodec_load", lambda: zoocodec.load(zc, device=target)),
             ("safetensors_load", lambda: load_file(raw, device=target)))
    for _, fn in cases:  # kernel compiled, allocator warm
        fn()
    sync(gpu)
    for name, fn in cases:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            out = fn()
            if gpu != "cpu":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            del out
        row[f"{name}_s"] = min(times)
    row["load_speedup_vs_safetensors"] = row["safetensors_load_s"] / row["zoocodec_load_s"]
    if gpu != "cpu":
        row.update(decode_kernel(zc, total * itemsize))
    print(f"load {model} {spec} ({total / 1e6:.0f}M weights): zoocodec {row['zoocodec_load_s']:.3f} s, safetensors "
          f"{row['safetensors_load_s']:.3f} s ({row['load_speedup_vs_safetensors']:.2f}x); "
          f"decode {row.get('decoded_GB_per_s', float('nan')):.0f} GB/s", flush=True)
    return row


def decode_kernel(zc: Path, decoded_bytes: int) -> dict:
    """The decode call alone on prepared jobs (H2D of the compressed bytes + kernels + error check),
    one call per dtype and kind of job, as decode.tensors groups them."""
    import cupy

    from zoocodec.kernels import decode as G
    from zoocodec.pipeline.core import Archive

    with Archive(zc) as a:
        groups: dict = {}
        staged, found = G.jobs(a, a.names())
        for j in found:
            groups.setdefault((j.dtype, type(j)), []).append(j)

        def call():
            fresh = G.Staged(staged.host, staged.regions)  # (uploaded again)
            for (_, kind), jobs in groups.items():
                G.RUNS[kind](jobs, "bench", fresh)

        call()
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        reps = 5
        start.record()
        for _ in range(reps):
            call()
        stop.record()
        stop.synchronize()
        s = cupy.cuda.get_elapsed_time(start, stop) / 1e3 / reps
    return {"decode_call_s": s, "decoded_GB_per_s": decoded_bytes / s / 1e9}


def kmeans_case(name: str, scale: float) -> dict:
    """Seconds per fused Lloyd iteration and the bytes it must read (the weights, once)."""
    import cupy

    from zoocodec.kernels import kmeans as K

    src = cupy.random.default_rng(0).random(1 << 28, dtype=cupy.float32)
    copy_s = gpu_time(src.copy, reps=5)
    copy_bw = 2 * src.nbytes / copy_s  # read + write
    del src
    peak = next((v for k, v in PEAK.items() if k in name), None)
    rows = []
    n64 = max(1 << 16, int((1 << 26) * scale))
    for B, n, ks in ((1, n64, (4, 16)), (1, 4 * n64, (4, 16)), (4096, n64 // 4096, (4, 16))):
        x = cupy.asarray(np.random.default_rng(0).laplace(0, 0.05, B * n).astype(np.float32)).reshape(B, n)
        for k in ks:
            init, scales = K.kmeanspp_init(x, k, seed=0), K.fixed_point_scales(x)
            plan = K.CudaLloyd(x, init, scales)
            s = gpu_time(lambda plan=plan: [plan.step() for _ in range(10)]) / 10
            kernel = plan.launches[0][0] if len(plan.launches[0]) == 4 else "lloyd_pass"
            # the peer: lloyd_pass (per-lane sum and count apart, the search in shared memory), same centroids
            old = K.CudaLloyd(x, init, scales, pass16=False)
            s_old = gpu_time(lambda old=old: [old.step() for _ in range(10)]) / 10
            same = bool((plan.c == old.c).all())
            bw = x.nbytes / s
            rows.append({"weights": B * n, "problems": B, "k": k, "kernel": kernel, "s_per_iter": s, "bytes_per_s": bw,
                         "fraction_of_copy_bandwidth": bw / copy_bw,
                         "fraction_of_datasheet_peak": bw / peak if peak else None,
                         "target_70pct_met": bool(peak and bw / peak >= 0.7),  # issue 25, k <= 16
                         "lloyd_pass_s_per_iter": s_old, "speedup_vs_lloyd_pass": s_old / s,
                         "same_centroids_as_lloyd_pass": same})
            print(
                f"k-means {B}x{n} k={k} ({kernel}): {s * 1e3:.2f} ms/iter, {bw / 1e12:.2f} TB/s = "
                f"{bw / copy_bw:.0%} of the measured copy, {bw / peak if peak else float('nan'):.0%} of the datasheet; "
                f"lloyd_pass {s_old * 1e3:.2f} ms ({s_old / s:.2f}x), same centroids {same}",
                flush=True,
            )
        del x, plan
    return {
        "copy_bytes_per_s": copy_bw,
        "datasheet_peak_bytes_per_s": peak,
        "lloyd": rows,
        "timing": "CUDA events, median of 10 runs of 10 back-to-back iterations (one launch each) after 2 warm-ups; "
        "bytes = the float32 weights read once per iteration; copy = 1 GiB device-to-device, read + write",
    }


def rdoq_kernel_case(scale: float, gpu: str) -> list[dict]:
    """Seconds of one decide / dq_trellis pass, the kernel (CUDA events) against the CPU path (native) on
    the same inputs, levels compared."""
    from zoocodec.codecs.cabac import Cabac
    from zoocodec.codecs.context import Ctx
    from zoocodec.kernels import rdoq as R

    if gpu == "cpu":
        xp = np
    else:
        import cupy as xp
    rows_out = []
    g = np.random.default_rng(7)
    for rows, cols in ((384, 368), (1536, 768), (8192, 1024)):
        rows = max(16, int(rows * min(1.0, scale * 8)))
        x = g.laplace(0, 6.0, (rows, cols)) * g.uniform(0.5, 2, (rows, 1))  # weights / step: about 6 bits
        q = np.rint(x).astype(np.int64)
        for model, table in (("ctx", Ctx().model(q).rates(q)), ("cabac-4-state", Cabac().model(q, 1).rates(q))):
            cpu_rows = min(rows, max(16, (1 << 20) // cols))
            for name, fn, bits in (("decide", R.decide, table.stateless), ("dq_trellis", R.dq_trellis, table.bits)):
                if name == "decide" and model != "ctx":
                    continue
                args_gpu = (xp.asarray(x), xp.asarray(table.ctx), table.origin, xp.asarray(bits), 0.15, xp)
                gpu_s = gpu_time(lambda a=args_gpu, f=fn: f(*a), reps=3) if xp is not np else float("nan")
                got = fn(*args_gpu)
                start = time.perf_counter()
                want = fn(x[:cpu_rows], table.ctx[:cpu_rows], table.origin, bits, 0.15, np)
                cpu_s = time.perf_counter() - start
                got = got.get() if hasattr(got, "get") else got
                same = bool(np.array_equal(got[:cpu_rows], want))
                row = {"pass": name, "table": model, "weights": rows * cols, "cpu_weights": cpu_rows * cols,
                       "gpu_s": gpu_s, "cpu_s": cpu_s, "same_levels": same,
                       "speedup_gpu_vs_cpu_per_weight": cpu_s / (cpu_rows * cols) / (gpu_s / (rows * cols))}
                rows_out.append(row)
                print(f"rdoq kernel {name} ({model}) {rows}x{cols}: GPU {gpu_s * 1e3:.2f} ms, CPU {cpu_s:.2f} s on "
                      f"{cpu_rows * cols / 1e6:.2f}M: {row['speedup_gpu_vs_cpu_per_weight']:.0f}x per weight, "
                      f"same levels {same}", flush=True)
    return rows_out


def rans_encode_case(scale: float, gpu: str) -> list[dict]:
    """kernels/rans_encode.encode on device symbols vs ans.encode of the same symbols on the host."""
    from zoocodec.codecs import ans
    from zoocodec.kernels import rans_encode as R

    rows = []
    g = np.random.default_rng(5)
    for bits, dtype, n in ((8, np.int8, 1 << 26), (12, np.int16, 1 << 24)):
        n = max(1 << 17, int(n * scale))
        top = (1 << (bits - 1)) - 1
        w = g.laplace(0, 1.0, n)
        host = np.rint(w * (top / np.abs(w).max())).astype(dtype)
        del w
        if gpu == "cpu":  # (dry run: the transliteration on a slice)
            dev, encode, part = host, R.encode_emulated, host[: 1 << 17]
        else:
            import cupy

            dev, encode, part = cupy.asarray(host), R.encode, None
        encode(dev[: 1 << 20] if part is None else part)  # compiled, pools warm
        sync(gpu)
        start = time.perf_counter()
        got = encode(dev if part is None else part)
        gpu_s = time.perf_counter() - start
        start = time.perf_counter()
        want = ans.encode(host if part is None else part)
        cpu_s = time.perf_counter() - start
        count = n if part is None else part.size
        row = {"bits": bits, "symbols": count, "dtype": np.dtype(dtype).name, "gpu_s": gpu_s, "cpu_s": cpu_s,
               "coded_bytes": len(want), "same_bytes": got == want, "gpu_symbols_per_s": count / gpu_s,
               "speedup_gpu_vs_cpu": cpu_s / gpu_s}
        rows.append(row)
        print(f"rANS encode {bits}-bit {count / 1e6:.0f}M symbols: GPU {gpu_s * 1e3:.1f} ms "
              f"({count / gpu_s / 1e9:.2f} G symbols/s), CPU (ans.encode) {cpu_s * 1e3:.1f} ms: "
              f"{cpu_s / gpu_s:.1f}x, same bytes {got == want}", flush=True)
        del dev, host
    return rows


def _profiled(fn, gpu: str) -> tuple[float, list[dict]]:
    """(wall seconds of fn() under cProfile, device synchronised, the top 25 functions by own time)."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    fn()
    sync(gpu)
    prof.disable()
    wall = time.perf_counter() - start
    st = pstats.Stats(prof)
    rows = sorted(((f"{Path(f).name}:{line}:{name}", cc, tt, ct) for (f, line, name), (cc, _, tt, ct, _) in
                   st.stats.items()), key=lambda r: -r[2])[:25]
    return wall, [{"function": n, "calls": c, "own_s": t, "cumulative_s": cu} for n, c, t, cu in rows]


def _say_profile(what: str, wall: float, rows: list[dict]) -> None:
    print(f"profile {what}: {wall:.2f} s under cProfile; top own time: "
          + ", ".join(f"{r['function']} {r['own_s']:.2f} s" for r in rows[:6]), flush=True)


def profile_case(tmp: Path, model: str, spec: str, tensors: dict, gpu: str) -> dict:
    """Where `compress(device=gpu)` spends the main thread's time (cProfile, top 25 by own time)
    and the wall time of the same call: what to work on next toward the 1-s target."""
    from zoocodec.pipeline.core import compress

    compress(first(tensors, 1), tmp / "warm.zc", spec, device=gpu)
    sync(gpu)
    wall, rows = _profiled(lambda: compress(tensors, tmp / "profiled.zc", spec, device=gpu), gpu)
    _say_profile(f"{model} {spec}", wall, rows)
    return {"model": model, "spec": spec, "wall_s_profiled": wall, "top_own_time": rows}


def profile_load_case(tmp: Path, model: str, spec: str, tensors: dict, gpu: str) -> dict:
    """Where `zoocodec.load(device="cuda")` of the file profile_case wrote spends the main thread's
    time (a second load: kernels compiled, pools warm): what stands between it and safetensors' load."""
    import zoocodec
    from zoocodec.pipeline.core import compress

    zc = tmp / "profiled.zc"
    if not zc.exists():  # (profile_case failed)
        compress(tensors, zc, spec, device=gpu)
    target = "cuda" if gpu != "cpu" else "cpu"
    zoocodec.load(zc, device=target)
    sync(gpu)
    wall, rows = _profiled(lambda: zoocodec.load(zc, device=target), gpu)
    _say_profile(f"load {model} {spec}", wall, rows)
    return {"model": model, "spec": spec, "wall_s_profiled": wall, "top_own_time": rows}


CASES = ("kmeans", "rdoq_kernels", "rans_encode", "load", "compress", "profile", "profile_load")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the model and k-means sizes")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--dry-run", action="store_true", help="no GPU: every case on the CPU at scale 0.02")
    ap.add_argument("--only", type=lambda s: set(s.split(",")), default=set(CASES),
                    help=f"comma-separated cases to run, of {','.join(CASES)} (default: all)")
    args = ap.parse_args(argv)
    if args.only - set(CASES):
        ap.error(f"unknown case {', '.join(sorted(args.only - set(CASES)))}; the cases: {', '.join(CASES)}")
    scale = 0.02 if args.dry_run else args.scale
    gpu = "cpu" if args.dry_run else "gpu"
    from zoocodec.device import resolve

    result = {"machine": machine(("numpy", "torch", "cupy-cuda13x")), "device": resolve(gpu).label,
              "scale": scale, "dry_run": args.dry_run, "kmeans": None, "rdoq_kernels": None, "rans_encode": None,
              "load": [], "compress": [], "profile": None, "profile_load": None}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("gpu-bench-dry-run.json" if args.dry_run else "gpu-bench.json")

    def case(key: str, fn, *a) -> None:
        """Run one case; a failure is recorded and the others still run; the JSON is rewritten after each."""
        if key not in args.only:
            return
        try:
            row = fn(*a)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            row = {"case": [str(x) for x in a if isinstance(x, (str, int, float))], "error": f"{type(e).__name__}: {e}"}
        if isinstance(result[key], list):
            result[key].append(row)
        else:
            result[key] = row
        path.write_text(json.dumps(result, indent=2))

    if not args.dry_run:
        case("kmeans", kmeans_case, result["device"], scale)
    case("rdoq_kernels", rdoq_kernel_case, scale, gpu)
    case("rans_encode", rans_encode_case, scale, gpu)
    mp, big = mpnet_shaped(scale), billion(scale)
    square = {k: v for k, v in mp.items() if tuple(v.shape) == (768, 768)}  # 49 matrices: one dq trellis
    n_big = weights(big)
    # (model, spec, tensors on the GPU, weights on the CPU (None: all), GPU one at a time too):
    # CPU slices sized for ~10-30 s on a 16-core host (measured here: uniform 4.5M weights/s,
    # kmeans:k=16 1.5M/s, dq 0.05M/s on one core of a loaded 2-core machine)
    fmnist = fmnist_cnn()
    g = np.random.default_rng(2)
    pair = {f"m{i}.weight": laplace(g, (max(64, int(2048 * min(1, scale * 8))), 4096)) for i in range(2)}
    plan = [("fmnist-cnn", "dq:bits=6", fmnist, None, True),
            ("fmnist-cnn", "rdoq:bits=6", fmnist, None, False),
            ("two fp32 2048x4096", "dq:bits=6", pair, weights(pair) // 2, False),
            ("mpnet-shaped fp32", "uniform:bits=8", mp, None, True),
            ("mpnet-shaped fp32", "kmeans:k=16", mp, weights(mp) // 8, True),
            ("mpnet-shaped fp32", "dq:bits=6", square, 2 * 768 * 768, True),
            ("1B bf16", "uniform:bits=8", big, n_big // 32, False),
            ("1B bf16", "kmeans:k=16", first(big, n_big // 4), n_big // 64, False)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        case("load", load_case, tmp, "mpnet-shaped fp32", mp, gpu)
        case("load", load_case, tmp, "1B bf16", big, gpu)
        for model, spec, tensors, cpu_weights, one in plan:
            case("compress", compress_case, tmp, model, spec, tensors, cpu_weights, gpu, one)
        case("load", load_case, tmp, "mpnet's 49 768x768 fp32", square, gpu, "dq:bits=6,coder=ans")
        case("load", load_case, tmp, "mpnet-shaped fp32", mp, gpu, "uniform:bits=4,group=32,zero=true")
        # (automatic mode's file for a language model: side values from codes, levels under ctx's group ends)
        case("load", load_case, tmp, "mpnet-shaped fp32", mp, gpu, "uniform:bits=4,group=32,zero=true,side=5,coder=ctx")
        case("profile", profile_case, tmp, "1B bf16", "uniform:bits=8", big, gpu)
        case("profile_load", profile_load_case, tmp, "1B bf16", "uniform:bits=8", big, gpu)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
