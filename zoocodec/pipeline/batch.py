"""Per-model batching for compress: tensors quantized in groups, coded on threads, in order.

compress (pipeline/core.py) hands its stream of tensors here with two callables of its
own: `choose(t)`, the spec of a tensor, and `finish(t, spec, q)`, everything after
quantization (the default spec's SQNR floor, coding, statistics). This module only
schedules:

- a window of tensors is read ahead (up to `window` bytes of weights, at least one
  tensor); tensors whose specs are equal and whose `spec.batch_key(t)` are equal and not
  None are quantized by one `spec.quantize_many` call: every same-shape matrix of a
  transformer in one uniform, k-means or dq launch on a GPU. On the CPU only specs with
  `batch_on_cpu` group (rdoq, dq: their trellis makes a few operations per column, so
  stacking tensors cuts the calls: 1.8-2.0x on minilm's attention matrices; uniform and
  k-means grouped ran 0.48-1.31x as fast on minilm and mpnet, no reliable gain, their
  large stacked temporaries missing the cache; docs/gpu.md has the numbers);
- `finish` runs on worker threads (the native coders release the GIL, and so do NumPy's
  large array operations) while the main thread quantizes the next window;
- results come back in the model's order, so the container holds the bytes that coding
  one tensor at a time writes (tests/pipeline/test_batch.py checks that on zoo models).

On a CUDA device, each group runs on its own CUDA stream (two in turn); its results are
copied into pinned host buffers asynchronously and the worker waits for that copy, so the
copies of one group overlap the next group's kernels and the coding of the one before.
Memory: about two windows of weights (the one quantizing, the one coding) plus the
group's intermediates; `window=0, threads=0` is the one-tensor-at-a-time path.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from zoocodec import budget
from zoocodec.methods.base import MethodSpec, Quantized, TensorData

CPU_WINDOW = 64 << 20  # bytes of weights read ahead on the CPU (the gain there is coding on threads)
GPU_WINDOW = 1 << 30  # on a GPU: large launches; a 1B bf16 model in two windows
THREADS = max(2, min(8, (os.cpu_count() or 2) // 2))  # coding workers (the engine's pool also runs inside each call)
MEMORY_SHARE = 32  # a window never exceeds this fraction of the memory budget (intermediates are ~10x)


def default_window(xp) -> int:
    """Read-ahead for namespace `xp`, within the memory budget."""
    return min(GPU_WINDOW if xp is not np else CPU_WINDOW, budget.max_memory() // MEMORY_SHARE)


def run(tensors: Iterable[TensorData], choose: Callable[[TensorData], MethodSpec],
        finish: Callable[[TensorData, MethodSpec, Quantized], Any], xp=np,
        window: int | None = None, threads: int = THREADS) -> Iterator[Any]:
    """finish(t, spec, quantization) for every tensor, in the order of `tensors`.

    `choose` runs on the calling thread as tensors are read; `finish` on `threads` workers
    (inline when 0). A spec quantizes in `xp` only when it has a GPU path (`spec.gpu`)."""
    window = default_window(xp) if window is None else window
    pool = ThreadPoolExecutor(threads, thread_name_prefix="zoocodec-code") if threads else None
    streams = _Streams(xp)
    previous: list[Future | Any] = []
    try:
        for items in _windows(tensors, choose, window):
            current: list[Future | Any] = [None] * len(items)
            for spec, members in _groups(items, gpu=xp is not np):
                ts = [items[i][0] for i in members]
                with streams.next() as stream:
                    qs = spec.quantize_many(ts, xp if spec.gpu else np)
                    ready = stream.to_host(qs)
                for i, t, q in zip(members, ts, qs):
                    job = (t, spec, q, ready)
                    current[i] = pool.submit(_finish, finish, *job) if pool else _finish(finish, *job)
            if pool:
                yield from _results(previous)  # coded on the workers while this window quantized
                previous = current
                if len(items) == 1 and items[0][0].array.nbytes >= window:  # a tensor as large as a window:
                    yield from _results(previous)  # coded before the next is read (peak memory: one
                    previous = []  # large tensor in flight, bench/memory.py)
            else:
                yield from current
        yield from _results(previous)
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)


def _finish(finish, t: TensorData, spec: MethodSpec, q: Quantized, ready) -> Any:
    if ready is not None:
        ready.synchronize()  # the device-to-host copies of this group are done
    return finish(t, spec, q)


def _results(jobs: list) -> Iterator[Any]:
    for job in jobs:
        yield job.result() if isinstance(job, Future) else job


def _windows(tensors: Iterable[TensorData], choose, window: int) -> Iterator[list[tuple[TensorData, MethodSpec]]]:
    """Lists of (tensor, spec) holding up to `window` bytes of weights (at least one tensor)."""
    items, size = [], 0
    for t in tensors:
        items.append((t, choose(t)))
        size += t.array.nbytes
        if size >= window:
            yield items
            items, size = [], 0
    if items:
        yield items


def _groups(items: list[tuple[TensorData, MethodSpec]], gpu: bool) -> list[tuple[MethodSpec, list[int]]]:
    """(spec, indices) of tensors quantized together, in order of first appearance (on the
    CPU only for specs whose quantize_many pays there: `batch_on_cpu`)."""
    groups: dict[Any, tuple[MethodSpec, list[int]]] = {}
    alone = itertools.count()
    for i, (t, spec) in enumerate(items):
        key = spec.batch_key(t) if gpu or spec.batch_on_cpu else None
        key = ("alone", next(alone)) if key is None else (spec, key)
        groups.setdefault(key, (spec, []))[1].append(i)
    return list(groups.values())


class _Streams:
    """On CuPy: two non-blocking CUDA streams used in turn, one per group; on NumPy: nothing."""

    def __init__(self, xp):
        self.xp = xp
        self.pool = [xp.cuda.Stream(non_blocking=True) for _ in range(2)] if xp is not np else []
        self.turn = 0

    def next(self) -> _Stream:
        self.turn += 1
        return _Stream(self.xp, self.pool[self.turn % 2] if self.pool else None)


class _Stream:
    """The stream a group runs on (current while quantize_many runs), and its copies to the host."""

    def __init__(self, xp, stream):
        self.xp, self.stream = xp, stream

    def __enter__(self) -> _Stream:
        if self.stream is not None:
            self.stream.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.stream is not None:
            self.stream.__exit__(*exc)

    def to_host(self, qs: list[Quantized]):
        """Replace device arrays in `qs` (symbols, recon) by pinned host arrays being filled on
        this stream; returns the event a worker waits for (None when nothing was on a device)."""
        if self.stream is None:
            return None
        import cupy  # noqa: PLC0415  (GPU only)
        import cupyx  # noqa: PLC0415

        def host(a):
            if not isinstance(a, cupy.ndarray):
                return a
            a = cupy.ascontiguousarray(a)
            out = cupyx.empty_pinned(a.shape, dtype=a.dtype)
            cupy.asnumpy(a, stream=self.stream, out=out, blocking=False)
            keep.append(a)  # the device array lives until the copy has run
            return out

        keep: list = []
        for q in qs:
            q.symbols = {k: host(v) for k, v in q.symbols.items()}
            q.recon = host(q.recon)
        if not keep:
            return None
        return _Ready(self.stream.record(), keep)


class _Ready:
    """A recorded event plus the device arrays its copies read."""

    def __init__(self, event, keep: list):
        self.event, self.keep = event, keep

    def synchronize(self) -> None:
        self.event.synchronize()
        self.keep = []
