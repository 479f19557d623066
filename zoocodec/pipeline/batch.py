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
  large array operations) while the main thread quantizes the next chunk;
- a group is quantized in chunks of about CPU_CHUNK weights on the CPU (whole on a GPU), and
  results come back as soon as they and all before them are done, in the model's order, so
  progress moves every few seconds (dq on a whole 64 MB window took 18 s before its first
  result) and the container holds the bytes that coding one tensor at a time writes
  (tests/pipeline/test_batch.py checks that on zoo models; any split of a group quantizes
  each tensor as quantize() alone does).

On a CUDA device, each group runs on its own CUDA stream (two in turn); its results are
copied into pinned host buffers asynchronously and the worker waits for that copy, so the
copies of one group overlap the next group's kernels and the coding of the one before.
Memory: about two windows of weights (the one quantizing, the one coding) plus the
group's intermediates; `window=0, threads=0` is the one-tensor-at-a-time path.
"""
from __future__ import annotations

import itertools
import os
from collections import deque
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
# weights quantized per call on the CPU: dq on 1M weights takes 1-3 s on a loaded 2-core machine
# (progress moves and Ctrl-C lands between calls) and keeps most of grouping's gain (dq on
# 24 matrices of 256x1024: 15.5 s in groups of 4, 13.2 s in one group, 17.4 s in pairs)
CPU_CHUNK = 1 << 20


def default_window(xp) -> int:
    """Read-ahead for namespace `xp`, within the memory budget."""
    return min(GPU_WINDOW if xp is not np else CPU_WINDOW, budget.max_memory() // MEMORY_SHARE)


def run(tensors: Iterable[TensorData], choose: Callable[[TensorData], MethodSpec],
        finish: Callable[[TensorData, MethodSpec, Quantized], Any], xp=np,
        window: int | None = None, threads: int = THREADS, chunk: int | None = None,
        recon: bool = True) -> Iterator[Any]:
    """finish(t, spec, quantization) for every tensor, in the order of `tensors`.

    `choose` runs on the calling thread as tensors are read; `finish` on `threads` workers
    (inline when 0). A spec quantizes in `xp` only when it has a GPU path (`spec.gpu`).
    A group is quantized `chunk` weights at a time (default: CPU_CHUNK on NumPy; 0, the whole
    group, on a GPU, where large launches are the point), and each result is yielded as soon
    as it and every one before it are done: the caller's progress moves every chunk, not
    every window. recon=False: `finish` needs only the error of the reconstruction (q.stats,
    when the method measured it), see MethodSpec.quantize_many."""
    window = default_window(xp) if window is None else window
    chunk = (CPU_CHUNK if xp is np else 0) if chunk is None else chunk
    pool = ThreadPoolExecutor(threads, thread_name_prefix="zoocodec-code") if threads else None
    streams = _Streams(xp)
    queue: deque[_Slot] = deque()  # every tensor read and not yet yielded, in the model's order
    try:
        for n, items in enumerate(_windows(tensors, choose, window)):
            slots = [_Slot(n) for _ in items]
            queue.extend(slots)
            for spec, members in _groups(items, gpu=xp is not np):
                for part in _chunks(members, items, chunk):
                    ts = [items[i][0] for i in part]
                    with streams.next() as stream:
                        qs = spec.quantize_many(ts, xp if spec.gpu else np, recon=recon)
                        ready = stream.to_host(qs, spec)
                    for i, t, q in zip(part, ts, qs, strict=True):
                        job = (t, spec, q, ready)
                        slots[i].job = pool.submit(_finish, finish, *job) if pool else _finish(finish, *job)
                    yield from _done(queue)
            # memory: the next window is read once this one's predecessors are written, so at most
            # two windows are in flight (one quantizing, one coding); a tensor as large as a window
            # is coded before the next is read (peak memory: one large tensor, bench/bench_memory.py)
            large = len(items) == 1 and items[0][0].array.nbytes >= window
            yield from _drain(queue, before=n + 1 if large or not pool else n)
        yield from _drain(queue, before=None)
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)


class _Slot:
    """A tensor's place in the output order: its window, then its finish() job once quantized
    (a Future on the workers, the value itself when coded inline)."""

    __slots__ = ("window", "job")

    def __init__(self, window: int):
        self.window, self.job = window, None

    def done(self) -> bool:
        return self.job is not None and (not isinstance(self.job, Future) or self.job.done())

    def result(self) -> Any:
        return self.job.result() if isinstance(self.job, Future) else self.job


def _done(queue: deque[_Slot]) -> Iterator[Any]:
    """The results at the head of `queue` that are ready, without waiting."""
    while queue and queue[0].done():
        yield queue.popleft().result()


def _drain(queue: deque[_Slot], before: int | None) -> Iterator[Any]:
    """Every result of windows before `before` (None: all), waiting for them."""
    while queue and (before is None or queue[0].window < before):
        yield queue.popleft().result()


def _finish(finish, t: TensorData, spec: MethodSpec, q: Quantized, ready) -> Any:
    if ready is not None:
        ready.synchronize()  # the device-to-host copies of this group are done
    return finish(t, spec, q)


def _chunks(members: list[int], items: list[tuple[TensorData, MethodSpec]], chunk: int) -> Iterator[list[int]]:
    """`members` in consecutive runs of about `chunk` weights (at least one tensor; 0: one run)."""
    part, size = [], 0
    for i in members:
        part.append(i)
        size += items[i][0].array.size
        if chunk and size >= chunk:
            yield part
            part, size = [], 0
    if part:
        yield part


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

    def to_host(self, qs: list[Quantized], spec: MethodSpec):
        """Replace device arrays in `qs` (symbols, recon) by pinned host arrays being filled on
        this stream, except the symbols of a stream whose coder encodes on the device (they stay
        there: the worker codes them and only their bytes come back); returns the event a worker
        waits for (None when nothing was on a device)."""
        if self.stream is None:
            return None
        import cupy  # GPU only
        import cupyx

        def host(a, stay: bool = False):
            if not isinstance(a, cupy.ndarray):
                return a
            a = cupy.ascontiguousarray(a)
            keep.append(a)  # the device array lives until the copy (or the kernels that made it) has run
            if stay:
                return a
            out = cupyx.empty_pinned(a.shape, dtype=a.dtype)
            cupy.asnumpy(a, stream=self.stream, out=out, blocking=False)
            return out

        keep: list = []
        for q in qs:
            q.symbols = {k: host(v, spec.coder_for(k).gpu_encode) for k, v in q.symbols.items()}
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
