"""Sweep machinery on Ray: scheduling overhead, execution models, and scaling.

    python bench/bench_sweep.py [--quick]

1. Overhead: N small work items (a real 2-tensor slice of mnist-cnn, one uniform step each)
   run four ways: zoocodec.compress in a plain loop (the peer), the same work items in a
   plain loop (compress + decode + rows + Parquet files), and the sweep machinery on an
   embedded Ray with 1 and 2 workers. Overhead per item = (sweep 1 worker - plain loop) / N.
2. Execution model: the same items as one Ray task each (what zoocodec does), through an
   actor pool (one actor per worker, items sent to it), and through Ray Data (`map` over
   the items with 2 concurrent workers).
3. Scaling: a real sweep (effnet-lite0, 8 settings) with 1 and 2 workers of the embedded
   Ray, and on a simulated 3-node cluster (ray.cluster_utils.Cluster, 1 CPU per node).
Every time is the best of 2 rounds (1 with --quick), Ray started beforehand: the machine
is shared, so compare ratios within one run, not across runs.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback, before Ray is imported
os.environ.setdefault("RAY_AUTH_MODE", "token")

import torch
from safetensors.torch import save_file

import bench_common
import zoocodec
from zoocodec.jobs import results as res, run as runner, spec as sweep_spec


def small_model(folder: Path) -> Path:
    """Two real tensors of mnist-cnn (its first conv and last layer): a few ms to compress."""
    src = zoocodec.pipeline.core.load("mnist-cnn")
    keep = {t.name: torch.from_numpy(t.array.copy()) for t in src.tensors()
            if t.name.endswith("weight") and t.array.size < 20000}
    path = folder / "small.safetensors"
    save_file(keep, path)
    return path


def make_sweep(folder: Path, model: str, methods: list[str], name: str) -> sweep_spec.Sweep:
    spec = folder / f"{name}.yaml"
    spec.write_text(f"name: {name}\nmodels: ['{model}']\nmethods: {methods}\nmax_retries: 2\n")
    return sweep_spec.load(spec, folder / name)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def warm(workers: int) -> None:
    """Start every worker and import zoocodec in it, so sweeps are timed, not Ray's start."""
    import ray

    @ray.remote(num_cpus=1)
    def ready():
        import zoocodec.jobs.run  # noqa: F401

        time.sleep(0.5)

    ray.get([ready.remote() for _ in range(workers)])


def best(times: list[float]) -> float:
    """The fastest of several rounds: on a shared machine, the least disturbed one."""
    return min(times)


def sweep_on_embedded(sweep: sweep_spec.Sweep, cpus: int, out: Path, rounds: int) -> tuple[float, float]:
    """(seconds to start the embedded Ray and its workers, best seconds of the sweep itself).

    Each round writes a fresh results folder, so every round runs every item."""
    from zoocodec import cluster

    start = time.perf_counter()
    times = []
    with cluster.connect(num_cpus=cpus):
        warm(cpus)
        started = time.perf_counter() - start
        for r in range(rounds):
            sweep.out = out / f"round{r}"
            times.append(timed(lambda: runner.run(sweep)))
            assert res.Results(sweep.out).runs().num_rows == len(sweep.items)
    return started, best(times)


def ray_models(sweep: sweep_spec.Sweep, workers: int, rounds: int) -> dict[str, float]:
    """Tasks vs an actor pool vs Ray Data on the same items (results kept in memory)."""
    import ray
    from ray.util import ActorPool

    from zoocodec import cluster

    out = {}
    with cluster.connect(num_cpus=workers):
        warm(workers)
        task = ray.remote(runner.run_item)

        out["tasks"] = best([timed(lambda: ray.get([task.options(num_cpus=1).remote(i, "b") for i in sweep.items]))
                             for _ in range(rounds)])

        @ray.remote(num_cpus=1)
        class Worker:
            def run(self, item):
                return runner.execute(item, "b")

        actors = [Worker.remote() for _ in range(workers)]
        ray.get([a.run.remote(sweep.items[0]) for a in actors])
        pool = ActorPool(actors)
        out["actor_pool"] = best([timed(lambda: list(pool.map_unordered(lambda a, i: a.run.remote(i), sweep.items)))
                                  for _ in range(rounds)])
        for a in actors:
            ray.kill(a)

        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        rows = [{"i": k} for k in range(len(sweep.items))]
        items = sweep.items

        def one(row):
            run_row, _ = runner.execute(items[row["i"]], "b")
            return {"status": run_row["status"]}

        pool = ray.data.TaskPoolStrategy(size=workers)
        out["ray_data"] = best([timed(lambda: ray.data.from_items(rows).map(one, compute=pool, num_cpus=1).take_all())
                                for _ in range(rounds)])
    return out


def cluster_3_nodes(
    sweep: sweep_spec.Sweep, out: Path, rounds: int, nvenc_sweep: sweep_spec.Sweep
) -> tuple[float, dict]:
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    encoder = c.add_node(num_cpus=1, resources={"nvenc": 1})
    ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
    try:
        warm(3)
        times = []
        for r in range(rounds):
            sweep.out = out / f"round{r}"
            times.append(timed(lambda: runner.run(sweep)))
        # items asking for `nvenc` must all land on the one node that offers it
        nvenc_sweep.out = out / "nvenc"
        runner.run(nvenc_sweep)
        nodes = sorted({r["node"].split("/")[-1] for r in res.Results(nvenc_sweep.out).runs().to_pylist()})
        placement = {"items": len(nvenc_sweep.items), "nodes_used": nodes, "nvenc_node": encoder.node_id[:12],
                     "all_on_nvenc_node": nodes == [encoder.node_id[:12]]}
        return best(times), placement
    finally:
        ray.shutdown()
        c.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="200 small items instead of 1,000, 4 scaling items")
    args = ap.parse_args()
    n_small = 200 if args.quick else 1000
    n_scale = 4 if args.quick else 8
    rounds = 1 if args.quick else 2
    tmp = Path(tempfile.mkdtemp(prefix="zoocodec-bench-sweep-"))
    model = small_model(tmp)
    steps = [f"uniform:step={0.001 + 1e-6 * k:.6f}" for k in range(n_small)]
    small = make_sweep(tmp, str(model), steps, "small")
    report: dict = {"machine": bench_common.machine(("numpy", "torch", "ray", "pyarrow")), "items": n_small,
                    "rounds": rounds, "timing": "best of the rounds (the machine is shared)",
                    "small_model": {"tensors": len(zoocodec.pipeline.core.load(model).names),
                                    "weights": sum(t.array.size for t in zoocodec.pipeline.core.load(model).tensors())}}
    print(f"1. overhead: {n_small} items on {model.name}", flush=True)
    specs = [sweep_spec.spec_from_dict(i.spec) for i in small.items]
    t_compress = best(
        [timed(lambda: [zoocodec.compress(model, tmp / "x.zc", s) for s in specs]) for _ in range(rounds)]
    )
    t_loop = best(
        [
            timed(lambda r=r: [res.Results(tmp / f"loop{r}").write(*runner.execute(i, "loop")) for i in small.items])
            for r in range(rounds)
        ]
    )
    start1, t_ray1 = sweep_on_embedded(small, 1, tmp / "ray1", rounds)
    start2, t_ray2 = sweep_on_embedded(small, 2, tmp / "ray2", rounds)
    report["overhead"] = {"ray_start_s": {"1_worker": start1, "2_workers": start2},
        "compress_loop_s": t_compress, "work_item_loop_s": t_loop,
        "sweep_1_worker_s": t_ray1, "sweep_2_workers_s": t_ray2,
        "items_per_s": {"compress_loop": n_small / t_compress, "work_item_loop": n_small / t_loop,
                        "sweep_1_worker": n_small / t_ray1, "sweep_2_workers": n_small / t_ray2},
        "overhead_ms_per_item_vs_work_item_loop": 1000 * (t_ray1 - t_loop) / n_small,
        "overhead_ms_per_item_vs_compress_loop": 1000 * (t_ray1 - t_compress) / n_small,
        "note": "sweep times exclude starting Ray and its workers (ray_start_s); "
                "the sweep writes 2 Parquet files per item",
    }
    print(report["overhead"], flush=True)

    print("2. execution models, 2 workers", flush=True)
    models = ray_models(small, 2, rounds)
    report["execution_models"] = {"seconds": models, "items_per_s": {k: n_small / v for k, v in models.items()},
                                  "ratio_vs_tasks": {k: v / models["tasks"] for k, v in models.items()}}
    print(report["execution_models"], flush=True)

    print(f"3. scaling: effnet-lite0 x {n_scale}", flush=True)
    bits = [f"uniform:bits={b}" for b in (3, 4, 5, 6, 7, 8, 10, 12)][:n_scale]
    scale = make_sweep(tmp, "effnet-lite0", bits, "scale")
    _, s1 = sweep_on_embedded(scale, 1, tmp / "s1", rounds)
    _, s2 = sweep_on_embedded(scale, 2, tmp / "s2", rounds)
    spec = tmp / "nvenc.yaml"
    spec.write_text("models: [mnist-cnn]\nmethods:\n  - method: uniform\n    params: {bits: [4, 6, 8]}\n"
                    "    resources: {nvenc: 1}\n")
    s3, placement = cluster_3_nodes(scale, tmp / "s3", rounds, sweep_spec.load(spec, tmp / "nv"))
    report["scaling"] = {"items": n_scale, "seconds": {"1_worker": s1, "2_workers": s2, "3_node_cluster": s3},
                         "throughput_ratio_vs_1_worker": {"2_workers": s1 / s2, "3_node_cluster": s1 / s3},
                         "note": "3 simulated nodes x 1 CPU share this machine's 2 cores",
                         "nvenc_placement": placement}
    print(report["scaling"], flush=True)
    print("wrote", bench_common.save("sweep-quick" if args.quick else "sweep", report))


if __name__ == "__main__":
    main()
