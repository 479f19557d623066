"""The .zc container: the only place that knows its byte layout.

    offset 0   preamble, 64 bytes: magic b"ZOOCODEC", u32 format version, zeros
    64         payload segments, each at a 64-byte aligned offset, zero padded
    H          header: UTF-8 JSON (sorted keys), zstd-compressed, at a 64-byte aligned offset
    end - 64   trailer, 64 bytes: u64 header offset, u64 header length, u32 header CRC32,
               u32 zero, b"ZCTRAILR", SHA-256 of every byte before it
All integers little-endian. The header comes last so a model streams tensor by tensor
into the file; the trailer finds it. Each segment carries a CRC32 in the header so one
tensor can be read and checked without reading the others; a full read checks the
SHA-256 of the whole file too. Output goes to a temp file renamed into place on success
(zoocodec.fsutil.atomic_file).
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import zstandard

from zoocodec import budget, schema
from zoocodec.budget import unzstd
from zoocodec.errors import ContainerError, ZoocodecError
from zoocodec.fsutil import atomic_file

MAGIC = b"ZOOCODEC"
TRAILER_MAGIC = b"ZCTRAILR"
FORMAT_VERSION = 2
ALIGN = 64
PREAMBLE = MAGIC + struct.pack("<I", FORMAT_VERSION) + bytes(ALIGN - 12)
TRAILER_SIZE = 64
MAX_HEADER = 1 << 28
HASH_CHUNK = 8 << 20  # bytes hashed (and resident) at a time when the whole file is checked

Segment = tuple[int, int, int]  # offset, length, crc32


class Container:
    """Write with `Container.create(path)` (a context manager), read with `Container.open(path)`."""

    def __init__(self, path: Path, header: dict[str, Any], buffer, file=None):
        self.path = path
        self.header = header
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
        c = cls(path, {}, None, f)
        c._output = output
        c._sha = hashlib.sha256()
        c._pos = 0
        c._write(PREAMBLE)
        return c

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._sha.update(data)
        self._pos += len(data)

    def _pad(self) -> None:
        if self._pos % ALIGN:
            self._write(bytes(ALIGN - self._pos % ALIGN))

    def add_segment(self, data: bytes) -> Segment:
        """Append one payload; returns (offset, length, crc32) for the header."""
        self._pad()
        offset = self._pos
        self._write(data)
        return offset, len(data), zlib.crc32(data)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
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
        text = json.dumps(self.header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        header = zstandard.ZstdCompressor(level=19).compress(text)  # ~300 bytes a tensor as text: small models notice
        self._write(header)
        self._pad()
        self._write(struct.pack("<QQII", header_offset, len(header), zlib.crc32(header), 0) + TRAILER_MAGIC)
        self._file.write(self._sha.digest())
        self._file.close()

    # ---- reading -------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> Container:
        """Open and validate the layout; `verify` also checks the whole file's SHA-256."""
        path = Path(path)
        if not path.is_file():
            raise ContainerError(f"{path}: no such file")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < ALIGN + TRAILER_SIZE:
                raise ContainerError(f"{path}: too short to be a zoocodec container ({size} bytes)")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            return cls(path, cls._read_header(path, buf, size, verify), buf)
        except Exception:
            buf.close()
            raise

    @staticmethod
    def _read_header(path: Path, buf, size: int, verify: bool) -> dict[str, Any]:
        if buf[:8] != MAGIC:
            raise ContainerError(f"{path}: not a zoocodec container (bad magic)")
        (version,) = struct.unpack_from("<I", buf, 8)
        if version != FORMAT_VERSION:
            raise ContainerError(f"{path}: format version {version} is not supported (this zoocodec reads {FORMAT_VERSION})")
        if buf[12:ALIGN] != bytes(ALIGN - 12):
            raise ContainerError(f"{path}: corrupt preamble")
        t = size - TRAILER_SIZE
        header_offset, header_len, header_crc, zero = struct.unpack_from("<QQII", buf, t)
        if buf[t + 24 : t + 32] != TRAILER_MAGIC or zero:
            raise ContainerError(f"{path}: truncated or corrupt (bad trailer)")
        if verify:  # hashed a chunk at a time, each released once read (not the whole file resident)
            sha, view = hashlib.sha256(), memoryview(buf)
            for start in range(0, size - 32, HASH_CHUNK):
                end = min(start + HASH_CHUNK, size - 32)
                sha.update(view[start:end])
                _release(buf, start, end - start)
            del view
            digest = sha.digest()
            if digest != buf[size - 32 :]:
                raise ContainerError(f"{path}: checksum mismatch (the file is corrupt or truncated)")
        if header_offset % ALIGN or header_offset < ALIGN or header_len > MAX_HEADER or header_offset + header_len > t:
            raise ContainerError(f"{path}: corrupt trailer (header at {header_offset}+{header_len})")
        raw = buf[header_offset : header_offset + header_len]
        if zlib.crc32(raw) != header_crc:
            raise ContainerError(f"{path}: header checksum mismatch")
        text = unzstd(raw, budget.header_limit(header_len, MAX_HEADER), f"{path}: header", exact=False)
        header = schema.parse(path, text)
        schema.validate(path, header, FORMAT_VERSION, header_offset, ALIGN)
        return header

    def segment(self, where: str, seg: Segment) -> bytes:
        """One payload (a copy), CRC-checked. `where` names it in errors (e.g. the tensor)."""
        offset, length, crc = seg
        data = self._buffer[offset : offset + length]
        _release(self._buffer, offset, length)
        if zlib.crc32(data) != crc:
            raise ContainerError(f"{self.path}: payload of {where} is corrupt (CRC mismatch)")
        return data

    def file_sizes(self) -> dict[str, int]:
        """Each attached file's size as its zstd frame declares it, checked against what compress attaches."""
        fmt = self.header["source"].get("format")
        sizes = {}
        for name, (offset, length, _) in self.header["files"].items():
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
        return {name: unzstd(self.segment(f"file {name!r}", tuple(seg)), sizes[name],
                             f"{self.path}: attached file {name!r}")
                for name, seg in self.header["files"].items()}

    def close(self) -> None:
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None


def _release(buf: mmap.mmap, offset: int, length: int) -> None:
    """Drop the mapped pages of [offset, offset + length) from this process's resident set
    (the page cache keeps them): a read-only mapping read once would otherwise stay resident
    until closed, as large as the file."""
    start = offset - offset % mmap.PAGESIZE
    end = min(offset + length, len(buf))
    if end > start and hasattr(buf, "madvise"):
        buf.madvise(mmap.MADV_DONTNEED, start, end - start)
