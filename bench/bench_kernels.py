"""Clustering kernels: seconds per Lloyd iteration against scikit-learn and faiss, GPU bandwidth, RD points.

    python bench/bench_kernels.py [--quick]   CPU: k-means on 1M and 16M weights (k = 4, 16, 256) and
                                        ternary LNQ on 100k 8x8 blocks; zoocodec vs scikit-learn
                                        KMeans and faiss-cpu in the same run (ratios)
    python bench/bench_kernels.py --gpu       GPU: seconds per Lloyd iteration and achieved bandwidth
                                        (fraction of the device's peak) on 16M..256M weights
    python bench/bench_kernels.py --rd        bits/weight vs SQNR of kmeans, lnq, pq (and uniform for
                                        reference) on minilm and mnist-cnn, through zoocodec.compress

Every peer gets the same data, the same initial centroids and the same thread count (2).
The CPU data are real weights: the 2-D tensors of minilm, concatenated (synthetic Laplace
values only where minilm is not installed, e.g. on the GPU machine). Results go to
bench/results/kernels[_gpu|_rd]-DATE.json with the machine named.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import gpu_time, machine as _machine, save
from zoocodec.kernels import kmeans as K, lnq as L

THREADS = 2
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))  # read by faiss and scikit-learn, imported later
RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    return {**_machine(("numpy", "torch", "scikit-learn", "faiss-cpu", "cupy-cuda13x")), "threads_used": THREADS}


def weights(n: int) -> tuple[np.ndarray, str]:
    """n real weights (minilm's 2-D tensors, concatenated), or Laplace values where minilm is missing."""
    try:
        from zoocodec.pipeline.core import load

        parts, have = [], 0
        for t in load("minilm").tensors():
            if t.is_float and t.array.ndim == 2:
                parts.append(t.float64().astype(np.float32).ravel())
                have += parts[-1].size
                if have >= n:
                    break
        if have >= n:
            return np.concatenate(parts)[:n], "minilm 2-D weights"
    except Exception:  # not installed here
        pass
    return np.random.default_rng(0).laplace(0, 0.05, n).astype(np.float32), "Laplace(0, 0.05), seed 0"


def zoocodec_iteration(x: np.ndarray, c: np.ndarray, iters: int, sorted_path: bool) -> tuple[float, float]:
    """(setup seconds, seconds per Lloyd iteration), fixed count, no early stop.

    sorted_path: what K.lloyd runs up to SORT_LIMIT values (sort once, then O(k log n) per
    iteration); otherwise the streaming pass over every weight (the GPU kernel's algorithm).
    """
    scales = K.fixed_point_scales(x)
    start = time.perf_counter()
    sums_of = K.SortedSums(x, scales) if sorted_path else (lambda c: K.cluster_sums(x, c, scales))
    setup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(iters):
        c = K.update(c, *sums_of(c), scales)
    return setup, (time.perf_counter() - start) / iters


def sklearn_iteration(x: np.ndarray, c: np.ndarray, iters: int) -> float:
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(THREADS):
        km = KMeans(c.size, init=c.reshape(-1, 1), n_init=1, max_iter=iters, tol=0, algorithm="lloyd")
        start = time.perf_counter()
        km.fit(x.reshape(-1, 1))
        return (time.perf_counter() - start) / km.n_iter_


def faiss_iteration(x: np.ndarray, c: np.ndarray, iters: int) -> float:
    import faiss

    faiss.omp_set_num_threads(THREADS)
    km = faiss.Kmeans(1, c.size, niter=iters, nredo=1, verbose=False, seed=0,
                      max_points_per_centroid=1 << 30, min_points_per_centroid=1)
    start = time.perf_counter()
    km.train(x.reshape(-1, 1), init_centroids=c.reshape(-1, 1).astype(np.float32))
    return (time.perf_counter() - start) / iters


def cpu_kmeans(quick: bool) -> list[dict]:
    rows = []
    sizes = [1 << 20] if quick else [1 << 20, 1 << 24]
    data, source = weights(max(sizes))
    for n in sizes:
        x = np.ascontiguousarray(data[:n]).reshape(1, -1)
        for k in (4, 16, 256):
            c0 = K.kmeanspp_init(x, k, seed=0)
            ours_iters = 5 if n <= 1 << 20 else 3
            peer_iters = 3 if n <= 1 << 20 else 2
            setup, sorted_iter = zoocodec_iteration(x, c0, 20, sorted_path=True)
            _, stream_iter = zoocodec_iteration(x, c0, ours_iters, sorted_path=False)
            row = {"weights": n, "k": k, "data": source,
                   "zoocodec_sorted_setup_s": setup, "zoocodec_sorted_s_per_iter": sorted_iter,
                   "zoocodec_streaming_s_per_iter": stream_iter,
                   "sklearn_s_per_iter": sklearn_iteration(x, c0[0], peer_iters),
                   "faiss_s_per_iter": faiss_iteration(x, c0[0], peer_iters)}
            ours20 = setup + 20 * sorted_iter  # what K.lloyd spends on 20 iterations
            for peer in ("sklearn", "faiss"):
                row[f"streaming_speedup_vs_{peer}"] = row[f"{peer}_s_per_iter"] / stream_iter
                row[f"20_iters_speedup_vs_{peer}"] = 20 * row[f"{peer}_s_per_iter"] / ours20
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def lnq_blocks(count: int) -> tuple[np.ndarray, str]:
    """count 8x8 blocks of uniformly quantized (6-bit, per row) real weights, as (count, 64) levels."""
    from zoocodec.kernels import uniform as U

    data, source = weights(-(-count // 64) * 8 * 512)
    w = data.reshape(-1, 512).astype(np.float64)  # 8 rows of 512 hold 64 blocks
    steps = U.absmax_steps(w, 6, per_channel=True, xp=np)
    q = U.quantize(w, steps, np)
    blocks = q.reshape(-1, 8, 64, 8).transpose(0, 2, 1, 3).reshape(-1, 64)
    return blocks[:count].astype(np.float32), source + ", 6-bit per-row uniform levels"


def cpu_lnq(quick: bool) -> dict:
    count = 10_000 if quick else 100_000
    blocks, source = lnq_blocks(count)
    iters = 5
    c0 = K.kmeanspp_init(blocks, 3, seed=0)
    setup, sorted_iter = zoocodec_iteration(blocks, c0, 20, sorted_path=True)
    _, ours = zoocodec_iteration(blocks, c0, iters, sorted_path=False)
    start = time.perf_counter()
    L.cluster_units(blocks, 3, iters=10)
    full = time.perf_counter() - start
    # the peers have no batched API: one call per block, timed on a subset and scaled up
    import faiss
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(THREADS)
    sub_sk, sub_fa = 200, 2000
    with threadpool_limits(THREADS):
        start = time.perf_counter()
        n_it = 0
        for b in range(sub_sk):
            km = KMeans(3, init=c0[b].reshape(-1, 1), n_init=1, max_iter=iters, tol=0, algorithm="lloyd")
            km.fit(blocks[b].reshape(-1, 1))
            n_it += km.n_iter_
        sk = (time.perf_counter() - start) / n_it * count
    start = time.perf_counter()
    for b in range(sub_fa):
        km = faiss.Kmeans(1, 3, niter=iters, nredo=1, verbose=False, seed=0, min_points_per_centroid=1)
        km.train(blocks[b].reshape(-1, 1), init_centroids=c0[b].reshape(-1, 1))
    fa = (time.perf_counter() - start) / (sub_fa * iters) * count
    row = {"blocks": count, "block": "8x8", "k": 3, "data": source,
           "zoocodec_streaming_s_per_iter": ours, "zoocodec_sorted_setup_s": setup,
           "zoocodec_sorted_s_per_iter": sorted_iter, "zoocodec_cluster_units_s_10_iters": full,
           "sklearn_s_per_iter": sk, "sklearn_measured_blocks": sub_sk,
           "faiss_s_per_iter": fa, "faiss_measured_blocks": sub_fa,
           "streaming_speedup_vs_sklearn": sk / ours, "streaming_speedup_vs_faiss": fa / ours,
           "20_iters_speedup_vs_sklearn": 20 * sk / (setup + 20 * sorted_iter),
           "20_iters_speedup_vs_faiss": 20 * fa / (setup + 20 * sorted_iter),
           "note": "peers: one KMeans per block (no batched API), timed on the first N blocks, scaled to all"}
    print(json.dumps(row), flush=True)
    return row


def gpu(quick: bool) -> dict:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    peak = {"H100": 3.35e12, "H200": 4.8e12}
    peak_bw = next((v for key, v in peak.items() if key in name), None)
    rows = []
    sizes = [1 << 24] if quick else [1 << 24, 1 << 26, 1 << 28]
    shapes = [(1, n) for n in sizes] + [(4096, 4096)]  # per tensor, and per output channel (4096 problems)
    for B, n in shapes:
        x = cupy.asarray(np.random.default_rng(0).laplace(0, 0.05, B * n).astype(np.float32)).reshape(B, n)
        for k in (4, 16, 256) if B == 1 else (4, 16):  # (host k-means++ over 4096 rows x 256 is slow)
            c = K.kmeanspp_init(x, k, seed=0)
            scales = K.fixed_point_scales(x)
            plan = K.CudaLloyd(x, c, scales)
            t_fused = gpu_time(lambda plan=plan: [plan.step() for _ in range(10)]) / 10
            t_generic = gpu_time(
                lambda x=x, c=c, scales=scales: K.update(c, *K.cluster_sums(x, c, scales), scales), reps=3
            )
            bw = 4 * B * n / t_fused
            row = {"weights": B * n, "problems": B, "k": k, "fused_s_per_iter": t_fused, "bytes_per_iter": 4 * B * n,
                   "achieved_bytes_per_s": bw, "fraction_of_peak": bw / peak_bw if peak_bw else None,
                   "generic_cupy_s_per_iter": t_generic, "fused_speedup_vs_generic": t_generic / t_fused}
            print(json.dumps(row), flush=True)
            rows.append(row)
        del x
    q = cupy.asarray(np.rint(np.random.default_rng(1).laplace(0, 6, (100_000, 64))).astype(np.float32))
    c0 = K.kmeanspp_init(q, 3)
    sc = K.fixed_point_scales(q)
    lnq_kernel = gpu_time(lambda: K._cuda_lloyd(q, c0, 10, sc))
    lnq_total = gpu_time(lambda: L.cluster_units(q, 3, iters=10), reps=3)
    lnq_generic = gpu_time(lambda: K.update(c0, *K.cluster_sums(q, c0, sc), sc), reps=3)
    lnq = {"blocks": 100_000, "k": 3, "warp_kernel_s_10_iters": lnq_kernel,
           "cluster_units_s_10_iters_with_init_and_transfer": lnq_total,
           "generic_cupy_s_per_iter": lnq_generic}
    print(json.dumps(lnq), flush=True)
    return {
        "device": name,
        "peak_bytes_per_s": peak_bw,
        "kmeans": rows,
        "lnq": lnq,
        "data": "Laplace(0, 0.05) float32, seed 0 (minilm is not installed on the GPU machine)",
        "timing": "CUDA events, median of 10 runs after 2 warm-ups (fused: 10 back-to-back iterations per run, "
        "one launch each, host launch overhead included); bytes = the float32 weights read once per iteration",
    }


RD_SPECS = {
    "uniform": ["uniform:bits=4", "uniform:bits=6", "uniform:bits=8"],
    "kmeans": ["kmeans:k=4", "kmeans:k=16", "kmeans:k=64", "kmeans:k=256", "kmeans:k=16,per=channel"],
    "lnq": ["lnq:bits=6,lam=1", "lnq:bits=6,lam=4", "lnq:bits=5,lam=1", "lnq:bits=8,lam=30"],
    "pq": ["pq:m=4,k=256,iters=8", "pq:m=2,k=256,iters=8", "pq:m=4,k=256,stages=2,iters=8"],
}
PQ_ON_MINILM = 2  # PQ takes minutes per setting on minilm on 2 cores: only the first two there


def rd(quick: bool) -> dict:
    import zoocodec

    out = {}
    models = ["mnist-cnn"] if quick else ["mnist-cnn", "minilm"]
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            points = []
            for family, specs in RD_SPECS.items():
                for spec in specs[:PQ_ON_MINILM] if (family, model) == ("pq", "minilm") else specs:
                    start = time.perf_counter()
                    report = zoocodec.compress(model, Path(tmp) / "m.zc", spec)
                    info = zoocodec.inspect(Path(tmp) / "m.zc")
                    lnq = [t for t in info["tensors"] if t["method"].startswith("lnq")]
                    point = {"family": family, "spec": spec, "bits_per_weight": report.bits_per_weight,
                             "ratio": report.ratio, "sqnr_db": report.sqnr_db,
                             "encode_s": time.perf_counter() - start}
                    if model == "mnist-cnn":  # top-1 on the 5,000 real digits (fast enough to run per point)
                        from zoocodec.eval import evaluate

                        m = next(m for m in evaluate(Path(tmp) / "m.zc", task="digits") if m.metric == "top1")
                        point["top1"], point["top1_fp32"] = m.value, m.baseline
                    if lnq:
                        with zoocodec.Archive(Path(tmp) / "m.zc") as a:
                            sides = [a.entries[t["name"]]["side"] for t in lnq]
                        units = sum(s["units"] for s in sides)
                        point["lnq_unit_ratio"] = sum(s["lnq_ratio"] * s["units"] for s in sides) / max(units, 1)
                    print(model, json.dumps(point), flush=True)
                    points.append(point)
            out[model] = points
    return {"models": out, "note": "bits/weight counts every byte of the file except attached non-weight "
            "files; tensors under 4096 weights stay lossless (the pipeline's default); SQNR over the lossy tensors"}


def plot_rd(result: dict, path: Path) -> None:
    """bits/weight vs SQNR, one panel per model, one series per method family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, (model, points) in zip(axes[0], models.items(), strict=True):
        for family in RD_SPECS:
            pts = sorted((p["bits_per_weight"], p["sqnr_db"]) for p in points if p["family"] == family)
            if pts:
                # uniform is one sweep (a line); the other families mix settings (points)
                ax.plot(*zip(*pts, strict=True), "o-" if family == "uniform" else "o", label=family, alpha=0.85)
        ax.set(title=model, xlabel="bits per weight (whole file)", ylabel="SQNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--gpu", action="store_true", help="GPU kernels (needs CuPy and a CUDA GPU)")
    ap.add_argument("--rd", action="store_true", help="rate-distortion points on the zoo models")
    ap.add_argument("--plot", type=Path, help="only draw the RD plot (PNG beside it) of this kernels_rd JSON")
    args = ap.parse_args()
    if args.plot:
        plot_rd(json.loads(args.plot.read_text()), args.plot.with_suffix(".png"))
        return
    if args.gpu:
        result = {"machine": machine(), **gpu(args.quick)}
        name = "kernels_gpu"
    elif args.rd:
        result = {"machine": machine(), **rd(args.quick)}
        name = "kernels_rd"
    else:
        result = {"machine": machine(), "kmeans": cpu_kmeans(args.quick), "lnq": cpu_lnq(args.quick)}
        name = "kernels"
    if args.quick:
        name += "-quick"
    path = save(name, result)
    if args.rd:
        plot_rd(result, path.with_suffix(".png"))
    if os.environ.get("OUT"):  # on the device machine: also hand the file back
        Path(os.environ["OUT"], path.name).write_text(path.read_text())
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
