"""Run a sweep: one Ray task per work item, results written by the driver as they arrive.

Why tasks (and not an actor per model, or Ray Data): bench/bench_sweep.py measured the three
on this machine; per-item overhead of a task is about a millisecond against 0.06-4 s of
compression per item, loading a model is a small part of compressing it, and a task is
the unit Ray retries on its own after a worker crash (`max_retries`), which an actor pool
only approximates with restarts. See docs/sweeps.md for the numbers.

A work item is executed by `execute`, a plain function that calls the same
`zoocodec.compress` / `zoocodec.decompress` / `zoocodec.eval.evaluate` a user calls; the
worker reads the model from its path (zoo names resolve on the worker), never through
the driver. The driver only writes rows (zoocodec.jobs.results), so a results folder
needs no shared filesystem.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoocodec import __version__
from zoocodec.container import FORMAT_VERSION
from zoocodec.errors import ZoocodecError
from zoocodec.jobs.results import Results
from zoocodec.jobs.spec import Inputs, Sweep, WorkItem, content_hash


class RetryableError(Exception):
    """A failure worth another attempt (out of memory, a flaky filesystem); Ray retries it."""


@dataclass
class Outcome:
    """What a sweep did in this call."""

    total: int
    skipped: int
    ok: int
    failed: int
    seconds: float
    where: str


def execute(item: WorkItem, sweep: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run one work item here and return its run row and tensor rows.

    User errors (a bad model file, NaN weights) and bugs become a failed row; errors that
    may pass on another attempt raise RetryableError for Ray to retry.
    """
    import zoocodec
    from zoocodec.device import resolve
    from zoocodec.methods import spec_from_dict
    from zoocodec.pipeline import core
    from zoocodec.pipeline.policy import Overrides

    try:
        dev = resolve(item.device)  # a GPU asked for and not visible to this worker fails the item
        spec = spec_from_dict(item.spec)
        overrides = Overrides([(p, spec_from_dict(s)) for p, s in item.overrides])
        model = item.model_path or item.model
        source = core.load(model).path
        read = content_hash(source) if source else None
        if read and item.content and not item.content.startswith("zoo:") and read != item.content:
            raise ZoocodecError(f"{model}: the model read here ({source}) is not the one the sweep was planned on "
                                "(its content differs): the work id would not describe it")
        with tempfile.TemporaryDirectory(prefix="zoocodec-sweep-") as tmp:
            zc = os.path.join(tmp, "model.zc")
            report = zoocodec.compress(model, zc, spec, overrides=overrides, min_size=item.min_size, device=dev)
            start = time.perf_counter()
            zoocodec.decompress(zc, device=dev)
            decode_s = time.perf_counter() - start
            start = time.perf_counter()
            reference = None if item.model_path else item.model
            metrics = _judge(model, zc, item.judged_on, dev) if item.judged_on else \
                [m for task in item.tasks for m in _evaluate(zc, task, reference, dev)]
            eval_s = time.perf_counter() - start
    except (MemoryError, OSError) as e:
        raise RetryableError(f"{type(e).__name__}: {e}") from e
    except ZoocodecError as e:
        return failed_row(item, sweep, str(e)), []
    except Exception as e:  # a bug: record it with where it happened, the sweep goes on
        where = traceback.extract_tb(e.__traceback__)[-1]
        return failed_row(
            item, sweep, f"{type(e).__name__}: {e} ({os.path.basename(where.filename)}:{where.lineno})"
        ), []
    lossy = [t for t in report.tensors if t.mse > 0]
    weights = report.params
    run = _base_row(item, sweep, dev.label) | {
        "model_sha256": read,
        "status": "ok", "error": None,
        "weights": weights, "bytes_in": report.bytes_in, "bytes_out": report.weight_bytes,
        "file_bytes": report.file_bytes, "ratio": report.ratio, "bits_per_weight": report.bits_per_weight,
        "mse": sum(t.mse * t.numel for t in lossy) / max(weights, 1),
        "max_err": max((t.max_err for t in report.tensors), default=0.0),
        "sqnr_db": _finite(report.sqnr_db),
        "metrics": metrics,
        "worst_drop_pct": max((m["drop_pct"] for m in metrics if m["primary"]), default=None),
        **_worst_bounds(metrics),
        "encode_s": report.seconds, "decode_s": decode_s, "eval_s": eval_s if item.evaluated else None,
    }
    tensors = [{
        "work_id": item.work_id, "model": item.model, "method": run["method"], "tensor": t.name,
        "shape": list(t.shape), "dtype": t.dtype, "tensor_method": t.method, "weights": t.numel,
        "bytes_in": t.bytes_in, "bytes_out": t.bytes_out, "bits_per_weight": t.bits_per_weight,
        "mse": t.mse, "max_err": t.max_err, "sqnr_db": _finite(t.sqnr_db),
    } for t in report.tensors]
    return run, tensors


def _evaluate(zc: str, task: str, reference: str | None, device) -> list[dict[str, Any]]:
    """Metrics of the compressed model on one task, each with its drop in percent and the
    95% interval of both (zoocodec.eval.Metric: relative to the uncompressed model's value,
    absolute where that is 0, as for KL). Only the task's primary metric enters the run's
    worst drops (its accuracy budget)."""
    from zoocodec.eval import evaluate

    return [_metric(m) for m in evaluate(zc, task=task, reference=reference, device=device)]


def _judge(model: str, zc: str, on: Inputs, device) -> list[dict[str, Any]]:
    """A model outside the zoo: its output fidelity against the original on the spec's inputs
    (zoocodec.eval.anymodel, as `zoocodec evaluate ORIGINAL COMPRESSED --inputs`), on the item's device but for
    an ONNX graph (onnxruntime's CPU provider)."""
    from zoocodec.device import CPU
    from zoocodec.eval.anymodel import evaluate_pair, on_torch

    return [_metric(m) for m in evaluate_pair(model, zc, on.path, on.module, on.output,
                                              device if on_torch(model, on.module) else CPU)]


def _metric(m) -> dict[str, Any]:
    """A zoocodec.eval.Metric as a row's metric entry, losses in percent."""
    def pct(x: float | None) -> float | None:
        return None if x is None else 100 * x

    return {"task": m.task, "metric": m.metric, "value": m.value, "baseline": m.baseline, "delta": m.delta,
            "drop_pct": 100 * m.loss, "primary": m.primary, "delta_low": m.low, "delta_high": m.high,
            "drop_low_pct": pct(m.loss_low), "drop_high_pct": pct(m.loss_high), "inputs": m.n}


def _worst_bounds(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The interval of the worst primary drop (its pessimistic end is what budgets judge)."""
    primary = [m for m in metrics if m["primary"]]
    if not primary or any(m["drop_high_pct"] is None for m in primary):
        return {"worst_drop_low_pct": None, "worst_drop_high_pct": None, "inputs": None}
    worst = max(primary, key=lambda m: m["drop_high_pct"])
    return {"worst_drop_low_pct": worst["drop_low_pct"], "worst_drop_high_pct": worst["drop_high_pct"],
            "inputs": worst["inputs"]}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _base_row(item: WorkItem, sweep: str, device: str) -> dict[str, Any]:
    """`device`: what ran (zoocodec.device.Device.label: `cpu` or `cuda:N NAME`); on a failed
    row, the device the item asked for."""
    import torch

    versions = {"zoocodec": __version__, "format": FORMAT_VERSION, "python": platform.python_version(),
                "numpy": np.__version__, "torch": torch.__version__}
    if "ray" in sys.modules:
        versions["ray"] = sys.modules["ray"].__version__
    return {
        "work_id": item.work_id, "sweep": sweep, "model": item.model, "method": item.method,
        "method_name": item.spec["method"], "params": json.dumps(item.spec, sort_keys=True),
        "coder": _coder(item.spec), "overrides": json.dumps(item.overrides),
        "device": device, "node": _node(), "versions": json.dumps(versions, sort_keys=True),
        "metrics": [], "finished_at": dt.datetime.now(dt.UTC).replace(microsecond=0),
    }


def _coder(spec: dict) -> str | None:
    """The spec's coder as text (video-hevc(crf=18)), for a column that filters easily."""
    from zoocodec.codecs import coder_from_dict

    return str(coder_from_dict(spec["coder"])) if isinstance(spec.get("coder"), dict) else None


def _node() -> str:
    """host name, and the Ray node id where one runs (simulated nodes share a host name)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return f"{platform.node()}/{ray.get_runtime_context().get_node_id()[:12]}"
    return platform.node()


def failed_row(item: WorkItem, sweep: str, error: str) -> dict[str, Any]:
    return _base_row(item, sweep, f"asked: {item.device}") | {"status": "failed", "error": error[:2000]}


def run_item(item: WorkItem, sweep: str):
    """The Ray task body (its name is the worker's process title: ray::run_item)."""
    return execute(item, sweep)


def run(sweep: Sweep, address: str | None = None, max_parallel: int | None = None, num_cpus: int | None = None,
        progress=None) -> Outcome:
    """Run every work item of `sweep` that has no successful row yet in `sweep.out`.

    `progress(ok, failed, running, total)` is called as items finish (the CLI draws a bar).
    Several sweeps may write to one results folder at once: each claims an item before running
    it (a lock the kernel drops if its holder dies), leaves the items another sweep holds for
    last, and skips those that sweep wrote meanwhile, so each item runs once.
    """
    from zoocodec import cluster

    results = Results(sweep.out)
    results.clean_temp()
    since = time.time()
    done = results.done_ids()
    todo = deque(i for i in sweep.items if i.work_id not in done)
    skipped = len(sweep.items) - len(todo)
    ok = failed = 0
    start = time.perf_counter()
    if not todo:
        return Outcome(len(sweep.items), skipped, 0, 0, 0.0, "nothing to run")
    pending: dict[Any, tuple[WorkItem, int]] = {}
    # the users' modules (state dicts judged with `module:`) go to the workers with the job: Ray
    # uploads local folders and files only in ray.init's runtime_env, not in a task's
    ship = sorted({i.judged_on.module_source for i in todo if i.judged_on and i.judged_on.module_source})
    with cluster.connect(address, num_cpus, py_modules=ship) as conn:
        import ray

        task = ray.remote(run_item)
        have = ray.cluster_resources()
        slots = int(have.get("CPU", 1))
        if conn.embedded:  # nothing will join: an item asking for what is not here would wait forever
            for item in [i for i in todo if _lacking(i, have)]:
                todo.remove(item)
                results.write(failed_row(item, sweep.name, f"needs {_lacking(item, have)}, which this machine "
                                                           "lacks; run on a cluster that has it (--address)"), [])
                failed += 1
        limit = max_parallel or len(todo)
        total = len(todo) + failed
        held: deque[WorkItem] = deque()  # items another sweep is running: tried again when nothing else is left
        try:
            while todo or pending or held:
                if not todo:
                    todo, held = held, deque()
                while todo and len(pending) < limit:
                    item = todo.popleft()
                    claim = results.claim(item.work_id)
                    if claim is None:
                        held.append(item)
                    elif results.written_since(item.model, item.work_id, since):  # another sweep just did it
                        os.close(claim)
                        skipped, total = skipped + 1, total - 1
                    else:
                        pending[_submit(task, item, sweep)] = (item, claim)
                if not pending:
                    time.sleep(0.5)  # only items other sweeps are running are left
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    item, claim = pending.pop(ref)
                    try:
                        row, tensors = ray.get(ref)
                    except ray.exceptions.RayError as e:  # retries exhausted: a crash or a retryable error
                        row, tensors = failed_row(item, sweep.name, _ray_error(e)), []
                    results.write(row, tensors)
                    os.close(claim)
                    ok += row["status"] == "ok"
                    failed += row["status"] != "ok"
                if progress:
                    progress(ok, failed, min(len(pending), slots), total)
        finally:
            for _, claim in pending.values():
                os.close(claim)
    return Outcome(len(sweep.items), skipped, ok, failed, time.perf_counter() - start, conn.where)


def _lacking(item: WorkItem, have: dict[str, float]) -> str | None:
    """The first resource the item asks for more of than the whole cluster has, as text."""
    need = {"CPU": 1.0} | item.resources
    for k, v in need.items():
        if v > have.get(k, 0.0):
            return f"{k}={v:g}"
    return None


def _submit(task, item: WorkItem, sweep: Sweep):
    res = dict(item.resources)
    options = {"num_cpus": res.pop("CPU", 1), "num_gpus": res.pop("GPU", 0), "resources": res,
               "max_retries": sweep.max_retries, "retry_exceptions": [RetryableError]}
    return task.options(**options).remote(item, sweep.name)


def _ray_error(e: Exception) -> str:
    cause = getattr(e, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    first = str(e).strip().splitlines()
    return f"{type(e).__name__}: {first[0] if first else ''}"
