"""Sequences of related models (training checkpoints, fine-tunes of one base) in one .zc file.

Each tensor's members are coded together by the registered method `sequence`
(methods/sequence.py: one shared grid, then inter-coded video, deltas or independent
coding); tensors the selection policy keeps lossless are coded member by member with
`sequence:mode=independent,then=lossless`. The file is an ordinary container: one entry
per tensor (its shape is one member's), the member labels in meta["sequence"].
SeqArchive reads any member through the same archive base as zoocodec.Archive.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zstandard

from zoocodec import __version__
from zoocodec.codecs import videostream
from zoocodec.container import Container
from zoocodec.errors import ModelFormatError, SpecError, ZoocodecError
from zoocodec.header import Header, SequenceInfo, Source, TensorEntry
from zoocodec.methods import MethodSpec, TensorData, parse_spec
from zoocodec.methods.base import nested_text
from zoocodec.methods.sequence import MODES, Sequence
from zoocodec.pipeline.core import ArchiveBase, load
from zoocodec.pipeline.modelio import output_format, to_torch, write_model
from zoocodec.pipeline.policy import DEFAULT_MIN_SIZE, finite, selected


@dataclass
class SeqReport:
    """Per-member coded bytes of the quantized tensors, and totals."""

    path: Path
    mode: str
    labels: list[str]
    quantized_params: int = 0  # weights per member in quantized tensors
    member_bytes: list[int] = field(default_factory=list)  # quantized tensors' bytes per member
    lossless_bytes: int = 0  # small / non-float tensors, all members
    mse: list[float] = field(default_factory=list)  # per member, over the quantized tensors
    file_bytes: int = 0
    seconds: float = 0.0

    @property
    def bits_per_weight(self) -> list[float]:
        return [8 * b / max(self.quantized_params, 1) for b in self.member_bytes]

    @property
    def mean_bits_per_weight(self) -> float:
        return 8 * sum(self.member_bytes) / max(self.quantized_params * len(self.labels), 1)


def compress_seq(models: list[str | os.PathLike | dict], out: str | os.PathLike,
                 spec: str | MethodSpec = "uniform:bits=8", mode: str = "delta", keyint: int = 0,
                 labels: list[str] | None = None, min_size: int = DEFAULT_MIN_SIZE,
                 meta: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None) -> SeqReport:
    """Code same-architecture `models` (paths, zoo names or dicts) as one sequence container."""
    if mode not in MODES:
        raise SpecError(f"sequence mode must be one of {', '.join(MODES)}, got {mode!r}")
    method = Sequence(mode=mode, keyint=keyint, then=nested_text(parse_spec(spec)))
    method.validate()
    exact = Sequence(mode="independent", then="lossless")
    if len(models) < 1:
        raise SpecError("a sequence needs at least one model")
    labels = labels or [Path(m).stem if isinstance(m, (str, os.PathLike)) else f"m{i}" for i, m in enumerate(models)]
    if len(labels) != len(models) or len(set(labels)) != len(labels):
        raise SpecError("sequence labels must be unique, one per model")
    sources = [load(m) for m in models]
    for lab, src in zip(labels[1:], sources[1:], strict=True):
        if src.names != sources[0].names:
            raise ModelFormatError(f"{lab}: its tensors differ from {labels[0]}'s; a sequence needs one architecture")
    n = len(models)
    report = SeqReport(Path(out), mode, labels, member_bytes=[0] * n)
    sq_err = [0.0] * n
    start = time.perf_counter()
    entries = []
    with Container.create(out) as c:
        for members in zip(*(s.tensors() for s in sources), strict=True):
            t0 = members[0]
            if any(t.dtype != t0.dtype or t.array.shape != t0.array.shape for t in members):
                raise ModelFormatError(f"tensor {t0.name!r} changes shape or dtype along the sequence")
            quantize = selected(t0.dtype, t0.array.size, min_size) and all(finite(t) for t in members)
            chosen = method if quantize else exact
            enc = chosen.encode(TensorData(t0.name, t0.dtype, np.stack([t.array for t in members])))
            if quantize:
                report.quantized_params += t0.array.size
                for i, b in enumerate(member_bytes(enc.segments, n)):
                    report.member_bytes[i] += b
                for i, t in enumerate(members):
                    sq_err[i] += float(np.sum((t.float64() - TensorData(t.name, t.dtype, enc.recon[i]).float64()) ** 2))
            else:
                report.lossless_bytes += sum(len(v) for v in enc.segments.values())
            entries.append(TensorEntry(t0.name, tuple(t0.array.shape), t0.dtype, chosen, enc.side,
                                       {k: c.add_segment(v) for k, v in enc.segments.items()}))
            if progress:
                progress(t0.name)
        zstd = zstandard.ZstdCompressor(level=19)
        files = {name: c.add_segment(zstd.compress(data)) for name, data in sorted(sources[0].files.items())}
        src = sources[0]
        c.head = Header(
            Source(src.format, src.path.name if src.path else None, src.layout), tuple(entries), files,
            options={"spec": method.to_dict(), "mode": mode, "keyint": keyint, "min_size": min_size},
            meta=meta or {}, sequence=SequenceInfo(tuple(labels), mode, keyint), zoocodec=__version__,
        )
    report.mse = [e / max(report.quantized_params, 1) for e in sq_err]
    report.seconds = time.perf_counter() - start
    report.file_bytes = Path(out).stat().st_size
    return report


def member_bytes(segments: dict[str, bytes], n: int) -> list[int]:
    """Coded bytes of each member: its own stream, or its frames of the video stream (the stream
    header and CRCs counted with the first member)."""
    if "video" not in segments:
        return [len(segments[f"m{i}"]) for i in range(n)]
    h = videostream.Header.unpack(segments["video"])
    t = h.frames_per_member
    sizes = [sum(len(p) for s in h.streams for p, _ in s[i * t : (i + 1) * t]) for i in range(n)]
    sizes[0] += len(segments["video"]) - sum(sizes)
    return sizes


class SeqArchive(ArchiveBase):
    """An open sequence container: any member's tensors, decoded with the fewest members possible."""

    sequence = True

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        super().__init__(path, verify)
        seq = self.head.sequence
        self.labels: list[str] = list(seq.members)
        self.mode: str = seq.mode
        self.keyint = seq.keyint

    def member_index(self, member: int | str) -> int:
        if isinstance(member, str) and member in self.labels:
            return self.labels.index(member)
        if isinstance(member, int) and -len(self.labels) <= member < len(self.labels):
            return member % len(self.labels)
        raise ZoocodecError(f"no member {member!r} in {self.container.path} (members: {', '.join(self.labels)})")

    def read(self, member: int | str, name: str) -> np.ndarray:
        """Decode tensor `name` of one member to its native NumPy array."""
        m = self.member_index(member)

        def run(spec: Sequence, side, segments, shape, dtype):  # (the header model: every tensor's is one)
            return spec.decode_member(side, segments, shape, dtype, m)

        return self.decode(name, run)

    def tensors(self, member: int | str) -> dict[str, torch.Tensor]:
        return {n: to_torch(self.read(member, n), self.plan[n].dtype) for n in self.names()}


def decompress_seq(path: str | os.PathLike, member: int | str, out: str | os.PathLike | None = None,
                   fmt: str | None = None) -> dict[str, torch.Tensor] | Path:
    """One member of a sequence: its tensors, or (with `out`) a model file in the source format."""
    with SeqArchive(path) as a:
        src = a.head.source
        if out is not None:  # a bad format or output path fails before any decoding
            fmt = output_format(out, src.format, a.head.files, fmt)
        tensors = a.tensors(member)
        if out is None:
            return tensors
        write_model(tensors, out, src.format, src.layout, a.files(), fmt)
        return Path(out)


def inspect_seq(container: Path) -> dict:
    """A sequence file's numbers, one definition for compress-seq and inspect: per member, the
    bytes of its own streams (every tensor, quantized or exact) over its weights; on average,
    the whole file (shared steps and header included) over all members' weights."""
    with SeqArchive(container) as a:
        h, labels = a.head, a.labels
        n = len(labels)
        rows, per_member = [], [0] * n
        for e in h.tensors:
            segs = e.segments
            if "video" in segs:  # one stream: each member's frames
                sizes = member_bytes({"video": a.container.segment(e.name, segs["video"])}, n)
            else:  # member i's streams are m{i} (on the grid) or m{i}.NAME (each member coded alone)
                sizes = [sum(v.length for k, v in segs.items() if k.split(".")[0] == f"m{i}") for i in range(n)]
            for i, b in enumerate(sizes):
                per_member[i] += b
            seq = e.spec
            coding = str(seq.inner) if seq.mode == "independent" else f"{seq.mode} {seq.inner}"
            rows.append({"name": e.name, "shape": list(e.shape), "dtype": e.dtype, "coding": coding,
                         "bytes": e.stored_bytes, "bits_per_weight": 8 * e.stored_bytes / max(e.numel * n, 1)})
    size = container.stat().st_size
    weight_bytes = size - h.attached_bytes
    bytes_in = n * h.raw_bytes
    return {
        "path": str(container),
        "sequence": h.sequence.to_json(),
        "params_per_member": h.params,
        "file_bytes": size,
        "weight_bytes": weight_bytes,
        "bytes_in": bytes_in,
        "ratio": bytes_in / max(weight_bytes, 1),
        "bits_per_weight": 8 * weight_bytes / max(h.params * n, 1),
        "member_bytes": dict(zip(labels, per_member, strict=True)),
        "shared_bytes": weight_bytes - sum(per_member),
        "member_bits_per_weight": {k: 8 * v / max(h.params, 1) for k, v in zip(labels, per_member, strict=True)},
        "tensors": rows,
    }
