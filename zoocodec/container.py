"""The .zc container: the only place that knows its byte layout.

Format version 4 (written now):
    offset 0   preamble, 64 bytes: magic b"ZOOCODEC", u32 format version, zeros
    64         payload segments, each at a 64-byte aligned offset, zero padded
    H          header: UTF-8 JSON (sorted keys), zstd-compressed, at a 64-byte aligned offset
    end - 64   trailer, 64 bytes: u64 header offset, u64 header length, u64 XXH3-64 of the
               header's bytes, b"ZCTRAILR", 32 zero bytes; right after the header (until
               2026-12-05 after 0-63 zero bytes that aligned it: readers take either)
A segment in the header is [offset, length, [XXH3-64 of each `crc_chunk`-byte chunk]]
(`crc_chunk`, a header field named when the checksum was CRC32, is 1 MiB by default), so
reading a tensor checks only its own bytes, a chunk per thread. XXH3-64 is xxHash's (seed 0;
the library is vendored whole in native/third_party/xxhash), computed by the native engine for
the writer and the readers alike, with the GIL released; a load checks them on the pass of the
native pool that decodes the payloads (plan.Stream), each just before the tasks that read it.
Nothing hashes the whole file on open; `Container.verify` (`zoocodec verify`) checks
every byte: each chunk, the zero padding, the header and the trailer.

Format version 3 (read): the same, with zlib's CRC32 in place of XXH3-64: of each chunk, and of
the header in a u32 followed by a u32 zero in the trailer. Its chunks are checked with zlib-ng's
CRC32 on Python threads (it releases the GIL) before the decode pass, not on it.

Format version 2 (read): segments are [offset, length, CRC32 of the segment] and the last
32 bytes of the trailer are the SHA-256 of every byte before them; `verify` checks it.

All integers little-endian. The header comes last so a model streams tensor by tensor
into the file; the trailer finds it. Output goes to a temp file renamed into place on
success (zoocodec.fsutil.atomic_file).
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import zstandard
from zlib_ng.zlib_ng import crc32

from zoocodec import budget, schema
from zoocodec.budget import unzstd
from zoocodec.errors import ContainerError, ZoocodecError
from zoocodec.fsutil import atomic_file
from zoocodec.header import Header, Segment

MAGIC = b"ZOOCODEC"
TRAILER_MAGIC = b"ZCTRAILR"
FORMAT_VERSION = 4
READS = (2, 3, 4)  # every version this project has written since 2; newer ones are refused
ALIGN = 64
TRAILER_SIZE = 64
MAX_HEADER = 1 << 28
CHECK_CHUNK = 1 << 20  # bytes per checksum: the unit of parallel checking
HASH_CHUNK = 8 << 20  # bytes resident at a time while a whole file is checked

# The header's zstd level by its size (~300 bytes a tensor as text, and a checksum per MiB of payload):
# level 19 runs at ~3 MB/s, 14.6 ms for minilm's 44 KB header, as long as quantizing and coding a
# quarter of its 91 MB of weights; level 12 takes 0.55 ms for 529 bytes more (of a 21 MB file).
# A header of at least 1/HEADER_SHARE of the payloads (many small tensors, few bits each: effnet-lite0's
# automatic file, 140 KB of JSON for 3.1 MB) takes 19 whatever its size: there 19 gives 16.4 KB where 12
# gave 19.2 (0.09% of the file) for 66 ms of CPU instead of 3, next to minutes of search. Every level
# is the same format.
HEADER_SMALL, HEADER_LEVEL_SMALL, HEADER_LEVEL, HEADER_SHARE = 16 << 10, 19, 12, 64


def header_level(size: int, payload: int = 0) -> int:
    """The zstd level of a header of `size` bytes of JSON text after `payload` bytes of payloads."""
    return HEADER_LEVEL_SMALL if size <= HEADER_SMALL or size * HEADER_SHARE >= payload else HEADER_LEVEL


def preamble(version: int = FORMAT_VERSION) -> bytes:
    return MAGIC + struct.pack("<I", version) + bytes(ALIGN - 12)


@cache
def _threads() -> int:
    from zoocodec.codecs import native  # the thread count every coder uses

    return native.default_threads()


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="zoocodec-check")


@cache
def _sync_file_range():
    """libc's sync_file_range (Linux), or None where there is none."""
    import ctypes
    import ctypes.util

    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).sync_file_range
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return fn


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a large payload to storage now (SYNC_FILE_RANGE_WRITE: it does not wait), so
    the fsync that publishes the file has little left to write: minilm's 21 MB, written during
    compress, left 8 ms of fsync at the end."""
    fn = _sync_file_range()
    if fn is not None:
        fn(fd, offset, length, 2)


def checksum(data, version: int = FORMAT_VERSION) -> int:
    """The checksum of a chunk (or of the header) in a file of format `version`: XXH3-64 by the
    native engine from version 4, zlib's CRC32 (by zlib-ng) before; either releases the GIL."""
    if version >= 4:
        from zoocodec.codecs import native

        return native.engine().xxh3(data)
    return crc32(data)


def chunk_sums(data, chunk: int = CHECK_CHUNK, version: int = FORMAT_VERSION) -> list[int]:
    """The checksum of each `chunk` bytes of `data` (none for empty data), chunks on threads."""
    view = memoryview(data).cast("B")
    if len(view) <= chunk:
        return [checksum(view, version)] if len(view) else []
    return list(_pool().map(lambda at: checksum(view[at : at + chunk], version), range(0, len(view), chunk)))


def trailer(header_offset: int, header: bytes, version: int = FORMAT_VERSION) -> bytes:
    """The trailer of a file of format `version` (3 or 4) whose zstd-compressed header `header`
    starts at `header_offset`."""
    if version >= 4:
        fields = struct.pack("<QQQ", header_offset, len(header), checksum(header, version))
    else:
        fields = struct.pack("<QQII", header_offset, len(header), crc32(header), 0)
    return fields + TRAILER_MAGIC + bytes(32)


class Container:
    """Write with `Container.create(path)` (a context manager): add the payloads, set `head`
    (the typed header, zoocodec/header.py) and leave the block. Read with `Container.open(path)`:
    `head` is the header validated into the typed model, `header` the same as its JSON."""

    def __init__(self, path: Path, head: Header | None, header: dict[str, Any], buffer, file=None,
                 version: int = FORMAT_VERSION):
        self.path = path
        self.head = head
        self.header = header
        self.version = version
        self._buffer = buffer
        self._file = file

    # ---- writing -------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike) -> Container:
        path = Path(path)
        output = atomic_file(path)
        tmp = output.__enter__()
        try:
            f = open(tmp, "wb")
        except OSError as e:
            output.__exit__(type(e), e, None)
            raise ZoocodecError(f"{path}: cannot write it ({e.strerror})") from None
        c = cls(path, None, {}, None, f)
        c._output = output
        c._pos = 0
        c._write(preamble())
        return c

    def _write(self, data) -> None:
        self._file.write(data)
        self._pos += len(data)

    def _pad(self) -> None:
        if self._pos % ALIGN:
            self._write(bytes(ALIGN - self._pos % ALIGN))

    def add_segment(self, data: bytes) -> Segment:
        """Append one payload; returns its Segment (offset, length, chunk checksums) for the header.
        The checksums are computed on threads while the main thread writes."""
        self._pad()
        offset = self._pos
        view = memoryview(data).cast("B")
        if len(view) > CHECK_CHUNK:
            pending = [_pool().submit(checksum, view[at : at + CHECK_CHUNK])
                       for at in range(0, len(view), CHECK_CHUNK)]
            self._write(view)
            self._file.flush()
            _start_writeback(self._file.fileno(), offset, len(view))
            sums = [p.result() for p in pending]
        else:
            self._write(view)
            sums = chunk_sums(view)
        return Segment(offset, len(view), sums)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._file is None:  # opened for reading
            self.close()
        elif exc_type is None:
            try:
                self._finish()
            except BaseException as e:
                self._file.close()
                self._output.__exit__(type(e), e, e.__traceback__)
                raise
            self._output.__exit__(None, None, None)
        else:
            self._file.close()
            self._output.__exit__(exc_type, exc, tb)

    def _finish(self) -> None:
        self._pad()
        header_offset = self._pos
        self.head = self.head.stamped(FORMAT_VERSION, CHECK_CHUNK)  # the layout's own fields
        self.header = self.head.to_json()
        text = json.dumps(self.header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        header = zstandard.ZstdCompressor(level=header_level(len(text), header_offset)).compress(text)
        self._write(header)
        self._write(trailer(header_offset, header))  # right after it: readers find it from the end
        self._file.close()

    # ---- reading -------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = False) -> Container:
        """Open and validate the layout and header; `verify` also checks every byte (see verify)."""
        path = Path(path)
        if not path.is_file():
            raise ContainerError(f"{path}: no such file")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < ALIGN + TRAILER_SIZE:
                raise ContainerError(f"{path}: too short to be a zoocodec container ({size} bytes)")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            version = cls._version(path, buf)
            head, header = cls._read_header(path, buf, size, version)
            c = cls(path, head, header, buf, version=version)
        except Exception:
            buf.close()
            raise
        if verify:
            try:
                c.verify()
            except Exception:
                c.close()
                raise
        return c

    @staticmethod
    def _version(path: Path, buf) -> int:
        if buf[:8] != MAGIC:
            raise ContainerError(f"{path}: not a zoocodec container (bad magic)")
        (version,) = struct.unpack_from("<I", buf, 8)
        if version > FORMAT_VERSION:
            raise ContainerError(f"{path}: format version {version} is newer than this zoocodec reads "
                                 f"(versions {READS[0]} to {FORMAT_VERSION}): upgrade zoocodec")
        if version not in READS:
            raise ContainerError(f"{path}: format version {version} is not supported "
                                 f"(this zoocodec reads versions {READS[0]} to {FORMAT_VERSION})")
        if buf[12:ALIGN] != bytes(ALIGN - 12):
            raise ContainerError(f"{path}: corrupt preamble")
        return version

    @staticmethod
    def _read_header(path: Path, buf, size: int, version: int) -> tuple[Header, dict[str, Any]]:
        t = size - TRAILER_SIZE
        if version >= 4:
            header_offset, header_len, header_sum = struct.unpack_from("<QQQ", buf, t)
            zero = 0
        else:
            header_offset, header_len, header_sum, zero = struct.unpack_from("<QQII", buf, t)
        if buf[t + 24 : t + 32] != TRAILER_MAGIC or zero or (version >= 3 and buf[t + 32 :] != bytes(32)):
            raise ContainerError(f"{path}: truncated or corrupt (bad trailer)")
        if header_offset % ALIGN or header_offset < ALIGN or header_len > MAX_HEADER or header_offset + header_len > t:
            raise ContainerError(f"{path}: corrupt trailer (header at {header_offset}+{header_len})")
        raw = buf[header_offset : header_offset + header_len]
        if checksum(raw, version) != header_sum:
            raise ContainerError(f"{path}: header checksum mismatch")
        text = unzstd(raw, budget.header_limit(header_len, MAX_HEADER), f"{path}: header", exact=False)
        header = schema.parse(path, text)
        try:
            return Header.from_json(header, version, header_offset, ALIGN), header
        except schema.Invalid as e:
            raise ContainerError(f"{path}: invalid header: {e}") from None

    @property
    def crc_chunk(self) -> int:
        return self.head.crc_chunk

    def segment(self, where: str, seg: Segment) -> bytes:
        """One payload (a copy), its checksums checked. `where` names it in errors (e.g. the tensor)."""
        return self.segments([(where, seg)])[0]

    def segments(self, items: Iterable[tuple[str, Segment]]) -> list[bytes]:
        """Payloads (copies), their chunks checked on threads together. `where` names each in errors."""
        items = list(items)
        copies = []
        for _, (offset, length, _) in items:
            copies.append(self._buffer[offset : offset + length])
            _release(self._buffer, offset, length)
        self._check([(where, memoryview(data), seg[2]) for (where, seg), data in zip(items, copies, strict=True)])
        return copies

    def views(self, items: Iterable[tuple[str, Segment]], check: bool = True) -> list[memoryview]:
        """Payloads as read-only views of the mapped file (no copy), their chunks checked on
        threads together (`check` False: the caller checks them, as plan.Stream does on its pass).
        Hand them back to `release` once decoded: the mapping cannot close while a view lives, and
        their pages stay resident until then."""
        items = list(items)
        with memoryview(self._buffer) as whole:
            views = [whole[offset : offset + length] for _, (offset, length, _) in items]
        try:
            if check:
                self.check(items, views)
        except BaseException:
            self.release(items, views)
            raise
        return views

    def stage(self, items: list[tuple[str, Segment]], alloc) -> tuple[np.ndarray, list[memoryview]]:
        """Payloads copied back to back, each at an ALIGN boundary, into one uint8 array from
        `alloc(size)` (page-locked memory for a device upload), their chunks checked on the copies
        as they are made (format 4: one pass of the native pool that reads the file's pages once),
        their mapped pages dropped. Returns the array and a view of each payload in it."""
        items = list(items)
        starts = np.cumsum([0] + [-(-seg[1] // ALIGN) * ALIGN for _, seg in items])
        out = alloc(max(int(starts[-1]), 1))
        with memoryview(self._buffer) as whole:
            sources = [whole[offset : offset + length] for _, (offset, length, _) in items]
        try:
            if self.version >= 4:
                from zoocodec.codecs import native

                bad = native.engine().stage([(src, self.crc_chunk, seg[2], int(at)) for (_, seg), src, at
                                             in zip(items, sources, starts[:-1], strict=True)], out)
            else:  # (checked below, on the copies)
                for src, at in zip(sources, starts[:-1], strict=True):
                    out[at : at + len(src)] = np.frombuffer(src, np.uint8)
        finally:
            self.release(items, sources)
        with memoryview(out) as whole:
            views = [whole[at : at + seg[1]] for (_, seg), at in zip(items, starts[:-1], strict=True)]
        if self.version < 4:
            self._check([(where, v, seg[2]) for (where, seg), v in zip(items, views, strict=True)])
        elif bad >= 0:
            raise self._mismatch(items[bad][0])
        return out, views

    def check(self, items: list[tuple[str, Segment]], views: list[memoryview]) -> None:
        """Raise ContainerError naming the first of `views` (of views(items, check=False)) whose
        bytes do not match their checksums."""
        self._check([(where, v, seg[2]) for (where, seg), v in zip(items, views, strict=True)])

    def release(self, items: Iterable[tuple[str, Segment]], views: list[memoryview], drop: bool = True) -> None:
        """End `views` (from views(items)) and drop their pages from this process's resident set
        (`drop` False: a decoding pass dropped them, plan.Stream's `mapped`)."""
        for v in views:
            v.release()
        if drop:
            self.drop_pages(seg for _, seg in items)

    def drop_pages(self, segments: Iterable[Segment]) -> None:
        """Drop these payloads' mapped pages from the resident set once a copy stands in for them;
        views of them stay valid (a later read faults the pages in again). Payloads less than
        HASH_CHUNK apart go in one call (a model's hundreds of small payloads: one madvise)."""
        start = end = None
        for offset, length, _ in sorted(segments, key=lambda s: s[0]):
            if start is not None and offset - end >= HASH_CHUNK:
                _release(self._buffer, start, end - start)
                start = None
            start, end = (offset, offset + length) if start is None else (start, max(end, offset + length))
        if start is not None:
            _release(self._buffer, start, end - start)

    def _check(self, views: list[tuple[str, memoryview, Any]]) -> None:
        """Raise ContainerError naming the first payload whose bytes do not match their checksums."""
        bad = self._first_bad(views)
        if bad is not None:
            raise self._mismatch(views[bad][0])

    def _mismatch(self, where: str) -> ContainerError:
        return ContainerError(f"{self.path}: payload of {where} is corrupt (checksum mismatch)")

    def _first_bad(self, views: list[tuple[str, memoryview, Any]]) -> int | None:
        """The index of the first view whose bytes do not match their checksums (all chunks checked
        before it returns: nothing holds a view afterwards). Format 4: every chunk of every view
        on one pass of the native pool (no hand-off of each chunk to a Python thread); format 3:
        a view's chunk CRC32s on the Python pool (chunk_sums), a view at a time; format 2: each
        segment's CRC32."""
        if self.version < 3:
            return next((i for i, (_, view, crc) in enumerate(views) if crc32(view) != crc), None)
        if self.version == 3:
            return next((i for i, (_, view, crcs) in enumerate(views) if chunk_sums(view, self.crc_chunk, 3) != crcs),
                        None)
        from zoocodec.codecs import native

        bad = native.engine().first_bad([(view, self.crc_chunk, sums) for _, view, sums in views])
        return None if bad < 0 else bad

    def verify(self, skip: Iterable[int] = ()) -> int:
        """Check every byte of the file; returns the bytes checked. Versions 3 and 4: each
        segment's chunks (those at offsets in `skip`, already checked as they were read, excepted)
        on threads, and that the padding between them is zeros; version 2: its SHA-256."""
        size = len(self._buffer)
        if self.version < 3:
            sha, view = hashlib.sha256(), memoryview(self._buffer)
            for start in range(0, size - 32, HASH_CHUNK):  # a chunk resident at a time
                end = min(start + HASH_CHUNK, size - 32)
                sha.update(view[start:end])
                _release(self._buffer, start, end - start)
            del view
            if sha.digest() != self._buffer[size - 32 :]:
                raise ContainerError(f"{self.path}: checksum mismatch (the file is corrupt or truncated)")
            return size
        skip = set(skip)
        every = self._segments()
        segs = sorted(((owner, key, s) for owner, key, s in every if s.offset not in skip), key=lambda s: s[2].offset)
        t = size - TRAILER_SIZE
        header_offset, header_len = struct.unpack_from("<QQ", self._buffer, t)
        spans = [(0, ALIGN)] + [(s.offset, s.length) for _, _, s in every] + [(header_offset, header_len),
                                                                                (t, TRAILER_SIZE)]
        spans.sort()
        bad = self._nonzero_padding([(a + alen, b) for (a, alen), (b, _) in pairwise(spans) if b > a + alen])
        if bad is not None:
            raise ContainerError(f"{self.path}: corrupt padding at byte {bad}")
        checked = 0
        for start in range(0, len(segs), 64):  # a batch of segments mapped at a time
            batch = [(_who(owner, key), s) for owner, key, s in segs[start : start + 64]]
            with memoryview(self._buffer) as view:
                views = [(where, view[s[0] : s[0] + s[1]], s[2]) for where, s in batch]
                bad = self._first_bad(views)
                for _, v, _ in views:
                    v.release()  # (the mapping cannot close while a view of it lives)
                del views
            if bad is not None:
                raise self._mismatch(batch[bad][0])
            for _, s in batch:
                _release(self._buffer, s[0], s[1])
                checked += s[1]
        return checked

    def _nonzero_padding(self, gaps: list[tuple[int, int]]) -> int | None:
        """The start of the first gap [start, end) that holds a non-zero byte, or None. The gaps a
        writer leaves (under ALIGN bytes each: hundreds in a model) are read in one NumPy gather;
        longer ones, which only a damaged or forged file has, a block at a time."""
        short = np.array([g for g in gaps if g[1] - g[0] < ALIGN], dtype=np.int64).reshape(-1, 2)
        if len(short):
            whole = np.frombuffer(self._buffer, dtype=np.uint8)
            try:
                at = short[:, :1] + np.arange(ALIGN)
                inside = at < short[:, 1:]
                dirty = (whole[np.where(inside, at, 0)] != 0) & inside
            finally:
                del whole  # (the mapping cannot close while an array of it lives)
            rows = np.flatnonzero(dirty.any(axis=1))
            first = int(short[rows[0], 0]) if len(rows) else None
        else:
            first = None
        for start, end in gaps:
            if end - start >= ALIGN and (first is None or start < first) and not _zeros(self._buffer, start, end):
                first = start
                break
        return first

    def _segments(self) -> list[tuple[Any, str, Segment]]:
        """Every payload segment the header names: (its tensor entry, or None for an attached file;
        its stream or file name; the segment). _who names one (hundreds of names a load never shows)."""
        out = [(e, k, s) for e in self.head.tensors for k, s in e.segments.items()]
        return out + [(None, name, s) for name, s in self.head.files.items()]

    def file_sizes(self) -> dict[str, int]:
        """Each attached file's size as its zstd frame declares it, checked against what compress attaches."""
        fmt = self.head.source.format
        sizes = {}
        for name, (offset, length, _) in self.head.files.items():
            what = f"{self.path}: attached file {name!r}"
            sizes[name] = budget.declared_size(self._buffer[offset : offset + min(length, 18)], what)
            if sizes[name] > budget.attached_limit(name, fmt):
                raise ContainerError(f"{what} claims {sizes[name]:,} bytes; compress attaches at most "
                                     f"{budget.attached_limit(name, fmt):,}")
        return sizes

    def files(self) -> dict[str, bytes]:
        """The model's attached files (ONNX graph, Hugging Face config and tokenizer), inflated."""
        sizes = self.file_sizes()
        budget.check_total(f"{self.path}: the attached files", [], sum(sizes.values()))
        return {name: unzstd(self.segment(f"file {name!r}", seg), sizes[name], f"{self.path}: attached file {name!r}")
                for name, seg in self.head.files.items()}

    def close(self) -> None:
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None


def _who(owner, key: str) -> str:
    """A segment's name in errors: its tensor and stream, or its attached file."""
    return f"file {key!r}" if owner is None else f"{owner.where} ({key})"


def _zeros(buf, start: int, end: int) -> bool:
    """Are bytes [start, end) of `buf` all zero (a block at a time)?"""
    for at in range(start, end, HASH_CHUNK):
        stop = min(at + HASH_CHUNK, end)
        if buf[at:stop].count(0) != stop - at:
            return False
    return True


def _release(buf: mmap.mmap, offset: int, length: int) -> None:
    """Drop the mapped pages of [offset, offset + length) from this process's resident set
    (the page cache keeps them): a read-only mapping read once would otherwise stay resident
    until closed, as large as the file."""
    start = offset - offset % mmap.PAGESIZE
    end = min(offset + length, len(buf))
    if end > start and hasattr(buf, "madvise"):
        buf.madvise(mmap.MADV_DONTNEED, start, end - start)
