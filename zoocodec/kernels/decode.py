"""Decode into GPU memory: the payloads whose methods declare a fused decoder
(MethodSpec.fused -> zoocodec.plan: Affine, symbols of an `ans` stream times a step per row,
uniform at 2-16 bits and rdoq; Lookup, a codebook per problem, kmeans; Grouped, a step and
zero point per group of a row, uniform group=G; Trellis, dq levels walked by its state
machine; Planes, lossless float planes: rANS planes as symbols of a byte, Huffman planes one
thread a substream), entropy decoding and dequantization fused in CUDA kernels (decode.cu),
the result handed to torch through DLPack.

The payloads of every tensor taken are copied once, checked as they are copied, into one
page-locked buffer (Container.stage) that goes to the device in one DMA (Staged): every kernel
reads its substreams at their offsets there. The frame is parsed from that buffer by the native
engine's one parser of the ans frame (ans_frame.h, the same code the CPU decoder runs); the host
builds the slot tables. One launch decodes every substream of every tensor given (eight threads
per substream). Packed frames (ans.py's zstd of plain ints, chosen for
flat alphabets such as 16-bit symbols) are inflated on the host by ans.unpack and
dequantized on the device. dq levels decode to 16-bit indices first (or stay a packed
frame's ints), then two launches walk the state machine as a scan (decode.cu, dq_maps and
dq_values). The output is the tensor's native float bits, equal to what the CPU decoder writes.

`ctx` payloads (codecs/context.py) are parsed by the CPU decoder's parser (ctx_frame.cpp):
each context's stream decodes to 16-bit indices in the same launch as every other context's,
then a stable sort of the positions by context (computed on the device from the row and column
classes, or the group ends) puts each level in its place (place()), and the levels dequantize as
a packed frame's do. Frames with raw low bits (alphabets wider than 2^16) upload those bits beside the substreams.
Payloads no method declares fused (other methods and coders, dtypes other than float32,
float16 and bfloat16) return None: the caller decodes them on the host and copies.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import native
from zoocodec.codecs.wire import Reader
from zoocodec.errors import ContainerError
from zoocodec.kernels.backend import cuda_source
from zoocodec.methods.arrays import from_float64

THREADS = 256  # per block: 32 substreams
KINDS = {"float32": ("rans_dequant_f32", np.float32), "float16": ("rans_dequant_f16", np.float16),
         "bfloat16": ("rans_dequant_bf16", np.uint16)}
PACKED_KERNELS = {"float32": "packed_dequant_f32", "float16": "packed_dequant_f16", "bfloat16": "packed_dequant_bf16"}
DQ_KERNELS = {"float32": "dq_values_f32", "float16": "dq_values_f16", "bfloat16": "dq_values_bf16"}
NO_ZEROS = 0xFFFFFFFF
# struct Tensor of decode.cu (72 bytes)
TENSOR = np.dtype([("out_start", "<u8"), ("row_len", "<u8"), ("lo", "<i8"), ("low", "<u8"), ("table", "<u4"),
                   ("L", "<u4"), ("steps", "<u4"), ("rows", "<u4"), ("k", "<u4"), ("group", "<u4"),
                   ("groups", "<u4"), ("zeros", "<u4"), ("shift", "<u4"), ("side", "<u4")])
NO_STEPS = np.zeros(0)  # (a Job whose group values come from its side codes)
MAX_SHIFT = 48  # raw low bits per symbol the kernels take (ans.encode writes at most 48)
# struct DqTensor of decode.cu (64 bytes)
DQ_TENSOR = np.dtype([("out_start", "<u8"), ("src", "<u8"), ("seg_start", "<u8"), ("rows", "<u8"), ("cols", "<u8"),
                      ("lo", "<i8"), ("width", "<u4"), ("by_column", "<u4"), ("steps", "<u4"), ("nsteps", "<u4")])
DQ_SEGMENT = 256  # levels of a walk per thread of dq_maps / dq_values
MAX_NSYM = 1 << 16


@dataclass
class Stream:
    """One tensor's parsed rANS stream: the model and where its substreams lie in `data`; with
    `shift` > 0 (alphabets wider than 2^16) the coded symbols are the top bits and `low` holds
    each symbol's `shift` low bits, packed little-endian."""

    count: int
    lo: int
    L: int  # 0: every symbol is `lo`
    freq: np.ndarray  # L > 0: uint32 frequencies summing to 2^L
    chunk: int
    lengths: list[int]
    data: memoryview  # the substreams, back to back
    shift: int = 0
    low: bytes | memoryview = b""


@dataclass
class Packed:
    """One tensor's packed frame, inflated: symbol i = lo + the unsigned int of `width` bytes at i
    (`raw` bytes on the host, or a device array: a ctx payload's placed levels)."""

    count: int
    lo: int
    width: int
    raw: bytes


KNOWN_LO, KNOWN_HI = 4, 5  # ctx_frame.h: group ends' positions whose level the side information gives
CTX_ENDS, CTX_COLS = 2, 2  # ctx_frame.h: the group-ends mode, the layout bit of column classes


@dataclass
class Contexts:
    """One tensor's `ctx` payload of contexts or group ends, parsed by the native parser: each
    context's Stream (its lo the context's origin; None where no position has that context) and
    the side information that gives every position its context (context_map)."""

    count: int
    mode: int
    rows: int
    cols: int
    layout: int
    row_base: np.ndarray  # per row: its class + 2 * MAX_CLASS (an index into lut)
    col_class: np.ndarray  # per column (layout with columns), else empty
    lut: np.ndarray  # the context of each row base + column class
    group: int  # group ends: the group, its lowest and highest level, and per (row, group)
    lo: int  # the first place of each (the group where it has none)
    hi: int
    first_lo: np.ndarray
    first_hi: np.ndarray
    counts: np.ndarray  # positions per context, then the known lowest and highest ones
    low: int  # the payload's lowest and highest level (the parser's, which refuses spans over 2^16)
    high: int
    streams: list


def parse(data, count: int, what: str) -> Stream | Packed | None:
    """The ans payload of `count` symbols (rANS frames by the native parser, the others by
    codecs/ans.py's), or None when it has more raw low bits than MAX_SHIFT."""
    from zoocodec.codecs import ans

    eng = native.engine()
    try:
        frame = eng.ans_frame(data, count)
        if frame is not None:
            return _stream(data, count, *frame)
        r = Reader(data, what)
        if r.byte() == ans.PACKED:
            lo, width, raw = ans.unpack(r, count)
            return Packed(count, lo, width, raw)
        lo, shift, body, low = ans.wide(r, count)  # rANS of the top bits, then raw low bits
        if not 0 < shift <= MAX_SHIFT:
            return None
        stream = _stream(body, count, *eng.rans_frame(body, count))
        stream.lo += lo
    except eng.CorruptStream as e:
        raise ContainerError(f"corrupt {what}: {e}") from None
    stream.shift, stream.low = shift, low
    if stream.L == 0:  # the constant's top bits: (c << shift | low) + lo == (low) + (lo + c << shift)
        stream.lo = _wrap(lo + ((stream.lo - lo) << shift))
    return stream


def parse_ctx(data, count: int, what: str) -> Stream | Packed | Contexts | None:
    """A `ctx` payload of `count` symbols: an order-0 one as parse() reads the ans payload after
    its mode byte, the others as Contexts (the CPU's parser, counts and checks)."""
    eng = native.engine()
    try:
        frame = eng.ctx_frame(data, count)
    except eng.CorruptStream as e:
        raise ContainerError(f"corrupt {what}: {e}") from None
    if frame is None:
        return parse(memoryview(data)[1:], count, what)
    *head, counts, (low, high), streams = frame
    return Contexts(count, *head, counts, low, high,
                    [None if f is None else _stream(data, int(counts[c]), *f) for c, f in enumerate(streams)])


def context_map(c: Contexts, xp=np):
    """Each position's context (uint8, row-major), as ctx_frame.cpp's contexts() gives it: lut[row
    base + column class]; group ends: KNOWN_LO / KNOWN_HI at a group's first lowest and highest
    level, else 1 before the first lowest + 2 before the first highest."""
    if c.mode == CTX_ENDS:
        col = xp.arange(c.cols, dtype=xp.int64)
        pos = (col % c.group)[None, :]
        groups = -(-c.cols // c.group)
        first_lo = xp.asarray(c.first_lo).reshape(c.rows, groups)[:, col // c.group].astype(xp.int32)
        first_hi = xp.asarray(c.first_hi).reshape(c.rows, groups)[:, col // c.group].astype(xp.int32)
        ctx = (pos < first_lo).astype(xp.uint8) + 2 * (pos < first_hi).astype(xp.uint8)
        ctx[pos == first_lo] = KNOWN_LO
        ctx[pos == first_hi] = KNOWN_HI
        return ctx.reshape(-1)
    at = xp.asarray(c.row_base, dtype=xp.int32)[:, None]
    if c.layout & CTX_COLS:
        at = at + xp.asarray(c.col_class, dtype=xp.int32)[None, :]
    return xp.broadcast_to(xp.asarray(c.lut)[at], (c.rows, c.cols)).reshape(-1)


def place(c: Contexts, indices, xp=np):
    """Each position's level minus c.low (uint16, row-major), from `indices`: the 16-bit indices
    of the contexts that have a coded stream, back to back in context order (rans_index's output).
    Each context's stream holds its positions in row-major order (the encoder's `flat[ctx == c]`),
    so a stable sort of the positions by context lists, in order, the places of context 0's
    levels, then context 1's, ..., then group ends' known lowest and highest levels."""
    low = c.low
    ordered = xp.empty(c.count, dtype=xp.uint16)
    at = pos = 0
    for s in c.streams:
        if s is None:
            continue
        if s.L:
            ordered[pos : pos + s.count] = indices[at : at + s.count] + xp.uint16(s.lo - low)
            at += s.count
        else:
            ordered[pos : pos + s.count] = s.lo - low
        pos += s.count
    k = len(c.streams)
    for level, n in ((c.lo, int(c.counts[k])), (c.hi, int(c.counts[k + 1]))):
        ordered[pos : pos + n] = level - low
        pos += n
    out = xp.empty(c.count, dtype=xp.uint16)
    out[xp.argsort(context_map(c, xp), kind="stable")] = ordered
    return out


def _stream(data, count: int, lo: int, L: int, constant: int, freq, chunk: int, offsets, lengths) -> Stream:
    """A Stream from the native parser's frame tuple (ans_frame, or rans_frame with lo 0)."""
    if L == 0:  # a constant: no coded bits
        return Stream(count, lo + constant, 0, np.zeros(0, np.uint32), 1 << 16, [], memoryview(b""))
    start = int(offsets[0]) if len(offsets) else 0
    return Stream(count, lo, L, freq, chunk, [int(x) for x in lengths],
                  memoryview(data)[start : start + int(lengths.sum(dtype=np.uint64))])


def _wrap(v: int) -> int:
    """v as a two's complement int64 (what the kernels' 64-bit arithmetic and NumPy's make of it)."""
    return (v + (1 << 63)) % (1 << 64) - (1 << 63)


def slot_table(freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(freq | bias << 16, symbol) per slot of a 2^L table, as the native decoder builds it (built natively:
    in NumPy it was a third of the host's time on models of many small tensors)."""
    return native.engine().slot_table(np.ascontiguousarray(freq, np.uint32))


@dataclass(frozen=True)
class Side:
    """Group steps and zero points coded at `mant` mantissa bits (uniform:side=M): each group's step code and
    centre, signed ints as narrow as they decoded, from which the kernel computes the group's values as the
    CPU does (quantize.h's SideValues). Checked on the host (side_range, refusing what the CPU's pass refuses
    with its message), which gives the largest step and |zero point| for check_range. (Float64 arrays of the
    values were 16 bytes a group to make and upload; these are 2-4.)"""

    codes: np.ndarray
    centres: np.ndarray
    mant: int
    bits: int
    largest_step: float
    largest_zero: float

    @classmethod
    def checked(cls, codes: np.ndarray, centres: np.ndarray, mant: int, bits: int, max_exponent: int) -> Side:
        ok, step, zero = native.engine().side_range(codes, centres, mant, bits, max_exponent)
        if not ok:
            raise ContainerError("group step codes or centres give steps or zero points out of range")
        return cls(codes, centres, mant, bits, step, zero)

    @functools.cached_property
    def words(self) -> np.ndarray:
        """The codes' bytes then the centres', each padded to whole doubles: the float64 words of `steps`
        that carry them."""
        out = np.zeros(self.centres_at + -(-self.centres.nbytes // 8), np.float64)
        raw = out.view(np.uint8)
        raw[:self.codes.nbytes] = self.codes.view(np.uint8)
        raw[8 * self.centres_at:8 * self.centres_at + self.centres.nbytes] = self.centres.view(np.uint8)
        return out

    @property
    def centres_at(self) -> int:
        """The centres' offset in `words`."""
        return -(-self.codes.nbytes // 8)

    @property
    def descriptor(self) -> int:
        """decode.cu's Tensor.side."""
        return self.mant | self.bits << 8 | self.codes.itemsize << 16 | self.centres.itemsize << 24


@dataclass
class Job:
    """One tensor to decode on the GPU: its stream, dtype, and values (float64): one step per
    row (k 0), or k codebook values per row; `row_len` elements a row (0: numel / rows). With
    `group` > 0 (Grouped): one step per group of `group` weights of a row of `row_len`, or
    one step, and `zeros` per group or None; or, with `side`, each group's coded side values
    (steps then empty)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    stream: Stream | Packed
    steps: np.ndarray
    k: int = 0
    row_len: int = 0
    group: int = 0
    zeros: np.ndarray | None = None
    side: Side | None = None

    @property
    def rows(self) -> int:
        """The steps (codebooks) it has: 1, or one per row (per group)."""
        if self.side is not None:
            return len(self.side.codes)
        return len(self.steps) // self.k if self.k else len(self.steps)

    @property
    def groups(self) -> int:
        return -(-self.row_length // self.group) if self.group else 0

    def record(self, out_at: int, table_at: int, steps_at: int, low_at: int = 0) -> tuple:
        """Its struct Tensor of decode.cu, the output at `out_at`, its slot table, steps (then
        zeros, or the side codes' words) and raw low bits at those offsets."""
        s = self.stream
        if self.side is not None:
            zeros, side = steps_at + self.side.centres_at, self.side.descriptor
        else:
            zeros, side = NO_ZEROS if self.zeros is None else steps_at + len(self.steps), 0
        coded = isinstance(s, Stream)
        return (out_at, self.row_length, s.lo, low_at, table_at, s.L if coded else 0, steps_at, self.rows, self.k,
                self.group, self.groups, zeros, s.shift if coded else 0, side)

    def values(self) -> np.ndarray:
        """Its steps, then its zeros (or its side codes' words): what the kernel reads from `steps`."""
        if self.side is not None:
            return self.side.words
        return self.steps if self.zeros is None else np.concatenate([self.steps, self.zeros])

    @property
    def row_length(self) -> int:
        numel = math.prod(self.shape)
        return self.row_len or (numel // self.rows if self.rows > 1 else max(numel, 1))


@dataclass
class TrellisJob:
    """One tensor of dq levels: its stream, dtype, float64 steps (one per row of the (rows,
    cols) view, or one), and whether the state machine walks the columns."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    stream: Stream | Packed
    steps: np.ndarray
    rows: int
    cols: int
    by_column: bool

    @property
    def width(self) -> int:
        """Bytes per level index on the device: rans_index writes 16 bits (rans_index64 64 with
        raw low bits), a packed frame keeps its own."""
        if isinstance(self.stream, Packed):
            return self.stream.width
        return 8 if self.stream.shift else 2

    @property
    def segments(self) -> int:
        walks, length = (self.cols, self.rows) if self.by_column else (self.rows, self.cols)
        return walks * -(-length // DQ_SEGMENT) if self.rows * self.cols else 0


@dataclass
class Huffman:
    """One float plane's canonical Huffman stream (native/huffman.h), parsed by the CPU's parser:
    its one-symbol table by 12-bit slot (symbol | code length << 8) and its substreams, back to back
    in `data`, of `chunk` symbols each (the last shorter)."""

    count: int
    chunk: int
    table: np.ndarray
    lengths: list[int]
    data: memoryview


@dataclass
class PlanesJob:
    """One lossless float tensor: its byte planes, top first, each a rANS Stream (lo 0), a
    Huffman stream, or a view of the plane's bytes (raw: staged; or inflated from zstd on the host)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    planes: list


def parse_planes(data, count: int, dtype: str, what: str) -> list:
    """A float-plane payload's planes (codecs/floatplanes.frame, the CPU's parser; rANS and Huffman
    planes by the native ones), as PlanesJob holds them."""
    from zoocodec.codecs import floatplanes
    from zoocodec.methods.lossless import bits_dtype

    eng = native.engine()
    planes = []
    for mode, body in floatplanes.frame(data, count, bits_dtype(dtype), huffman=True):
        if mode == floatplanes.RAW:
            planes.append(body)  # (a view of the staged bytes, or a plane inflated from zstd)
            continue
        try:
            if mode == floatplanes.HUFFMAN:
                chunk, table, offsets, lengths = eng.huff_frame(body, count)
                start = int(offsets[0])
                planes.append(Huffman(count, chunk, table, [int(x) for x in lengths],
                                      memoryview(body)[start : start + int(lengths.sum(dtype=np.uint64))]))
            else:
                planes.append(_stream(body, count, *eng.rans_frame(body, count)))
        except eng.CorruptStream as e:
            raise ContainerError(f"corrupt {what}: {e}") from None
    return planes


@dataclass
class Staged:
    """Compressed bytes in one page-locked host buffer, uploaded to the device once: every kernel
    reads its substreams at their offsets in `device`. `regions`: (host address, length, offset in
    `host`) of each stretch staged, by address: the one buffer of a load's payloads (jobs()), or
    each blob gather() copied."""

    host: np.ndarray
    regions: list[tuple[int, int, int]]
    _device: object = None

    @classmethod
    def gather(cls, blobs: list, alloc=None) -> Staged:
        """`blobs` (views of payloads: jobs parsed on their own) copied back to back (into `alloc`'s buffer)."""
        blobs = [b for b in blobs if len(b)]
        host, at, regions = (alloc or _page_locked)(sum(len(b) for b in blobs)), 0, []
        for b in blobs:
            host[at : at + len(b)] = np.frombuffer(b, np.uint8)
            regions.append((_address(b), len(b), at))
            at += len(b)
        return cls(host, sorted(regions))

    def at(self, view) -> int | None:
        """Where `view`'s bytes are in `host` (and `device`), or None where they were not staged."""
        if not len(view):
            return 0
        address = _address(view)
        i = bisect.bisect_right(self.regions, (address, math.inf)) - 1
        if i < 0 or address + len(view) > self.regions[i][0] + self.regions[i][1]:
            return None
        return self.regions[i][2] + address - self.regions[i][0]

    @property
    def device(self):
        """The buffer on the device (one copy from page-locked memory, on the current stream, the first time)."""
        if self._device is None:
            import cupy

            self._device = cupy.empty(self.host.shape, dtype=np.uint8)
            self._device.set(self.host)
        return self._device


def _address(view) -> int:
    return np.frombuffer(view, np.uint8).ctypes.data


def _page_locked(size: int) -> np.ndarray:
    import cupyx  # GPU only

    return cupyx.empty_pinned((max(size, 1),), dtype=np.uint8)


def jobs(archive, names: list[str], alloc=None) -> tuple[Staged, list]:
    """The GPU decode jobs of the tensors of `names` whose methods declare a fused decoder these
    kernels take (zoocodec/plan.py), parsed from their payloads as Container.stage copied them
    into one page-locked buffer (each file page read once: copied, checksummed from cache; `alloc`
    makes another buffer, as the NumPy emulation does); the others are left to the host."""

    container, taken = archive.container, []
    for name in names:
        e = archive.plan[name]
        if e.dtype not in KINDS:
            continue
        items = [(e.where, s) for s in e.segments.values()]
        views = container.views(items, check=False)
        try:
            takes, ctx = _takes(e, dict(zip(e.segments, views, strict=True)))
        finally:
            container.release(items, views, drop=False)
        if takes:
            taken.append((e, items, ctx))
    host, views = container.stage([item for _, items, _ in taken for item in items], alloc or _page_locked)
    given, at = [], 0
    for e, items, ctx in taken:
        given.append((e, dict(zip(e.segments, views[at : at + len(items)], strict=True)), ctx))
        at += len(items)
    # ctx payloads on threads (their native parser, side information and counts per group, lets go
    # of the GIL: 0.2 s a 0.5B-weight model of 32-weight groups); the others here (a thread each costs more)
    pending = {i: _parsers().submit(_job, archive, e, segments) for i, (e, segments, ctx) in enumerate(given) if ctx}
    found = [pending[i].result() if i in pending else _job(archive, e, segments)
             for i, (e, segments, _) in enumerate(given)]
    return Staged(host, [(_address(host), host.size, 0)]), [j for j in found if j is not None]


def _takes(e, segments: dict) -> tuple[bool, bool]:
    """(whether the kernels take entry `e`, whether as a ctx payload), its payloads not yet checked;
    a method's error counts as taken, so the staging's check names a corrupt payload first."""
    from zoocodec import plan

    try:
        fused = plan.fused_job(e.spec, e, segments, gpu=True)
    except Exception:  # noqa: BLE001  (_job raises it again once the payloads are checked)
        return True, False
    return fused is not None, fused is not None and e.spec.coder_for(fused.stream).name == "ctx"


@functools.cache
def _parsers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=native.default_threads(), thread_name_prefix="zoocodec-gpu-jobs")


def _job(archive, e, segments: dict) -> Job | PlanesJob | TrellisJob | None:
    """Entry `e`'s job from its (checked) payloads, or None."""
    from zoocodec import plan

    where = f"{archive.container.path}: {e.where}"
    spec = e.spec  # (parsed and checked with the header)
    try:
        fused = plan.fused_job(spec, e, segments, gpu=True)
    except Exception as err:  # noqa: BLE001  (a spec or side info the host path refuses the same way)
        raise ContainerError(f"{where}: {err}") from None
    if fused is None:
        return None
    if isinstance(fused, plan.Planes):
        return PlanesJob(e.name, e.shape, e.dtype, parse_planes(segments[fused.stream], e.numel, e.dtype,
                                                              f"{where}: float payload"))
    parser = parse_ctx if spec.coder_for(fused.stream).name == "ctx" else parse
    stream = parser(segments[fused.stream], e.numel, f"{where}: entropy-coded payload")
    if stream is None:
        return None
    if isinstance(fused, plan.Trellis):
        out = TrellisJob(e.name, e.shape, e.dtype, stream, fused.steps, fused.rows, fused.cols, fused.by_column)
    elif isinstance(fused, plan.Grouped):
        try:
            if fused.codes is not None:
                out = Job(e.name, e.shape, e.dtype, stream, NO_STEPS, 0, fused.cols, fused.group,
                          side=Side.checked(*fused.codes()))
            else:
                steps, zeros = fused.values()
                out = Job(e.name, e.shape, e.dtype, stream, steps, 0, fused.cols, fused.group, zeros)
        except ContainerError as err:
            raise ContainerError(f"{where}: {err}") from None
    else:
        values, row_len, k, _ = fused.native(e.numel)
        out = Job(e.name, e.shape, e.dtype, stream, values, k, row_len if k else 0)
    check_range(out, where)
    return out


def symbol_bound(s: Stream | Packed | Contexts) -> int:
    """The largest |lo + symbol| a stream can hold (its alphabet, with a wide frame's raw low bits)."""
    if isinstance(s, Contexts):
        return max(abs(s.low), abs(s.high))
    if isinstance(s, Packed):
        high = s.lo + (1 << (8 * s.width)) - 1
    elif s.L == 0:
        high = s.lo
    else:
        high = s.lo + ((len(s.freq) - 1) << s.shift | ((1 << s.shift) - 1))
    return max(abs(s.lo), abs(high))


def check_range(job: Job | TrellisJob, where: str) -> None:
    """Every value `job` can write is finite in its dtype, or ContainerError: a forged step, zero point
    or codebook value would write infinities (compress never stores a value outside the dtype's range;
    the CPU's native pass refuses the same, plan.cpp's check_range). A dq level is at most twice its
    symbol; a group's value is its symbol times its step plus its zero point."""
    if isinstance(job, Job) and job.side is not None:
        top = float(symbol_bound(job.stream)) * job.side.largest_step + job.side.largest_zero
    else:
        values = np.abs(np.asarray(job.steps, dtype=np.float64))
        if isinstance(job, Job) and job.k:
            top = float(values.max()) if values.size else 0.0
        else:
            scale = 2.0 if isinstance(job, TrellisJob) else 1.0
            with np.errstate(over="ignore", invalid="ignore"):
                top = scale * float(symbol_bound(job.stream)) * (float(values.max()) if values.size else 0.0)
                if isinstance(job, Job) and job.zeros is not None and job.zeros.size:
                    top += float(np.abs(job.zeros).max())
    if not finite_in(top, job.dtype):
        raise ContainerError(f"{where}: its values lie outside the {job.dtype} range (forged side information)")


def finite_in(v: float, dtype: str) -> bool:
    """Whether float64 `v` stays finite rounded to `dtype` as the decoders round it (methods/arrays.from_float64;
    bfloat16 as its bits), NaN not."""
    with np.errstate(over="ignore", invalid="ignore"):
        r = from_float64(np.array([v], dtype=np.float64), dtype)[0]
    return bool(r & 0x7F80 != 0x7F80) if dtype == "bfloat16" else bool(np.isfinite(r))


@functools.cache
def _module():
    import cupy  # GPU only

    return cupy.RawModule(code=cuda_source("decode.cu"), options=("-std=c++17",))


def run(jobs: list[Job], what: str = "GPU decode", staged: Staged | None = None) -> list:
    """Decode every job (all of one dtype) -> CuPy arrays of their shapes, views of one buffer: the
    rANS streams in one launch, each packed one in a launch of its own. `staged`: where their
    substreams are (by default gathered from the jobs)."""
    import cupy

    if not jobs:
        return []
    staged = staged or Staged.gather(_blobs(jobs))
    jobs = _placed(jobs, what, staged)
    kernel_name, out_dtype = KINDS[jobs[0].dtype]
    assert all(j.dtype == jobs[0].dtype for j in jobs)
    numels = [math.prod(j.shape) for j in jobs]
    starts = [int(x) for x in np.cumsum([0] + numels)]  # where each tensor starts, then the total
    out = cupy.empty(starts[-1], dtype=out_dtype)
    for j, at in zip(jobs, starts[:-1], strict=True):
        if isinstance(j.stream, Packed):
            _packed_launch(j, out[at:], what)
    _launch([(j, at) for j, at in zip(jobs, starts[:-1], strict=True) if isinstance(j.stream, Stream)],
            kernel_name, out, what, staged)
    return [out[at:at + n].reshape(j.shape) for j, at, n in zip(jobs, starts[:-1], numels, strict=True)]


def _launch(coded: list[tuple[Job, int]], kernel_name: str, out, what: str, staged: Staged) -> None:
    """One launch of `kernel_name` over every substream of the rANS-coded jobs (read where
    `staged` holds them), each writing at its element offset of `out`; a damaged substream raises
    ContainerError naming its tensor."""
    import cupy

    if not coded:
        return
    tensors = np.zeros(len(coded), TENSOR)
    tables, syms, steps, lows, subs = [], [], [], [], []
    table_at = steps_at = low_at = 0
    for t, (j, out_at) in enumerate(coded):
        s = j.stream
        tensors[t] = j.record(out_at, table_at, steps_at, low_at)
        lows.append(s.low)
        low_at += len(s.low)
        if s.L:
            fb, sy = slot_table(s.freq)
            tables.append(fb)
            syms.append(sy)
            table_at += fb.size
        values = j.values()
        steps.append(values)
        steps_at += len(values)
        subs.append(_substreams(s, staged, t))
    sub_off, sub_len, sub_first, sub_count, tensor_of = (np.concatenate(column) for column in zip(*subs, strict=True))
    nsub = len(sub_off)
    if not nsub:
        return
    dev = {
        "data": staged.device,
        "sub_off": cupy.asarray(sub_off),
        "sub_len": cupy.asarray(sub_len),
        "sub_first": cupy.asarray(sub_first),
        "sub_count": cupy.asarray(sub_count),
        "tensor_of": cupy.asarray(tensor_of),
        "tensors": cupy.asarray(tensors.view(np.uint8)),
        "slots": cupy.asarray(np.concatenate(tables) if tables else np.zeros(1, np.uint32)),
        "syms": cupy.asarray(np.concatenate(syms) if syms else np.zeros(1, np.uint16)),
        "steps": cupy.asarray(np.concatenate(steps).astype(np.float64, copy=False)),
        "low": cupy.asarray(np.frombuffer(b"".join(lows) + bytes(8), np.uint8)),  # padded: low_bits reads 8 bytes
    }
    bad = cupy.zeros(nsub, dtype=np.int32)
    blocks = -(-nsub * 8 // THREADS)
    _module().get_function(kernel_name)(
        (blocks,), (THREADS,),
        (dev["data"], dev["sub_off"], dev["sub_len"], dev["sub_first"], dev["sub_count"], dev["tensor_of"],
         dev["tensors"], dev["slots"], dev["syms"], dev["steps"], dev["low"], out, bad, np.uint64(nsub)))
    broken = cupy.flatnonzero(bad).get()
    if broken.size:
        j = coded[int(tensor_of[int(broken[0])])][0]
        raise ContainerError(f"{what}: tensor {j.name!r}: corrupt rANS substream "
                             f"{sub_first[int(broken[0])] // j.stream.chunk}")


def _substreams(s: Stream | Huffman, staged: Staged, t: int = 0) -> tuple[np.ndarray, ...]:
    """The substreams of `s` as the kernels take them: where each starts in the staged bytes, its
    length, its first symbol and its symbol count, and `t` (its tensor) for each."""
    n = -(-s.count // s.chunk) if s.count else 0
    first = np.arange(n, dtype=np.uint64) * np.uint64(s.chunk)
    count = np.minimum(np.uint64(s.chunk), np.uint64(s.count) - first).astype(np.uint32)
    lengths = np.asarray(s.lengths, np.uint64) if s.lengths else np.zeros(n, np.uint64)
    at = staged.at(s.data)
    assert at is not None, "substreams outside the staged bytes"
    offsets = np.uint64(at) + np.cumsum(lengths) - lengths
    return offsets, lengths.astype(np.uint32), first, count, np.full(n, t, np.uint32)


def trellis_layout(jobs: list[TrellisJob]) -> tuple[np.ndarray, list[int], int, int]:
    """(struct DqTensor records of the non-empty jobs, each job's byte offset in the index
    buffer, its size (a multiple of 8), the segments in all); outputs back to back, steps back to back."""
    records, srcs = [], []
    src = out_at = steps_at = seg_at = 0
    for j in jobs:
        numel = math.prod(j.shape)
        src = -(-src // 8) * 8
        srcs.append(src)
        if j.segments:
            records.append((out_at, src, seg_at, j.rows, j.cols, j.stream.lo, j.width, int(j.by_column), steps_at,
                            len(j.steps)))
        src += numel * j.width
        out_at += numel
        steps_at += len(j.steps)
        seg_at += j.segments
    return np.array(records, DQ_TENSOR), srcs, max(-(-src // 8) * 8, 8), seg_at  # (viewed as uint16 and uint64)


def run_trellis(jobs: list[TrellisJob], what: str = "GPU decode", staged: Staged | None = None) -> list:
    """dq tensors (all of one dtype) -> CuPy arrays of their shapes: the rANS streams decoded to
    16-bit indices in one launch (packed frames' ints uploaded as they are), then dq_maps and
    dq_values over every segment of every tensor (decode.cu)."""
    import cupy

    if not jobs:
        return []
    staged = staged or Staged.gather(_blobs(jobs))
    jobs = _placed(jobs, what, staged)
    out_dtype = KINDS[jobs[0].dtype][1]
    assert all(j.dtype == jobs[0].dtype for j in jobs)
    records, srcs, size, nseg = trellis_layout(jobs)
    idx = cupy.zeros(size, dtype=np.uint8)
    narrow, wide = [], []
    for j, src in zip(jobs, srcs, strict=True):
        if isinstance(j.stream, Packed):
            raw = _on_device(j.stream.raw)
            idx[src:src + raw.size] = raw
        else:  # (rans_index ignores the steps)
            (wide if j.stream.shift else narrow).append(
                (Job(j.name, j.shape, j.dtype, j.stream, np.ones(1)), src // j.width))
    _launch(narrow, "rans_index", idx.view(np.uint16), what, staged)
    _launch(wide, "rans_index64", idx.view(np.uint64), what, staged)
    numels = [math.prod(j.shape) for j in jobs]
    starts = [int(x) for x in np.cumsum([0] + numels)]
    out = cupy.empty(starts[-1], dtype=out_dtype)
    if nseg:
        ts = cupy.asarray(records.view(np.uint8))
        maps = cupy.empty(nseg, dtype=np.uint8)
        steps = cupy.asarray(np.concatenate([np.asarray(j.steps, np.float64) for j in jobs]))
        blocks = (-(-nseg // THREADS),)
        args = (idx, ts, np.uint32(len(records)), np.uint64(nseg), np.uint32(DQ_SEGMENT), maps)
        _module().get_function("dq_maps")(blocks, (THREADS,), args)
        _module().get_function(DQ_KERNELS[jobs[0].dtype])(blocks, (THREADS,), (*args, steps, out))
    return [out[at:at + n].reshape(j.shape) for j, at, n in zip(jobs, starts[:-1], numels, strict=True)]


def run_planes(jobs: list[PlanesJob], what: str = "GPU decode", staged: Staged | None = None) -> list:
    """Lossless float tensors (all of one dtype): each rANS-coded plane decoded by rans_bytes and
    each Huffman one by huff_bytes (a launch a plane) into one buffer of planes, raw planes copied
    in (on the device from the staged bytes; uploaded where inflated from zstd on the host), then
    a merge launch per tensor -> CuPy arrays of their shapes (bfloat16 as uint16 bits)."""
    import cupy

    if not jobs:
        return []
    staged = staged or Staged.gather(_blobs(jobs))
    out_dtype = KINDS[jobs[0].dtype][1]
    width = np.dtype(out_dtype).itemsize
    numels = [math.prod(j.shape) for j in jobs]
    starts = [int(x) for x in np.cumsum([0] + [width * n for n in numels])]  # starts, then the total
    planes = cupy.empty(max(starts[-1], 1), dtype=np.uint8)
    coded, huffman = [], []
    for j, at, n in zip(jobs, starts[:-1], numels, strict=True):
        for k, p in enumerate(j.planes):
            if isinstance(p, Stream):  # decoded below, symbol = byte
                coded.append((Job(j.name, (n,), "float32", p, np.ones(1)), at + k * n))
            elif isinstance(p, Huffman):
                huffman.append((j.name, p, at + k * n))
            elif n:
                plane, src = planes[at + k * n : at + (k + 1) * n], staged.at(p)
                if src is None:
                    plane.set(np.frombuffer(p, np.uint8))
                else:
                    plane[...] = staged.device[src : src + n]
    _launch(coded, "rans_bytes", planes, what, staged)
    _huff_launch(huffman, planes, what, staged)
    out, views = cupy.empty(sum(numels), dtype=out_dtype), []
    merge = _module().get_function("planes_merge4" if width == 4 else "planes_merge2")
    at_out = 0
    for j, at, n in zip(jobs, starts[:-1], numels, strict=True):
        if n:
            merge((min(-(-n // THREADS), 65535),), (THREADS,),
                  (planes[at:], np.uint64(n), out[at_out:].view(np.uint32 if width == 4 else np.uint16)))
        views.append(out[at_out : at_out + n].reshape(j.shape))
        at_out += n
    return views


def _packed_launch(j: Job, out, what: str) -> None:
    """One packed tensor: its inflated ints uploaded, dequantized into `out` (a view at its start)."""
    import cupy

    p, numel = j.stream, math.prod(j.shape)
    if not numel:
        return
    raw = _on_device(p.raw)
    steps = cupy.asarray(np.ascontiguousarray(j.values(), np.float64))
    record = cupy.asarray(np.array([j.record(0, 0, 0)], TENSOR).view(np.uint8))
    bad = cupy.zeros(1, dtype=np.int32)
    blocks = min(-(-numel // THREADS), 65535)
    _module().get_function(PACKED_KERNELS[j.dtype])(
        (blocks,), (THREADS,), (raw, np.uint32(p.width), np.uint64(numel), record, steps, out, bad))
    if int(bad.get()[0]):
        raise ContainerError(f"{what}: tensor {j.name!r}: codebook index out of range")


def huff_layout(planes: list[tuple[str, Huffman, int]], staged: Staged) -> tuple[np.ndarray, ...]:
    """The substreams of the Huffman `planes` ((tensor, plane, its byte offset in the output)) for one
    huff_bytes launch: each plane's from the start of a block (a block holds one plane's table in
    shared memory), padded to whole blocks with empty substreams; then the planes' tables back to
    back, and each block's plane."""
    columns, tables, block_plane = [], [], []
    for i, (_, h, at) in enumerate(planes):
        offsets, lengths, first, count, _ = _substreams(h, staged)
        pad = -len(offsets) % THREADS
        columns.append([np.concatenate([c, np.zeros(pad, c.dtype)]) for c in (offsets, lengths, first + np.uint64(at),
                                                                              count)])
        tables.append(h.table)
        block_plane += [i] * ((len(offsets) + pad) // THREADS)
    sub_off, sub_len, sub_first, sub_count = (np.concatenate(c) for c in zip(*columns, strict=True))
    return sub_off, sub_len, sub_first, sub_count, np.concatenate(tables), np.asarray(block_plane, np.uint32)


def _huff_launch(planes: list[tuple[str, Huffman, int]], out, what: str, staged: Staged) -> None:
    """Every Huffman plane of `planes` (as huff_layout takes them) in one huff_bytes launch, into `out`."""
    import cupy

    if not planes:
        return
    sub_off, sub_len, sub_first, sub_count, tables, block_plane = huff_layout(planes, staged)
    if not block_plane.size:
        return
    bad = cupy.zeros(len(sub_off), dtype=np.int32)
    _module().get_function("huff_bytes")(
        (len(block_plane),), (THREADS,),
        (staged.device, cupy.asarray(sub_off), cupy.asarray(sub_len), cupy.asarray(sub_first), cupy.asarray(sub_count),
         cupy.asarray(tables), cupy.asarray(block_plane), out, bad, np.uint64(len(sub_off))))
    broken = cupy.flatnonzero(bad).get()
    if broken.size:
        block = int(broken[0]) // THREADS
        plane = int(block_plane[block])
        first = int(np.searchsorted(block_plane, plane)) * THREADS
        raise ContainerError(
            f"{what}: tensor {planes[plane][0]!r}: corrupt Huffman substream {int(broken[0]) - first}")


def _on_device(raw):
    """A packed frame's bytes as a device uint8 array (uploaded from the host, or a view of a device array)."""
    import cupy

    if isinstance(raw, (bytes, bytearray, memoryview)):
        return cupy.asarray(np.frombuffer(raw, np.uint8))
    return raw.view(np.uint8)


def _placed(jobs: list, what: str, staged: Staged) -> list:
    """`jobs` with each Contexts stream turned into a Packed frame of device levels: every coded
    context of every such job in one rans_index launch, then place() on the device."""
    import cupy

    ctx = [j for j in jobs if isinstance(j.stream, Contexts)]
    if not ctx:
        return jobs
    coded, at = [], 0
    for j in ctx:
        for s in j.stream.streams:
            if s is not None and s.L:
                coded.append((Job(j.name, (s.count,), "float32", s, np.ones(1)), at))  # (rans_index ignores steps)
                at += s.count
    indices = cupy.empty(max(at, 1), dtype=np.uint16)
    _launch(coded, "rans_index", indices, what, staged)
    placed, at = {}, 0
    for j in ctx:
        c = j.stream
        n = sum(s.count for s in c.streams if s is not None and s.L)
        placed[id(j)] = Packed(c.count, c.low, 2, place(c, indices[at : at + n], cupy))
        at += n
    return [dataclasses.replace(j, stream=placed[id(j)]) if id(j) in placed else j for j in jobs]


def _blobs(jobs: list) -> list:
    """The compressed bytes the kernels read for `jobs` (what Staged.gather copies)."""
    out = []
    for j in jobs:
        for p in j.planes if isinstance(j, PlanesJob) else [j.stream]:
            if isinstance(p, Contexts):
                out += [c.data for c in p.streams if c is not None]
            elif isinstance(p, (Stream, Huffman)):
                out.append(p.data)
    return out


def to_torch(array, dtype: str):
    """A CuPy array -> a torch CUDA tensor on the same memory (DLPack; bfloat16 from its uint16 bits)."""
    import torch

    t = torch.from_dlpack(array)
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


RUNS = {Job: run, PlanesJob: run_planes, TrellisJob: run_trellis}


def tensor(archive, name: str):
    """One tensor decoded on the current CUDA device as torch, or None when the kernel does not take it."""
    return tensors(archive, [name]).get(name)


def tensors(archive, names: list[str]) -> dict:
    """Every tensor of `names` the kernel takes, decoded in one launch per dtype and kind from one
    upload of their payloads: {name: torch CUDA tensor}."""
    staged, found = jobs(archive, names)
    groups: dict[tuple[str, type], list] = {}
    for j in found:
        groups.setdefault((j.dtype, type(j)), []).append(j)
    out = {}
    for (dtype, kind), group in groups.items():
        for j, a in zip(group, RUNS[kind](group, str(archive.container.path), staged), strict=True):
            out[j.name] = to_torch(a, dtype)
    return out
