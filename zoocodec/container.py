"""The .zc container: the only place that knows its byte layout.

    offset 0   preamble, 64 bytes: magic b"ZOOCODEC", u32 format version, zeros
    64         payload segments, each at a 64-byte aligned offset, zero padded
    H          header: UTF-8 JSON (sorted keys), zstd-compressed, at a 64-byte aligned offset
    end - 64   trailer, 64 bytes: u64 header offset, u64 header length, u32 header CRC32,
               u32 zero, b"ZCTRAILR", SHA-256 of every byte before it
All integers little-endian. The header comes last so a model streams tensor by tensor
into the file; the trailer finds it. Each segment carries a CRC32 in the header so one
tensor can be read and checked without reading the others; a full read checks the
SHA-256 of the whole file too. Output goes to a temp file renamed into place on success.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import zstandard

from zoocodec import budget
from zoocodec.budget import unzstd
from zoocodec.errors import ContainerError
from zoocodec.fsutil import plain_relpath, publish

MAGIC = b"ZOOCODEC"
TRAILER_MAGIC = b"ZCTRAILR"
FORMAT_VERSION = 2
ALIGN = 64
PREAMBLE = MAGIC + struct.pack("<I", FORMAT_VERSION) + bytes(ALIGN - 12)
TRAILER_SIZE = 64
MAX_HEADER = 1 << 28

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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
        f = os.fdopen(fd, "wb")
        c = cls(path, {}, None, f)
        c._tmp = Path(tmp)
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
            self._finish()
        else:
            self._file.close()
            self._tmp.unlink(missing_ok=True)

    def _finish(self) -> None:
        self._pad()
        header_offset = self._pos
        text = json.dumps(self.header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        header = zstandard.ZstdCompressor(level=19).compress(text)  # ~300 bytes a tensor as text: small models notice
        self._write(header)
        self._pad()
        self._write(struct.pack("<QQII", header_offset, len(header), zlib.crc32(header), 0) + TRAILER_MAGIC)
        self._file.write(self._sha.digest())
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        publish(self._tmp, self.path)

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
        if verify and hashlib.sha256(memoryview(buf)[: size - 32]).digest() != buf[size - 32 :]:
            raise ContainerError(f"{path}: checksum mismatch (the file is corrupt or truncated)")
        if header_offset % ALIGN or header_offset < ALIGN or header_len > MAX_HEADER or header_offset + header_len > t:
            raise ContainerError(f"{path}: corrupt trailer (header at {header_offset}+{header_len})")
        raw = buf[header_offset : header_offset + header_len]
        if zlib.crc32(raw) != header_crc:
            raise ContainerError(f"{path}: header checksum mismatch")
        text = unzstd(raw, budget.header_limit(header_len, MAX_HEADER), f"{path}: header", exact=False)
        try:
            header = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ContainerError(f"{path}: header is not valid JSON ({e})") from None
        except (RecursionError, MemoryError) as e:
            raise ContainerError(f"{path}: header is too deeply nested or too large ({type(e).__name__})") from None
        _validate_header(path, header, header_offset)
        return header

    def segment(self, where: str, seg: Segment) -> bytes:
        """One payload (a copy), CRC-checked. `where` names it in errors (e.g. the tensor)."""
        offset, length, crc = seg
        data = self._buffer[offset : offset + length]
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


def _validate_header(path: Path, h: Any, limit: int) -> None:
    def bad(why: str) -> ContainerError:
        return ContainerError(f"{path}: invalid header: {why}")

    if not isinstance(h, dict):
        raise bad("not an object")
    for key, kind in (("format_version", int), ("tensors", list), ("source", dict), ("files", dict)):
        if not isinstance(h.get(key), kind):
            raise bad(f"field {key!r} missing or not {kind.__name__}")
    if h["format_version"] != FORMAT_VERSION:
        raise bad(f"format_version {h['format_version']}")
    spans: list[tuple[int, int, str]] = []

    def check_segments(owner: str, segs: Any) -> None:
        if not isinstance(segs, dict):
            raise bad(f"segments of {owner} are not an object")
        for name, seg in segs.items():
            if not (isinstance(seg, list) and len(seg) == 3 and all(isinstance(v, int) and v >= 0 for v in seg)):
                raise bad(f"segment {name!r} of {owner} is malformed")
            off, length, _ = seg
            if off % ALIGN or off < ALIGN or off + length > limit:
                raise bad(f"segment {name!r} of {owner} lies outside the payload area")
            spans.append((off, length, owner))

    names = set()
    for i, t in enumerate(h["tensors"]):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise bad(f"tensor #{i} has no name")
        name = t["name"]
        if name in names:
            raise bad(f"tensor {name!r} appears twice")
        names.add(name)
        shape = t.get("shape")
        if not (isinstance(shape, list) and all(isinstance(d, int) and 0 <= d < 1 << 40 for d in shape)):
            raise bad(f"shape of {name!r} is invalid")
        for key, kind in (("dtype", str), ("method", dict), ("side", dict)):
            if not isinstance(t.get(key), kind):
                raise bad(f"field {key!r} of tensor {name!r} missing or not {kind.__name__}")
        check_segments(f"tensor {name!r}", t.get("segments"))
    check_segments("the attached files", h["files"])
    _check_output_names(h, bad)
    spans.sort()
    for (a, alen, aname), (b, _, bname) in zip(spans, spans[1:]):
        if a + alen > b:
            raise bad(f"payloads of {aname} and {bname} overlap")


def _check_output_names(h: dict, bad) -> None:
    """Every header name that becomes a path on decompress is a plain relative name, and no two collide."""
    layout = h["source"].get("layout", {})
    if not isinstance(layout, dict):
        raise bad("source layout is not an object")
    shards = layout.get("shards", {})
    if not isinstance(shards, dict) or not all(isinstance(k, str) for k in shards):
        raise bad("source layout shards are not an object")
    if not all(isinstance(v, str) for v in shards.values()):
        raise bad("source layout shards map a tensor to something that is not a name")
    shard_names = list(dict.fromkeys(shards.values()))
    names: set[str] = set()
    for kind, name in [("attached file", n) for n in h["files"]] + [("shard", s) for s in shard_names]:
        why = plain_relpath(name)
        if why is None and kind == "shard" and not name.endswith(".safetensors"):
            why = "does not end in .safetensors"
        if why:
            raise bad(f"{kind} name {name!r} {why}")
        if name in names:
            raise bad(f"{kind} name {name!r} is used twice")
        names.add(name)
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in names:
                raise bad(f"{name!r} lies inside {'/'.join(parts[:i])!r}, which is a file")
