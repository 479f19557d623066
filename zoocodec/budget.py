"""What reading a .zc file may cost: the one place that judges a file's size claims.

A header claims sizes (its own, each tensor's shape and dtype, the attached files) that a
forger can set freely while recomputing every checksum. Before anything is decoded they
are checked against what the file's bytes can honestly hold and against the user's
memory budget (`--max-memory`, default half of the machine's memory); every zstd frame
is checked for the size it declares before it is inflated (python-zstandard's
`max_output_size` is ignored by frames that declare a size).
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import Iterator
from contextvars import ContextVar

import zstandard

from zoocodec.errors import ContainerError, ZoocodecError

DEFAULT_FRACTION = 0.5
# Peak bytes per weight while one tensor decodes (int64 symbols, float64 values, the output)
# on top of the tensors already decoded: measured 28-36 for fp32 (issue 16), rounded up.
DECODE_BYTES_PER_WEIGHT = 40
# A zstd-19 header is about 4x smaller than its JSON; 64x (plus a floor) is beyond any real one.
HEADER_MAX_EXPANSION = 64
HEADER_FLOOR = 1 << 20
# JSON text becomes Python objects about 10x its size.
JSON_OBJECT_FACTOR = 10
# compress attaches a folder's files up to this size each; an ONNX graph up to protobuf's 2 GiB.
ATTACHED_FILE_LIMIT = 16 << 20
ONNX_GRAPH_LIMIT = 2 << 30

_limit: ContextVar[int | None] = ContextVar("zoocodec_max_memory", default=None)


@functools.cache
def machine_memory() -> int:
    """Physical memory, or the cgroup's limit where that is lower (read once: every tensor's
    check asks, and reading the cgroup's files cost 0.3 ms a time)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            total = min(total, int(open(f).read().strip()))
    return total


def max_memory() -> int:
    """The budget in force: the innermost `limit()`, else DEFAULT_FRACTION of the machine."""
    return _limit.get() or int(machine_memory() * DEFAULT_FRACTION)


@contextlib.contextmanager
def limit(max_bytes: int | None) -> Iterator[None]:
    """Decode under `max_bytes` of memory (None: the default) within this block."""
    token = _limit.set(max_bytes)
    try:
        yield
    finally:
        _limit.reset(token)


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'8G', '512M', '1.5g', '4096', or 'P%' of the machine's memory -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%|[kKmMgGtT]?)i?[bB]?\s*", text or "")
    if not m:
        raise ZoocodecError(f"--max-memory: {text!r} is not a size (e.g. 8G, 512M, 50%)")
    value, unit = float(m.group(1)), m.group(2).lower()
    size = int(machine_memory() * value / 100) if unit == "%" else int(value * _UNITS[unit])
    if size < 1 << 20:
        raise ZoocodecError(f"--max-memory: {text!r} is less than 1 MiB")
    return size


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def over(what: str, claim: int, allowed: int) -> ContainerError:
    return ContainerError(f"{what} would take {_human(claim)} of memory to decode, more than the budget of "
                          f"{_human(allowed)} (--max-memory)")


_local = threading.local()


def _dctx() -> zstandard.ZstdDecompressor:
    """One decompressor per thread, made once: making one cost 10 us, most of a small frame's time."""
    if not hasattr(_local, "dctx"):
        _local.dctx = zstandard.ZstdDecompressor()
    return _local.dctx


def unzstd(data, size: int, what: str, exact: bool = True) -> bytes:
    """Inflate one zstd frame to `size` bytes (`exact`) or at most `size`, never beyond it.

    The frame's declared content size is checked first; a frame that declares none is
    streamed through a reader bounded at `size`.
    """
    data = bytes(data)
    try:
        declared = zstandard.get_frame_parameters(data).content_size
        if declared == zstandard.CONTENTSIZE_UNKNOWN:
            out = zstandard.ZstdDecompressor().stream_reader(data).read(size + 1)
        elif declared > size or (exact and declared != size):
            raise ContainerError(f"{what}: zstd frame declares {declared:,} bytes, expected "
                                 f"{'' if exact else 'at most '}{size:,}")
        else:
            out = _dctx().decompress(data, max_output_size=max(size, 1))
    except zstandard.ZstdError as e:
        raise ContainerError(f"{what}: zstd: {e}") from None
    except MemoryError:
        raise ContainerError(f"{what}: out of memory inflating {_human(size)}") from None
    if len(out) > size or (exact and len(out) != size):
        raise ContainerError(f"{what}: inflates to {'more than ' if len(out) > size else ''}"
                             f"{min(len(out), size):,} bytes, expected {'' if exact else 'at most '}{size:,}")
    return out


def unzstd_into(data, out: memoryview, what: str) -> None:
    """Inflate one zstd frame into `out`, which it must fill exactly: unzstd's checks without a
    new bytes object, so `out` can lie on huge pages (a fresh 12 MB bytes object faulted in page
    by page cost more than inflating into it)."""
    size = len(out)
    try:
        declared = zstandard.get_frame_parameters(data).content_size
        if declared not in (zstandard.CONTENTSIZE_UNKNOWN, size):
            raise ContainerError(f"{what}: zstd frame declares {declared:,} bytes, expected {size:,}")
        got, extra = 0, b""
        with _dctx().stream_reader(data) as reader:
            while got < size:
                step = reader.readinto(out[got:])
                if not step:
                    break
                got += step
            extra = reader.read(1)
    except zstandard.ZstdError as e:
        raise ContainerError(f"{what}: zstd: {e}") from None
    if got != size or extra:
        raise ContainerError(f"{what}: inflates to {'more than ' if extra else ''}{got:,} bytes, expected {size:,}")


def header_limit(compressed: int, hard_limit: int) -> int:
    """How large the header's JSON may be, given its compressed size and the budget."""
    honest = max(HEADER_FLOOR, HEADER_MAX_EXPANSION * compressed)
    return min(honest, hard_limit, max_memory() // JSON_OBJECT_FACTOR)


def tensor_cost(numel: int, itemsize: int) -> int:
    """Peak memory of decoding one tensor (its temporaries, the output included)."""
    return numel * max(DECODE_BYTES_PER_WEIGHT, itemsize)


def check_tensor(what: str, numel: int, itemsize: int, held: int = 0) -> None:
    """Refuse to decode a tensor whose claimed size would take memory past the budget."""
    budget = max_memory()
    cost = tensor_cost(numel, itemsize)
    if held + cost > budget:
        raise over(f"{what} ({numel:,} weights)", held + cost, budget)


def over_tensor(numel: int, itemsize: int) -> bool:
    """Would check_tensor refuse this tensor (a quick test for hundreds of them)?"""
    return tensor_cost(numel, itemsize) > max_memory()


def check_total(what: str, tensors: list[tuple[int, int]], files: int) -> None:
    """Refuse a whole decode (every tensor held, `files` attached bytes) that would pass the budget."""
    budget = max_memory()
    held = sum(n * size for n, size in tensors) + files
    peak = held + max((tensor_cost(n, size) for n, size in tensors), default=0)
    if peak > budget:
        raise over(what, peak, budget)


def attached_limit(name: str, source_format: str) -> int:
    """The largest an attached file can honestly be: what compress attaches."""
    return ONNX_GRAPH_LIMIT if source_format == "onnx" and name == "model.onnx" else ATTACHED_FILE_LIMIT


def declared_size(data, what: str) -> int:
    """The content size a zstd frame declares (compress always declares it)."""
    try:
        size = zstandard.get_frame_parameters(bytes(data[:18])).content_size
    except zstandard.ZstdError as e:
        raise ContainerError(f"{what}: zstd: {e}") from None
    if size in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
        raise ContainerError(f"{what}: zstd frame does not declare its size")
    return size
