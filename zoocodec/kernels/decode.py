"""Decode into GPU memory: uniform + ans payloads, entropy decoding and dequantization fused
in one CUDA kernel (decode.cu), the result handed to torch through DLPack.

The host parses each stream's frame (zoocodec/codecs/ans.py mode byte, `lo`, the native
rANS header of zoocodec/codecs/native/rans.h: count, alphabet, precision, frequency table,
substream lengths) with the same checks as the native decoder, builds the slot tables,
and copies only the compressed substreams to the device. One launch decodes every
substream of every tensor given (eight threads per substream); the output is the
tensor's native float bits, equal to what the CPU decoder writes.

Payloads this kernel does not take (other methods and coders, the packed-zstd mode,
alphabets wider than 2^16) return None: the caller decodes them on the host and copies.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoocodec.codecs.wire import Reader
from zoocodec.errors import ContainerError

THREADS = 256  # per block: 32 substreams
KINDS = {"float32": ("rans_dequant_f32", np.float32), "float16": ("rans_dequant_f16", np.float16),
         "bfloat16": ("rans_dequant_bf16", np.uint16)}
TENSOR = np.dtype([("out_start", "<u8"), ("row_len", "<u8"), ("lo", "<i8"), ("table", "<u4"), ("L", "<u4"),
                   ("steps", "<u4"), ("rows", "<u4")])  # struct Tensor of decode.cu (40 bytes)
MAX_NSYM = 1 << 16


@dataclass
class Stream:
    """One tensor's parsed stream: the model and where its substreams lie in `data`."""

    count: int
    lo: int
    L: int  # 0: every symbol is `lo`
    freq: np.ndarray  # L > 0: uint32 frequencies summing to 2^L
    chunk: int
    lengths: list[int]
    data: memoryview  # the substreams, back to back


def parse(data, count: int, what: str) -> Stream | None:
    """The ans payload of `count` symbols, or None when it is not in the GPU's mode (packed, k > 0)."""
    r = Reader(data, what)
    if r.byte() != 0:  # PACKED
        return None
    lo = r.svarint()
    if r.byte() != 0:  # wide alphabet: top bits coded, low bits raw
        return None
    n = r.uvarint()
    if n != count:
        raise r.fail(f"holds {n} symbols, expected {count}")
    nsym = r.uvarint(limit=MAX_NSYM)
    if nsym < 1:
        raise r.fail("empty alphabet")
    if n == 0:
        return Stream(0, lo, 0, np.zeros(0, np.uint32), 1, [], memoryview(b""))
    L = r.byte()
    if L > 16:
        raise r.fail("probability precision over 16 bits")
    if L == 0:
        constant = r.uvarint(limit=nsym - 1)
        r.done()
        return Stream(n, lo + constant, 0, np.zeros(0, np.uint32), 1 << 16, [], memoryview(b""))
    M = 1 << L
    freq = np.zeros(nsym, np.uint32)
    s = total = 0
    while s < nsym:
        f = r.uvarint(limit=M - 1)
        if f == 0:
            run = r.uvarint(limit=nsym) + 1
            if run > nsym - s:
                raise r.fail("frequency table overruns its alphabet")
            s += run
        else:
            freq[s] = f
            s += 1
            total += f
            if total > M:
                raise r.fail("frequencies exceed the precision")
    if total != M:
        raise r.fail("frequencies do not sum to 2^L")
    chunk = r.uvarint()
    if chunk < 1:
        raise r.fail("zero substream size")
    parts = (n - 1) // chunk + 1
    if parts > len(r.data):
        raise r.fail("more substreams than bytes")
    lengths = [r.uvarint(limit=(1 << 32) - 1) for _ in range(parts)]
    for i, length in enumerate(lengths):
        m = min(chunk, n - i * chunk)
        if length < 4 * (8 if m >= 4096 else 1) or length % 2:
            raise r.fail("substream of a bad length")
    body = r.take(sum(lengths))
    r.done()
    return Stream(n, lo, L, freq, chunk, lengths, body)


def slot_table(freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(freq | bias << 16, symbol) per slot of a 2^L table, as the native decoder builds it."""
    sym = np.repeat(np.arange(freq.size, dtype=np.uint32), freq)
    starts = np.cumsum(freq, dtype=np.uint64) - freq
    bias = np.arange(sym.size, dtype=np.uint64) - np.repeat(starts, freq)
    return (freq[sym].astype(np.uint32) | (bias.astype(np.uint32) << 16)), sym.astype(np.uint16)


@dataclass
class Job:
    """One tensor to decode on the GPU: its stream, steps (float64, one per row) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    stream: Stream
    steps: np.ndarray


def job(archive, name: str) -> Job | None:
    """The GPU decode job of one tensor of an open Archive, or None when the kernel does not take it."""
    from zoocodec.codecs.ans import Ans  # noqa: PLC0415
    from zoocodec.methods import Quantized, spec_from_dict  # noqa: PLC0415
    from zoocodec.methods.uniform import Uniform, load_steps  # noqa: PLC0415

    e = archive.entries[name]
    if e.get("dtype") not in KINDS or not isinstance(e.get("method"), dict) or e["method"].get("method") != "uniform":
        return None
    where = f"{archive.container.path}: tensor {name!r}"
    try:
        spec = spec_from_dict(e["method"])
    except Exception as err:  # noqa: BLE001  (the host path raises the proper error)
        raise ContainerError(f"{where}: {err}") from None
    if not isinstance(spec, Uniform) or not isinstance(spec.coder, Ans) or set(e["segments"]) - {"symbols", "steps"}:
        return None
    shape = tuple(e["shape"])
    segments = {k: archive.container.segment(f"tensor {name!r}", tuple(v)) for k, v in e["segments"].items()}
    if "symbols" not in segments:
        raise ContainerError(f"{where}: symbol stream 'symbols' is missing")
    try:
        steps = load_steps(Quantized({}, e["side"], segments), shape, "uniform").astype(np.float64)
        stream = parse(segments["symbols"], math.prod(shape), f"{where}: entropy-coded payload")
    except ContainerError as err:
        raise ContainerError(f"{where}: {err}") from None
    if stream is None:
        return None
    return Job(name, shape, e["dtype"], stream, steps)


@functools.cache
def _module():
    import cupy  # noqa: PLC0415  (GPU only)

    return cupy.RawModule(code=Path(__file__).with_name("decode.cu").read_text(), options=("-std=c++17",))


def run(jobs: list[Job], what: str = "GPU decode") -> list:
    """Decode every job (all of one dtype) in one launch -> CuPy arrays of their shapes, views of one buffer."""
    import cupy  # noqa: PLC0415

    if not jobs:
        return []
    kernel_name, out_dtype = KINDS[jobs[0].dtype]
    assert all(j.dtype == jobs[0].dtype for j in jobs)
    tensors = np.zeros(len(jobs), TENSOR)
    tables, syms, steps, blobs = [], [], [], []
    sub_off, sub_len, sub_first, sub_count, tensor_of = [], [], [], [], []
    out_at = table_at = steps_at = data_at = 0
    for t, j in enumerate(jobs):
        s = j.stream
        numel = math.prod(j.shape)
        rows = len(j.steps)
        tensors[t] = (out_at, numel // rows if rows > 1 else max(numel, 1), s.lo, table_at, s.L, steps_at, rows)
        if s.L:
            fb, sy = slot_table(s.freq)
            tables.append(fb)
            syms.append(sy)
            table_at += fb.size
        steps.append(j.steps)
        steps_at += rows
        blobs.append(s.data)
        offsets = np.concatenate([[0], np.cumsum(s.lengths, dtype=np.uint64)[:-1]]) if s.lengths else []
        chunk = s.chunk
        for i in range(-(-s.count // chunk) if s.count else 0):
            sub_off.append(data_at + (int(offsets[i]) if s.lengths else 0))
            sub_len.append(s.lengths[i] if s.lengths else 0)
            sub_first.append(i * chunk)
            sub_count.append(min(chunk, s.count - i * chunk))
            tensor_of.append(t)
        data_at += len(s.data)
        out_at += numel
    nsub = len(sub_off)
    out = cupy.empty(out_at, dtype=out_dtype)
    if nsub:
        host = _pinned(blobs, data_at)  # kept until the kernel has run (the .get() of `bad` below waits)
        data = cupy.empty(host.shape, dtype=np.uint8)
        data.set(host)  # one DMA from page-locked memory, in order on the current stream
        dev = {
            "data": data,
            "sub_off": cupy.asarray(np.asarray(sub_off, np.uint64)),
            "sub_len": cupy.asarray(np.asarray(sub_len, np.uint32)),
            "sub_first": cupy.asarray(np.asarray(sub_first, np.uint64)),
            "sub_count": cupy.asarray(np.asarray(sub_count, np.uint32)),
            "tensor_of": cupy.asarray(np.asarray(tensor_of, np.uint32)),
            "tensors": cupy.asarray(tensors.view(np.uint8)),
            "slots": cupy.asarray(np.concatenate(tables) if tables else np.zeros(1, np.uint32)),
            "syms": cupy.asarray(np.concatenate(syms) if syms else np.zeros(1, np.uint16)),
            "steps": cupy.asarray(np.concatenate(steps)),
        }
        bad = cupy.zeros(nsub, dtype=np.int32)
        blocks = -(-nsub * 8 // THREADS)
        _module().get_function(kernel_name)(
            (blocks,), (THREADS,),
            (dev["data"], dev["sub_off"], dev["sub_len"], dev["sub_first"], dev["sub_count"], dev["tensor_of"],
             dev["tensors"], dev["slots"], dev["syms"], dev["steps"], out, bad, np.uint64(nsub)))
        broken = cupy.flatnonzero(bad).get()
        if broken.size:
            raise ContainerError(f"{what}: tensor {jobs[tensor_of[int(broken[0])]].name!r}: corrupt rANS substream "
                                 f"{sub_first[int(broken[0])] // jobs[tensor_of[int(broken[0])]].stream.chunk}")
    views, at = [], 0
    for j in jobs:
        numel = math.prod(j.shape)
        views.append(out[at:at + numel].reshape(j.shape))
        at += numel
    return views


def _pinned(blobs: list, size: int) -> np.ndarray:
    """The compressed substreams back to back in one page-locked host buffer (one copy from the file's pages)."""
    import cupyx  # noqa: PLC0415  (GPU only)

    host = cupyx.empty_pinned((max(size, 1),), dtype=np.uint8)
    at = 0
    for b in blobs:
        host[at : at + len(b)] = np.frombuffer(b, np.uint8)
        at += len(b)
    return host


def to_torch(array, dtype: str):
    """A CuPy array -> a torch CUDA tensor on the same memory (DLPack; bfloat16 from its uint16 bits)."""
    import torch  # noqa: PLC0415

    t = torch.from_dlpack(array)
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


def tensor(archive, name: str):
    """One tensor decoded on the current CUDA device as torch, or None when the kernel does not take it."""
    j = job(archive, name)
    if j is None:
        return None
    return to_torch(run([j], str(archive.container.path))[0], j.dtype)


def tensors(archive, names: list[str]) -> dict:
    """Every tensor of `names` the kernel takes, decoded in one launch per dtype: {name: torch CUDA tensor}."""
    jobs: dict[str, list[Job]] = {}
    for name in names:
        j = job(archive, name)
        if j is not None:
            jobs.setdefault(j.dtype, []).append(j)
    out = {}
    for dtype, group in jobs.items():
        for j, a in zip(group, run(group, str(archive.container.path))):
            out[j.name] = to_torch(a, dtype)
    return out
