"""One decode plan per file: the header's typed entries (zoocodec/header.py), many tensors
decoded together by the decoders their methods declare.

A method declares a fused decoder with `MethodSpec.fused(side, arrays, shape, dtype)`: a
description of how its payload decodes in one pass (entropy decoding and dequantization
fused, written in the tensor's dtype), or None when only its own `decode` can do it. The
CPU runs every fused job of a batch in one pass of the native thread pool (plan.cpp), which a
Stream starts on the first jobs while the caller builds the next; the CUDA decoder
(kernels/decode.py) takes the same descriptions. So adding a method never means
editing a decoder: a method whose dequantization is one of these kinds returns it.

Kinds (values in float64 rounded to the dtype exactly as methods/arrays.from_float64 rounds them;
the symbols of an `ans`, `ctx` or `cabac` stream, parsed natively by ans_frame.h, ctx_frame.h and
cabac.h: a ctx stream's contexts decode side by side, then its symbols are put in their places a block
at a time; a cabac stream's substreams decode each into its thread's buffer, then into values):
    Affine   value = symbol * steps[row]               (uniform, rdoq)
    Lookup   value = values[problem * k + symbol]      (kmeans: a codebook per problem)
    Planes   the bits of each value from byte planes   (lossless: codecs/floatplanes.py's frame;
             on the CPU its tasks, zstd planes inflated first, join the same native pass)
    Grouped  value = symbol * step[g] (+ zero[g]), g the group of consecutive weights of a row
             (uniform group=G; side streams decoded in Python, when a decoder takes the job)
    Trellis  value = dq_level(state, symbol) * steps[row], the state walked along each row or
             column (dq: on the CPU the levels are decoded first, then the walks run side by side;
             kernels/decode.cu walks it as a scan of state maps)
The GPU decoder takes `ans` and `ctx` streams (`compress --decode-on gpu` writes only those).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import cabac, native
from zoocodec.errors import ContainerError
from zoocodec.header import TensorEntry
from zoocodec.methods.lossless import native_dtype

KINDS = {"float32": 0, "float16": 1, "bfloat16": 2}  # plan.h Kind
DTYPES = {kind: native_dtype(kind) for kind in KINDS}
BATCH_BYTES = 256 << 20  # decoded bytes per native pass when a whole model decodes
ALIGN = 64  # bytes: where each output starts in its batch's block
PART_BYTES = 8 << 20  # decoded bytes a Stream hands to its pass at once (the first starts it while the rest are built)
CODERS = {"ans": 0, "ctx": 1, "cabac": 2}  # plan.h Coder: the symbol coders the native pass parses
GPU_CODERS = ("ans", "ctx")  # the ones kernels/decode.py parses (cabac's arithmetic decoder is serial)


@dataclass(frozen=True)
class Affine:
    """symbols (stream `stream`, coder ans) times one float64 step per row of the 2-D view."""

    stream: str
    steps: np.ndarray
    same_shape = True  # the symbols have the tensor's shape (dequantize reshapes to theirs)
    sides = ()  # the other symbol streams the job consumes

    def native(self, numel: int) -> tuple[np.ndarray, int, int, tuple | None]:
        """(values, row length, k, how) of plan.h's Fused (plan_bind.cpp's job tuple)."""
        rows = self.steps.shape[0]
        return self.steps, numel // rows if rows > 1 else numel, 0, None


@dataclass(frozen=True)
class Lookup:
    """values[p * k + symbol] for the symbols of problem p = element // size (stream `stream`, coder ans)."""

    stream: str
    values: np.ndarray  # float64, k per problem
    k: int
    size: int
    same_shape = False  # the indices are flat: their count is the tensor's
    sides = ()

    def native(self, numel: int) -> tuple[np.ndarray, int, int, tuple | None]:
        return self.values, self.size, self.k, None


@dataclass(frozen=True)
class Planes:
    """The tensor's bits from the float-plane payload `stream` (codecs/floatplanes.py)."""

    stream: str
    same_shape = True
    sides = ()


@dataclass(frozen=True)
class Grouped:
    """symbols (stream `stream`, coder ans) * step + zero of their group: `group` consecutive
    weights of a row of the (rows, cols) view. `values()` decodes and checks the side streams
    `sides` (only a decoder that takes the job calls it): (float64 steps, one per group or one
    for the tensor; float64 zeros per group, or None). Side values coded at M mantissa bits
    (uniform:side=M): `codes()` decodes and checks them as (step codes, centres: signed integers as
    narrow as they decoded; M, the levels' bits, the largest step exponent), from which the CPU's pass
    and the GPU's kernel compute each group's step and zero as they write the group (float64 arrays of
    them took longer than the values, most of it faulting in their fresh pages)."""

    stream: str
    group: int
    rows: int
    cols: int
    values: Callable[[], tuple[np.ndarray, np.ndarray | None]]
    sides: tuple[str, ...]
    codes: Callable[[], tuple[np.ndarray, np.ndarray, int, int, int]] | None = None
    same_shape = True

    def native(self, numel: int) -> tuple[np.ndarray, int, int, tuple | None]:
        if self.codes is not None:
            return ONE, numel, 0, ("coded", self.group, self.cols, *self.codes())
        steps, zeros = self.values()
        per_group = steps.size > 1 or self.rows * -(-self.cols // self.group) == 1
        zeros = None if zeros is None else np.ascontiguousarray(zeros, np.float64)
        return np.ascontiguousarray(steps, np.float64), numel, 0, ("group", self.group, self.cols, per_group, zeros)


ONE = np.ones(1)  # (the values of a job whose steps come with it)


@dataclass(frozen=True)
class Trellis:
    """dq levels (stream `stream`, coder ans) of the (rows, cols) view: the 4-state machine of
    kernels/rdoq.NEXT_STATE walks each row (each column when `by_column`) from state 0, a level
    k reconstructs 2k in states 0-1 and 2k - sgn k in 2-3, times the float64 step of its row
    (`steps`: one per row, or one)."""

    stream: str
    steps: np.ndarray
    rows: int
    cols: int
    by_column: bool
    same_shape = True
    sides = ()

    def native(self, numel: int) -> tuple[np.ndarray, int, int, tuple | None]:
        return self.steps, numel, 0, ("walk", self.cols, 2 if self.by_column else 1)


FUSED = (Affine, Lookup, Planes, Grouped, Trellis)


def batches(items: list[TensorEntry], limit: int = BATCH_BYTES) -> list[list[TensorEntry]]:
    """Consecutive entries grouped up to about `limit` decoded bytes each."""
    out, size = [[]], 0
    for e in items:
        nbytes = e.raw_bytes
        if out[-1] and size + nbytes > limit:
            out.append([])
            size = 0
        out[-1].append(e)
        size += nbytes
    return [b for b in out if b]


def fused_job(spec, e: TensorEntry, segments: dict[str, bytes], gpu: bool = False):
    """The method's fused description of entry `e` for the CPU's batched decoder (`gpu`: for the
    CUDA decoder, which takes `ans` and `ctx` streams), or None (its own decode then runs). Only payloads
    shaped as the generic decoder would accept them, coded by a coder it parses, are taken."""
    shapes = e.side.get("symbols")
    if e.dtype not in KINDS or not isinstance(shapes, dict):
        return None
    job = spec.fused(e.side, segments, e.shape, e.dtype)
    if not isinstance(job, FUSED) or set(shapes) != {job.stream, *job.sides} or not set(shapes) <= set(segments):
        return None  # (the method's own decode names what is wrong)
    coder = None if isinstance(job, Planes) else spec.coder_for(job.stream).name
    if coder is not None and coder not in (GPU_CODERS if gpu else CODERS):
        return None
    s = shapes[job.stream]
    if not (s == list(e.shape) if job.same_shape else math.prod(s) == e.numel):
        return None
    if coder == "cabac":  # a stream of the walk matrix the method's own decode expects
        trellis = (0 if job.by_column else 1) if isinstance(job, Trellis) else None
        try:
            cabac.check_stream(segments[job.stream], s, trellis)
        except ContainerError:
            return None
    return job


def outputs(entries: list[TensorEntry]) -> tuple[np.ndarray, dict[str, int]]:
    """(one block for the decoded values of `entries`, on huge pages, {name: where each starts}):
    faulting in many small arrays page by page cost about as much as decoding them (the arrays are
    views: the block lives while any of them does). The decoders fault its pages in as they write."""
    spans = [-(-e.raw_bytes // ALIGN) * ALIGN for e in entries]
    ends = np.cumsum(spans)
    block = native.engine().output_block(int(ends[-1]) if entries else 0)
    return block, {e.name: int(end) - span for e, span, end in zip(entries, spans, ends, strict=True)}


def give_back(into: tuple[np.ndarray, dict[str, int]], e: TensorEntry) -> None:
    """Return the pages of entry `e`'s slot of outputs() `into` (one no fused job filled)."""
    start = into[1][e.name]
    native.engine().discard(into[0][start : start + e.raw_bytes])


class Stream:
    """Jobs decoded on the native pool while the caller builds the next ones (native Pass): `add`
    gives a job its slot of the output block and queues it; each PART_BYTES of queued output go
    to the pass at once, which decodes them on threads - 1 threads while the caller goes on in
    Python (the next jobs, its tensors' views); `finish` makes the caller the last thread of the
    pass, then reads the results. One thread: each part decodes when it is handed over.
    `check`: a payload (who, bytes, chunk, XXH3-64 of each chunk) whose chunks the pass checks, just
    before the tasks of the job added next (or first, in the part, when no job reads it); a
    mismatch raises ContainerError naming the first such payload, before any decoding error.
    `into`: outputs() of the jobs' entries (or of more). `mapped`: the checked payloads are views of
    a read-only file mapping, whose pages the pass drops from the resident set once it decoded
    them (what Container.release does, on the pass's thread). `overlap` False (a tensor or two:
    no thread of its own is worth starting): the pass runs in `finish`. Damage raises
    ContainerError naming the tensor."""

    def __init__(self, into: tuple[np.ndarray, dict[str, int]], threads: int = 0, mapped: bool = False,
                 overlap: bool = True):
        self.block, self.starts = into
        self.native = native.engine().Pass(threads, mapped, overlap)
        self.jobs, self.outs = [], {}
        self.args, self.payloads, self.names, self.queued = [], [], [], 0  # the part not handed over yet

    def add(self, e: TensorEntry, job, payload) -> np.ndarray:
        """Queue entry `e`'s job (its fused description and payload); returns its output array
        (its values once `finish` returns). A Grouped job's side streams decode here."""
        dt = DTYPES[e.dtype]
        start = self.starts[e.name]
        flat = self.block[start : start + e.raw_bytes].view(dt)
        if isinstance(job, Planes):
            self.args.append((payload, e.numel, dt.itemsize, flat))
            self.jobs.append((e, "float"))
        else:
            coder = e.spec.coder_for(job.stream).name
            values, row_len, k, how = job.native(e.numel)
            self.args.append((payload, e.numel, np.ascontiguousarray(values, dtype=np.float64), row_len, k,
                              KINDS[e.dtype], flat, CODERS[coder], how))
            self.jobs.append((e, {"ctx": "context-coded", "cabac": "cabac-coded"}.get(coder, "entropy-coded")))
        self.outs[e.name] = out = flat.reshape(e.shape)
        self.queued += e.raw_bytes
        if self.queued >= PART_BYTES:
            self.flush()
        return out

    def check(self, who: str, view, chunk: int, sums: list[int]) -> None:
        self.payloads.append((view, chunk, sums, len(self.args)))
        self.names.append(who)

    def flush(self) -> None:
        """Hand the queued jobs to the pass."""
        if self.args or self.payloads:
            payloads = [(v, c, sums, at if at < len(self.args) else -1) for v, c, sums, at in self.payloads]
            self.native.submit(self.args, payloads)
        self.args, self.payloads, self.queued = [], [], 0

    def cancel(self) -> None:
        """Wait for the pass, its results dropped (an error on the way: nothing may hold a view of
        the file once this returns)."""
        try:
            self.native.wait()
        except Exception:  # noqa: BLE001 (the error the caller raises is the one to report)
            pass

    def finish(self) -> tuple[dict[str, np.ndarray], list[str]]:
        """Wait for the pass (helping it) -> ({name: array}, names the native decoder left to the
        method's own decode)."""
        outs, left = self.outs, []
        try:
            try:
                self.flush()
            finally:
                bad, results = self.native.wait()  # (helping it; nothing holds a view of the file after it)
            if bad >= 0:
                raise ContainerError(f"payload of {self.names[bad]} is corrupt (checksum mismatch)")
            for (e, kind), (status, error) in zip(self.jobs, results, strict=True):
                if status == 2:
                    raise ContainerError(f"{e.where}: corrupt {kind} payload: {error}")
                if status == 1:
                    give_back((self.block, self.starts), e)  # (its slot, resident when the block was a kept one)
                    del outs[e.name]
                    left.append(e.name)
        finally:
            self.jobs = self.args = self.payloads = None
        return outs, left


def decode(
    jobs: list[tuple[TensorEntry, object, bytes]], threads: int = 0,
    checks: list[tuple[str, memoryview, int, list[int], int]] = (),
    into: tuple[np.ndarray, dict[str, int]] | None = None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every job on one Stream -> ({name: array}, names the native decoder left to the method's
    own decode). `checks`: payloads (who, bytes, chunk, XXH3-64 of each chunk, index of the job
    that reads them or -1), checked on the pass just before that job's tasks (Stream.check).
    `into`: outputs() of the jobs' entries (or of more), made here if None."""
    stream = Stream(outputs([e for e, _, _ in jobs]) if into is None else into, threads, overlap=False)
    readers: dict[int, list] = {}
    for who, view, chunk, sums, reader in checks:
        readers.setdefault(reader, []).append((who, view, chunk, sums))
    try:
        for check in readers.pop(-1, []):
            stream.check(*check)
        for i, (e, job, payload) in enumerate(jobs):
            for check in readers.get(i, []):
                stream.check(*check)
            stream.add(e, job, payload)
    except BaseException:
        stream.cancel()  # (nothing may hold a view of the file once this raises)
        raise
    return stream.finish()
