"""The .zc header as one typed model: what both writers build and what every reader reads.

`Header.from_json` is the only way a file's header becomes one: it checks every field a
reader uses (JSON types, ranges, method and coder parameters, geometry of the payloads,
output names) and raises `schema.Invalid` naming the first one that is wrong, which the
container turns into one ContainerError line. A writer builds the dataclasses directly
(compress, compress-seq) and the container stores `to_json()`; a header read back is the
same model, so inspect, the CLI and the decoders read its fields instead of the JSON.

The JSON is the file format: `to_json()` writes the same keys and values the format has
always had (sorted keys, tensors in file order, `stats` and `aliases` only where a writer
has them), so the same input gives the same bytes (tests/expected/golden.sha256).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np

from zoocodec.fsutil import plain_relpath
from zoocodec.schema import Invalid, integer, number, obj, spec_of, str_map, string

MAX_DIMS = 32
F32_MAX = 3.4e38
SQNR_SHOWN = ".1f"  # how inspect shows a tensor's SQNR (cli/render.sqnr)
MAX_DIM = 1 << 40
SOURCE_FORMATS = ("safetensors", "pytorch", "hf", "onnx", "dict")
DTYPES = ("float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "uint8": 1, "int16": 2, "int32": 4,
            "int64": 8, "bool": 1}  # bytes a value of each of DTYPES (methods/lossless.native_dtype's)
CHECKPOINT_NESTS = (None, "state_dict", "model", "model_state_dict")
SEQUENCE_MODES = ("video", "delta", "independent")
LAYOUT_FIELDS = {"safetensors": {"metadata"}, "pytorch": {"nest", "prefix"}, "hf": {"shards", "metadata"},
                 "onnx": set(), "dict": set()}


class Segment(NamedTuple):
    """One payload: where it lies and its checksums (format 4: an XXH3-64 per `crc_chunk` bytes;
    format 3: a CRC32 per `crc_chunk` bytes; format 2: one CRC32 of the segment). Stored as the
    JSON list [offset, length, crc]."""

    offset: int
    length: int
    crc: Any


def f32(x: float | None, shown: str = "") -> float | None:
    """`x` as the shortest decimal that reads back as the same float32: how a header stores measured numbers
    (errors of float32 weights). float64's 17 digits barely compress: effnet-lite0's 296 tensors' stats
    took 5.8 KB of its 18.8 KB header at zstd 19, 3.5 KB at float32's 6-9 digits. `shown`: the format a
    reader displays it with; where that decimal would display otherwise (2 SQNRs in 10^5 between 10 and
    100 dB at ".1f": the shortest decimal is often the very half between two shown ones) `x` stays as
    it is, as it does beyond float32's range."""
    if x is None or not abs(x) < F32_MAX:
        return x
    y = float(str(np.float32(x)))
    return y if not shown or format(y, shown) == format(x, shown) else x


def f32s(v: Any) -> Any:
    """`v` (JSON) with every float in it as f32 stores it: automatic mode's search trace, a log of noisy
    losses (it takes 239 bytes off mnist-cnn's automatic header of 2,307, at zstd 19)."""
    if type(v) is float:
        return f32(v)
    if type(v) is list:
        return [f32s(x) for x in v]
    return {k: f32s(x) for k, x in v.items()} if type(v) is dict else v


@dataclass(frozen=True)
class Stats:
    """A tensor's reconstruction error as compress measured it (None: not measured, or
    sqnr_db infinite: no error)."""

    mse: float | None = None
    max_err: float | None = None
    sqnr_db: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"mse": f32(self.mse), "max_err": f32(self.max_err), "sqnr_db": f32(self.sqnr_db, SQNR_SHOWN)}

    @classmethod
    def from_json(cls, v: Any, what: str) -> Stats:
        d = v if type(v) is dict else obj(v, f"stats of {what}")
        values = (d.get("mse"), d.get("max_err"), d.get("sqnr_db"))
        if not all(x is None or (type(x) is float and math.isfinite(x)) for x in values):  # (else: which)
            for key, x in zip(("mse", "max_err", "sqnr_db"), values, strict=True):
                number(x, f"stats.{key} of {what}", optional=True)
        return cls(*values)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor: its shape and dtype, the method spec that coded it (parsed, upgraded to the
    current version), the method's side info and its payload segments by stream name."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    spec: Any  # a MethodSpec (methods/base.py)
    side: dict[str, Any]
    segments: dict[str, Segment]
    stats: Stats | None = None

    @property
    def method(self) -> dict[str, Any]:
        """The spec's JSON."""
        return self.spec.to_dict()

    @cached_property
    def numel(self) -> int:  # (cached, like where and raw_bytes: a load asks for each a few times a tensor)
        return math.prod(self.shape)

    @cached_property
    def where(self) -> str:
        return f"tensor {self.name!r}"

    @property
    def stored_bytes(self) -> int:
        """Bytes of its payloads in the file."""
        return sum(s.length for s in self.segments.values())

    @cached_property
    def raw_bytes(self) -> int:
        """Bytes of the tensor decoded."""
        return self.numel * ITEMSIZE[self.dtype]

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "method": self.method,
               "side": self.side, "segments": dict(self.segments)}
        if self.stats is not None:
            out["stats"] = self.stats.to_json()
        return out

    @classmethod
    def from_json(cls, t: dict, what: str, segment, specs: dict[str, Any] | None = None) -> TensorEntry:
        """`specs`: the specs parsed so far by the repr of their JSON (a header's tensors share a
        few specs; repr tells JSON values apart, and is cheaper than spec_of's sorted dump)."""
        shape = t.get("shape")
        if type(shape) is not list or len(shape) > MAX_DIMS:
            raise Invalid(f"shape of {what} is not a list of at most {MAX_DIMS} sizes")
        if not all(type(d) is int and 0 <= d < MAX_DIM for d in shape):  # (else: which)
            for d in shape:
                integer(d, f"a size in the shape of {what}", 0, MAX_DIM)
        if t.get("dtype") not in DTYPES:
            raise Invalid(f"dtype {t.get('dtype')!r} of {what} is not one of {', '.join(DTYPES)}")
        key = repr(t.get("method"))
        spec = None if specs is None else specs.get(key)
        if spec is None:
            spec = spec_of(t.get("method"), f"method of {what}")
            if specs is not None:
                specs[key] = spec
        side = t.get("side")
        if type(side) is not dict:  # (the message formatted only on failure, as below)
            obj(side, f"side info of {what}")
        stats = Stats.from_json(t["stats"], what) if "stats" in t else None
        return cls(t["name"], tuple(shape), t["dtype"], spec, side, segments(t.get("segments"), what, segment), stats)


@dataclass(frozen=True)
class Source:
    """The model a file came from: its format, file or folder name, and what writing it back needs."""

    format: str
    name: str | None = None
    layout: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "name": self.name, "layout": self.layout}

    @classmethod
    def from_json(cls, v: Any) -> Source:
        src = obj(v, "field 'source'")
        fmt = src.get("format")
        if fmt not in SOURCE_FORMATS:
            raise Invalid(f"source format {fmt!r} is not one of {', '.join(SOURCE_FORMATS)}")
        string(src.get("name"), "source name", optional=True)
        layout = obj(src.get("layout", {}), "source layout")
        extra = set(layout) - LAYOUT_FIELDS[fmt]
        if extra:
            raise Invalid(f"source layout of a {fmt} model has unknown field {sorted(extra)[0]!r}")
        if fmt == "safetensors":
            str_map(layout.get("metadata", {}), "source layout metadata")
        if fmt == "pytorch":
            if layout.get("nest") not in CHECKPOINT_NESTS:
                raise Invalid(f"source layout nest {layout.get('nest')!r} is not one of {CHECKPOINT_NESTS}")
            if layout.get("prefix", "") not in ("", "module."):
                raise Invalid(f"source layout prefix {layout.get('prefix')!r} is not '' or 'module.'")
        if fmt == "hf":
            str_map(layout.get("shards", {}), "source layout shards")
            for shard, meta in obj(layout.get("metadata", {}), "source layout metadata").items():
                str_map(meta, f"source layout metadata of {shard!r}")
        return cls(fmt, src.get("name"), layout)


@dataclass(frozen=True)
class SequenceInfo:
    """A checkpoint sequence's members (labels, in order), its coding mode and group length
    (stored as meta["sequence"])."""

    members: tuple[str, ...]
    mode: str
    keyint: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"members": list(self.members), "mode": self.mode, "keyint": self.keyint}

    @classmethod
    def from_json(cls, v: Any) -> SequenceInfo:
        seq = obj(v, "meta.sequence")
        members = seq.get("members")
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise Invalid("meta.sequence.members is not a list of labels")
        if seq.get("mode") not in SEQUENCE_MODES:
            raise Invalid(f"meta.sequence.mode {seq.get('mode')!r} is not one of {', '.join(SEQUENCE_MODES)}")
        return cls(tuple(members), seq["mode"], integer(seq.get("keyint", 0), "meta.sequence.keyint"))


@dataclass(frozen=True)
class Header:
    """A whole header. `format_version` and `crc_chunk` belong to the byte layout: the container
    sets them when it writes (zoocodec/container.py)."""

    source: Source
    tensors: tuple[TensorEntry, ...]
    files: dict[str, Segment] = field(default_factory=dict)  # attached files, zstd frames
    options: dict[str, Any] = field(default_factory=dict)  # how compress was asked to run
    meta: dict[str, Any] = field(default_factory=dict)  # free JSON (automatic mode's decisions, the zoo name)
    sequence: SequenceInfo | None = None  # a checkpoint sequence's members (in meta["sequence"])
    aliases: dict[str, str] = field(default_factory=dict)  # tied tensors: name -> the stored tensor's name
    zoocodec: str = ""  # the version that wrote it
    format_version: int = 0
    crc_chunk: int = 0

    @property
    def params(self) -> int:
        """Weights in the stored tensors (a sequence: per member)."""
        return sum(e.numel for e in self.tensors)

    @property
    def raw_bytes(self) -> int:
        """Bytes of the stored tensors decoded (a sequence: per member)."""
        return sum(e.raw_bytes for e in self.tensors)

    @property
    def attached_bytes(self) -> int:
        return sum(s.length for s in self.files.values())

    def to_json(self) -> dict[str, Any]:
        meta = {**self.meta, "sequence": self.sequence.to_json()} if self.sequence else self.meta
        out = {"format_version": self.format_version, "zoocodec": self.zoocodec, "source": self.source.to_json(),
               "options": self.options, "meta": meta, "tensors": [e.to_json() for e in self.tensors],
               "files": dict(self.files), "crc_chunk": self.crc_chunk}
        if self.aliases:
            out["aliases"] = self.aliases
        return out

    def stamped(self, format_version: int, crc_chunk: int) -> Header:
        return replace(self, format_version=format_version, crc_chunk=crc_chunk)

    @classmethod
    def from_json(cls, h: Any, format_version: int, payload_end: int, align: int) -> Header:
        """The header of a file of `format_version` (2 to 4: the segments' checksums differ, see
        zoocodec/container.py) whose payloads end at `payload_end`; raise Invalid('WHY')."""
        obj(h, "the header")
        if h.get("format_version") != format_version or type(h.get("format_version")) is not int:
            raise Invalid(f"format_version {h.get('format_version')!r} (expected {format_version})")
        for key in ("tensors", "source", "files"):
            if key not in h:
                raise Invalid(f"field {key!r} is missing")
        crc = _crc32 if format_version < 3 else _chunk_sums(h.get("crc_chunk"), 32 if format_version == 3 else 64)
        spans: list[tuple[int, int, str]] = []

        def segment(seg: Any, name: str, owner: str) -> Segment:
            if type(seg) is not list or len(seg) != 3:
                raise Invalid(f"segment {name!r} of {owner} is not [offset, length, checksums]")
            off, length, sums = seg
            if type(off) is not int or type(length) is not int or not 0 <= off < 1 << 63 or not 0 <= length < 1 << 63:
                integer(off, f"offset of segment {name!r} of {owner}")
                integer(length, f"length of segment {name!r} of {owner}")
            crc(sums, length, name, owner)
            if off % align or off < align or off + length > payload_end:
                raise Invalid(f"segment {name!r} of {owner} lies outside the payload area")
            spans.append((off, length, owner))
            return Segment(off, length, sums)

        zoocodec = string(h.get("zoocodec", ""), "field 'zoocodec'")
        options = obj(h.get("options", {}), "field 'options'")
        meta = obj(h.get("meta", {}), "field 'meta'")
        sequence = SequenceInfo.from_json(meta["sequence"]) if "sequence" in meta else None
        source = Source.from_json(h["source"])
        if not isinstance(h["tensors"], list):
            raise Invalid("field 'tensors' is not a list")
        tensors: list[TensorEntry] = []
        names: set[str] = set()
        specs: dict[str, Any] = {}
        for i, t in enumerate(h["tensors"]):
            name = t.get("name") if type(t) is dict else None
            if type(name) is not str:  # (else: which check fails)
                name = string(obj(t, f"tensor #{i}").get("name"), f"name of tensor #{i}")
            if name in names:
                raise Invalid(f"tensor {name!r} appears twice")
            names.add(name)
            tensors.append(TensorEntry.from_json(t, f"tensor {name!r}", segment, specs))
            if sequence is not None and tensors[-1].spec.name != "sequence":
                raise Invalid(f"tensor {name!r} of a sequence is coded by {tensors[-1].spec.name!r}, not 'sequence'")
        files = segments(obj(h["files"], "field 'files'"), "the attached files", segment)
        spans.sort()
        for (a, alen, aname), (b, _, bname) in pairwise(spans):
            if a + alen > b:
                raise Invalid(f"payloads of {aname} and {bname} overlap")
        _output_names(files, source)
        aliases = h.get("aliases", {})
        if not isinstance(aliases, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and v in names and k not in names
                for k, v in aliases.items()):
            raise Invalid("field 'aliases' is not an object of new names to stored tensors")
        return cls(source, tuple(tensors), files, options, {k: v for k, v in meta.items() if k != "sequence"},
                   sequence, aliases, zoocodec, format_version, h.get("crc_chunk", 0) if format_version >= 3 else 0)


def segments(segs: Any, owner: str, segment) -> dict[str, Segment]:
    if type(segs) is not dict:
        obj(segs, f"segments of {owner}")
    return {name: segment(seg, name, owner) for name, seg in segs.items()}


def _crc32(v: Any, length: int, name: str, owner: str) -> None:
    """Version 2: one CRC32 of the whole segment `name` of `owner`."""
    if type(v) is not int or not 0 <= v < 1 << 32:  # (the message formatted only on failure)
        integer(v, f"crc32 of segment {name!r} of {owner}", 0, 1 << 32)


def _chunk_sums(chunk: Any, bits: int):
    """Versions 3 and 4: a checksum of `bits` bits (CRC32, XXH3-64) per `chunk` bytes of the
    segment (the header's crc_chunk, a power of two)."""
    integer(chunk, "field 'crc_chunk'", 1 << 12, (1 << 30) + 1)
    if chunk & (chunk - 1):
        raise Invalid(f"field 'crc_chunk' {chunk} is not a power of two")

    def check(v: Any, length: int, name: str, owner: str) -> None:
        if type(v) is not list or len(v) != -(-length // chunk):
            raise Invalid(f"checksums of segment {name!r} of {owner} are not a list of {-(-length // chunk)} checksums")
        if not all(type(c) is int and 0 <= c < 1 << bits for c in v):
            raise Invalid(f"checksums of segment {name!r} of {owner} are not {bits}-bit integers")
    return check


def _output_names(files: dict[str, Segment], source: Source) -> None:
    """Every header name that becomes a path on decompress is a plain relative name, and no two collide."""
    shards = source.layout.get("shards", {})
    names: set[str] = set()
    for kind, name in [("attached file", n) for n in files] + [("shard", s) for s in dict.fromkeys(shards.values())]:
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
