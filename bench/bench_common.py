"""What every benchmark records beside its numbers: the machine, versions, date; atomic saving."""
from __future__ import annotations

import datetime
import importlib.metadata as md
import json
import os
import platform
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def from_tree(source: Path | None) -> str:
    """Python that makes a fresh interpreter import zoocodec from the source tree `source` (a worktree of
    another commit, its native engine built or copied in), prepended to a `-c` script; "" for the installed
    one. The editable install's import finder is dropped first, or it would import the installed copy."""
    if source is None:
        return ""
    return ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'Inplace' not in type(f).__name__]; "
            f"sys.path.insert(0, {str(source)!r})\n")


def machine(packages: tuple[str, ...] = ("numpy", "torch", "constriction", "zstandard")) -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for pkg in ("zoocodec", *packages):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "versions": versions, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "load_average_at_start": os.getloadavg()}


def save(name: str, data: dict, tag: str = "") -> Path:
    """Write bench/results/NAME-YYYY-MM-DD[-TAG].json atomically and return its path."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}-{datetime.date.today().isoformat()}{'-' + tag if tag else ''}.json"
    fd, tmp = tempfile.mkstemp(dir=RESULTS, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, out)
    return out


def gpu_time(fn, reps: int = 10) -> float:
    """Median seconds of fn() by CUDA events, after 2 warm-up calls."""
    import cupy  # GPU benchmarks only
    import numpy as np

    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    return float(np.median(times))


def coded_tensors(archive, coders: tuple[str, ...] = ("ans", "ctx", "cabac")):
    """(name, entry, spec, coder, {stream: bytes}) of every tensor `archive` (a zoocodec Archive) wrote with one
    of `coders`: what the coder benchmarks re-code."""
    for name in archive.names():
        e = archive.plan[name]
        coder = getattr(e.spec, "coder", None)
        if coder is None or coder.name not in coders:
            continue
        yield name, e, e.spec, coder, dict(zip(e.segments, archive.container.segments(
            [(e.where, s) for s in e.segments.values()]), strict=True))


def zoo_layer_inputs(model: str):
    """(weights, calibration, LayerInputs per weight name) of a zoo model: what automatic mode's data-aware
    rounding measures on the task's calibration inputs."""
    from zoocodec.eval import calibration as C
    from zoocodec.eval.evaluate import evaluator, load_weights, tasks_of
    from zoocodec.tuning.calibrate import collect

    weights = load_weights(model)
    task = tasks_of(model, None)[0]
    whole = evaluator(model, task, None)
    cal = C.for_zoo(whole.arch, whole.folder, task, weights)
    return weights, cal, collect(cal.net, cal.run, cal.names)
