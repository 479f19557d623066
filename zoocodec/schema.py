"""The .zc header's schema, checked in one place when a file is opened.

Every field a reader uses is checked for its JSON type and range here, so decoding code
can trust the header's shape: a forged header (checksums recomputed) fails with one
ContainerError naming the field. Payload bytes are the coders' to validate; method
parameters are checked for their JSON types here and for their ranges by the spec.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import types
import typing
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from zoocodec.errors import ContainerError, ZoocodecError
from zoocodec.fsutil import plain_relpath

MAX_DEPTH = 64  # our headers nest about 8 deep; json.loads recurses once per level
MAX_DIMS = 32
MAX_DIM = 1 << 40
SOURCE_FORMATS = ("safetensors", "pytorch", "hf", "onnx", "dict")
DTYPES = ("float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")
CHECKPOINT_NESTS = (None, "state_dict", "model", "model_state_dict")
SEQUENCE_MODES = ("video", "delta", "independent")


class Invalid(Exception):
    """A schema violation; `parse` turns it into a ContainerError naming the file."""


def parse(path: Path, text: bytes) -> Any:
    """The header's JSON, refusing nesting beyond MAX_DEPTH before the parser recurses, and NaN/Infinity."""
    if _depth(text) > MAX_DEPTH:
        raise ContainerError(f"{path}: invalid header: nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, Invalid) as e:
        raise ContainerError(f"{path}: header is not valid JSON ({e})") from None
    except (RecursionError, MemoryError) as e:
        raise ContainerError(f"{path}: header is too deeply nested or too large ({type(e).__name__})") from None


def _no_constant(name: str):
    raise Invalid(f"{name} is not JSON")


def _depth(text: bytes) -> int:
    """Deepest nesting of [ and { outside strings."""
    stripped = re.sub(rb'"(?:[^"\\]|\\.)*"', b"", re.sub(rb"\s+", b"", text))
    a = np.frombuffer(stripped, dtype=np.uint8)
    step = (a == ord("[")).astype(np.int32) + (a == ord("{")) - (a == ord("]")) - (a == ord("}"))
    return int(np.cumsum(step).max(initial=0))


def validate(path: Path, h: Any, format_version: int, payload_end: int, align: int) -> None:
    """Check the whole header of a file of `format_version` (2 or 3: the segments' checksums
    differ, see zoocodec/container.py); raise ContainerError('PATH: invalid header: WHY')."""
    try:
        _header(h, format_version, payload_end, align)
    except Invalid as e:
        raise ContainerError(f"{path}: invalid header: {e}") from None


def _obj(v: Any, what: str) -> dict:
    if not isinstance(v, dict):
        raise Invalid(f"{what} is not an object")
    return v


def _int(v: Any, what: str, lo: int = 0, hi: int = 1 << 63) -> int:
    if type(v) is not int or not lo <= v < hi:
        raise Invalid(f"{what} is not an integer in [{lo}, {hi})")
    return v


def _str(v: Any, what: str, optional: bool = False) -> str | None:
    if not (isinstance(v, str) or (optional and v is None)):
        raise Invalid(f"{what} is not a string")
    return v


def _number(v: Any, what: str, optional: bool = False) -> None:
    if optional and v is None:
        return
    if type(v) not in (int, float) or not math.isfinite(v):
        raise Invalid(f"{what} is not a finite number")


def _str_map(v: Any, what: str) -> None:
    if not all(isinstance(k, str) and isinstance(x, str) for k, x in _obj(v, what).items()):
        raise Invalid(f"{what} is not an object of strings")


def _header(h: Any, format_version: int, payload_end: int, align: int) -> None:
    _obj(h, "the header")
    if h.get("format_version") != format_version or type(h.get("format_version")) is not int:
        raise Invalid(f"format_version {h.get('format_version')!r} (expected {format_version})")
    for key in ("tensors", "source", "files"):
        if key not in h:
            raise Invalid(f"field {key!r} is missing")
    crc = _crc32 if format_version < 3 else _chunk_crcs(h.get("crc_chunk"))
    _str(h.get("zoocodec", ""), "field 'zoocodec'")
    _obj(h.get("options", {}), "field 'options'")
    meta = _obj(h.get("meta", {}), "field 'meta'")
    if "sequence" in meta:
        _sequence(meta["sequence"])
    _source(_obj(h["source"], "field 'source'"))
    if not isinstance(h["tensors"], list):
        raise Invalid("field 'tensors' is not a list")
    spans: list[tuple[int, int, str]] = []
    names: set[str] = set()
    for i, t in enumerate(h["tensors"]):
        name = _str(_obj(t, f"tensor #{i}").get("name"), f"name of tensor #{i}")
        if name in names:
            raise Invalid(f"tensor {name!r} appears twice")
        names.add(name)
        _tensor(t, f"tensor {name!r}", spans, payload_end, align, crc)
    _segments(_obj(h["files"], "field 'files'"), "the attached files", spans, payload_end, align, crc)
    spans.sort()
    for (a, alen, aname), (b, _, bname) in pairwise(spans):
        if a + alen > b:
            raise Invalid(f"payloads of {aname} and {bname} overlap")
    _output_names(h)


def _sequence(seq: Any) -> None:
    seq = _obj(seq, "meta.sequence")
    members = seq.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise Invalid("meta.sequence.members is not a list of labels")
    if seq.get("mode") not in SEQUENCE_MODES:
        raise Invalid(f"meta.sequence.mode {seq.get('mode')!r} is not one of {', '.join(SEQUENCE_MODES)}")
    _int(seq.get("keyint", 0), "meta.sequence.keyint")


def _source(src: dict) -> None:
    fmt = src.get("format")
    if fmt not in SOURCE_FORMATS:
        raise Invalid(f"source format {fmt!r} is not one of {', '.join(SOURCE_FORMATS)}")
    _str(src.get("name"), "source name", optional=True)
    layout = _obj(src.get("layout", {}), "source layout")
    allowed = {"safetensors": {"metadata"}, "pytorch": {"nest", "prefix"}, "hf": {"shards", "metadata"},
               "onnx": set(), "dict": set()}[fmt]
    extra = set(layout) - allowed
    if extra:
        raise Invalid(f"source layout of a {fmt} model has unknown field {sorted(extra)[0]!r}")
    if fmt == "safetensors":
        _str_map(layout.get("metadata", {}), "source layout metadata")
    if fmt == "pytorch":
        if layout.get("nest") not in CHECKPOINT_NESTS:
            raise Invalid(f"source layout nest {layout.get('nest')!r} is not one of {CHECKPOINT_NESTS}")
        if layout.get("prefix", "") not in ("", "module."):
            raise Invalid(f"source layout prefix {layout.get('prefix')!r} is not '' or 'module.'")
    if fmt == "hf":
        _str_map(layout.get("shards", {}), "source layout shards")
        for shard, meta in _obj(layout.get("metadata", {}), "source layout metadata").items():
            _str_map(meta, f"source layout metadata of {shard!r}")


def _tensor(t: dict, what: str, spans: list, payload_end: int, align: int, crc) -> None:
    shape = t.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise Invalid(f"shape of {what} is not a list of at most {MAX_DIMS} sizes")
    for d in shape:
        _int(d, f"a size in the shape of {what}", 0, MAX_DIM)
    if t.get("dtype") not in DTYPES:
        raise Invalid(f"dtype {t.get('dtype')!r} of {what} is not one of {', '.join(DTYPES)}")
    _method(t.get("method"), f"method of {what}")
    _obj(t.get("side"), f"side info of {what}")
    stats = _obj(t.get("stats", {}), f"stats of {what}")
    for key in ("mse", "max_err", "sqnr_db"):
        _number(stats.get(key), f"stats.{key} of {what}", optional=True)
    _segments(t.get("segments"), what, spans, payload_end, align, crc)


def _crc32(v: Any, length: int, what: str) -> None:
    """Version 2: one CRC32 of the whole segment."""
    _int(v, f"crc32 of {what}", 0, 1 << 32)


def _chunk_crcs(chunk: Any):
    """Version 3: a CRC32 per `chunk` bytes of the segment (the header's crc_chunk, a power of two)."""
    _int(chunk, "field 'crc_chunk'", 1 << 12, (1 << 30) + 1)
    if chunk & (chunk - 1):
        raise Invalid(f"field 'crc_chunk' {chunk} is not a power of two")

    def check(v: Any, length: int, what: str) -> None:
        if not isinstance(v, list) or len(v) != -(-length // chunk):
            raise Invalid(f"checksums of {what} are not a list of {-(-length // chunk)} CRC32s")
        if not all(type(c) is int and 0 <= c < 1 << 32 for c in v):
            raise Invalid(f"checksums of {what} are not CRC32s")
    return check


def _segments(segs: Any, owner: str, spans: list, payload_end: int, align: int, crc) -> None:
    for name, seg in _obj(segs, f"segments of {owner}").items():
        if not (isinstance(seg, list) and len(seg) == 3):
            raise Invalid(f"segment {name!r} of {owner} is not [offset, length, checksums]")
        off = _int(seg[0], f"offset of segment {name!r} of {owner}")
        length = _int(seg[1], f"length of segment {name!r} of {owner}")
        crc(seg[2], length, f"segment {name!r} of {owner}")
        if off % align or off < align or off + length > payload_end:
            raise Invalid(f"segment {name!r} of {owner} lies outside the payload area")
        spans.append((off, length, owner))


def _method(d: Any, what: str) -> None:
    """A method spec's JSON: a registered method (or a sequence of one) whose parameters have their types."""
    from zoocodec.methods import spec_from_dict  # the registry: methods import numpy only
    from zoocodec.methods.base import REGISTRY

    d = _obj(d, what)
    cls = REGISTRY.get(d["method"]) if isinstance(d.get("method"), str) else None
    if cls is None:
        raise Invalid(f"{what}: unknown method {d.get('method')!r}")
    _fields(cls, d, what)
    try:
        spec_from_dict(d)
    except ZoocodecError as e:
        raise Invalid(f"{what}: {e}") from None


def _fields(cls: type, d: dict, what: str, own: tuple[str, ...] = ("method", "version")) -> None:
    """The JSON types of a spec dataclass's fields (k=16, not "16" or 16.0), nested coder specs too."""
    from zoocodec.codecs.base import CODERS

    hints, fields = _hints(cls)
    for key, value in d.items():
        if key in own:
            continue
        if key not in fields:
            raise Invalid(f"{what}: {cls.__name__} has no parameter {key!r}")
        if isinstance(value, dict) and isinstance(value.get("coder"), str) and value["coder"] in CODERS:
            _fields(CODERS[value["coder"]], value, f"{what}: coder {value['coder']!r}", ("coder", "version"))
        elif not _json_type_ok(hints[key], value):
            raise Invalid(f"{what}: parameter {key}={value!r} is not of type {_type_name(hints[key])}")


@functools.cache
def _hints(cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    """A spec class's field types and names (resolved once: a header names a class per tensor)."""
    return typing.get_type_hints(cls), frozenset(f.name for f in dataclasses.fields(cls))


def _json_type_ok(hint: Any, value: Any) -> bool:
    """Scalars strictly (bool is no int, 16.0 is no int, "16" is no number); nested specs are their parser's."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_json_type_ok(a, value) for a in args)
    if origin is typing.Literal:
        return value in args and all(type(value) is type(a) for a in args if a == value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return type(value) is int
    if hint is float:
        return type(value) in (int, float) and math.isfinite(value)
    if hint is str:
        return type(value) is str
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _output_names(h: dict) -> None:
    """Every header name that becomes a path on decompress is a plain relative name, and no two collide."""
    shards = h["source"].get("layout", {}).get("shards", {})
    names: set[str] = set()
    for kind, name in [("attached file", n) for n in h["files"]] + [
        ("shard", s) for s in dict.fromkeys(shards.values())
    ]:
        why = plain_relpath(name)
        if why is None and (kind == "shard") != name.endswith(".safetensors"):  # compress never attaches weights
            why = "does not end in .safetensors" if kind == "shard" else "ends in .safetensors, as only shards do"
        if why:
            raise Invalid(f"{kind} name {name!r} {why}")
        if name in names:
            raise Invalid(f"{kind} name {name!r} is used twice")
        names.add(name)
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in names:
                raise Invalid(f"{name!r} lies inside {'/'.join(parts[:i])!r}, which is a file")
