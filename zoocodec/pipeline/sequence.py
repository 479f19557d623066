"""Sequences of related models (training checkpoints, fine-tunes of one base) in one .zc file.

Every member is quantized on one shared grid per tensor (the uniform step of the
element-wise largest magnitude over the members), so an unchanged weight has the same
symbol in every member. Three ways to code the members' symbols, for comparison:

- `video`: one inter-coded H.264/HEVC stream per tensor, members as consecutive frames
  (codecs/video.py); the encoder predicts each member from the one before.
- `delta`: member minus its predecessor on the grid, entropy-coded (ans or ctx).
- `independent`: each member entropy-coded alone.

`keyint` (members per group) bounds random access: reading member m decodes at most
`keyint` members (video: from the keyframe before m; delta: from the last full member).
Small and non-float tensors are stored losslessly per member in every mode.

The file is an ordinary container: one header entry per tensor (method "sequence"),
its members' payloads as named segments, the member labels in meta["sequence"].
"""
from __future__ import annotations

import math
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
from zoocodec.codecs import video
from zoocodec.container import FORMAT_VERSION, Container
from zoocodec.errors import ContainerError, ModelFormatError, SpecError, ZoocodecError
from zoocodec.kernels import uniform as K
from zoocodec.methods import MethodSpec, TensorData, parse_spec, spec_from_dict
from zoocodec.methods.base import from_float64
from zoocodec.methods.lossless import Lossless, native_dtype
from zoocodec.methods.uniform import Uniform
from zoocodec.pipeline.core import DEFAULT_MIN_SIZE, finite, load, selected
from zoocodec.pipeline.modelio import to_torch, write_model

MODES = ("video", "delta", "independent")
METHOD = {"method": "sequence", "version": 1}


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


def _check_spec(spec: MethodSpec, mode: str) -> MethodSpec:
    if mode not in MODES:
        raise SpecError(f"sequence mode must be one of {', '.join(MODES)}, got {mode!r}")
    is_video = type(spec) is Uniform and isinstance(spec.coder, video.VideoCoder)
    if mode == "video" and not is_video:
        raise SpecError(f"sequence mode 'video' needs a uniform spec with a video coder "
                        f"(e.g. uniform:bits=8,coder=video-hevc), got {spec}")
    if mode != "video" and (type(spec) is not Uniform or is_video):
        raise SpecError(f"sequence mode {mode!r} needs a uniform spec with an entropy coder (e.g. uniform:bits=8), got {spec}")
    return spec


def compress_seq(models: list[str | os.PathLike | dict], out: str | os.PathLike,
                 spec: str | MethodSpec = "uniform:bits=8", mode: str = "delta", keyint: int = 0,
                 labels: list[str] | None = None, min_size: int = DEFAULT_MIN_SIZE,
                 meta: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None) -> SeqReport:
    """Code same-architecture `models` (paths, zoo names or dicts) as one sequence container."""
    spec = _check_spec(parse_spec(spec), mode)
    if len(models) < 1:
        raise SpecError("a sequence needs at least one model")
    if keyint < 0:
        raise SpecError(f"keyint must be >= 0, got {keyint}")
    labels = labels or [Path(m).stem if isinstance(m, (str, os.PathLike)) else f"m{i}" for i, m in enumerate(models)]
    if len(labels) != len(models) or len(set(labels)) != len(labels):
        raise SpecError("sequence labels must be unique, one per model")
    sources = [load(m) for m in models]
    for lab, src in zip(labels[1:], sources[1:]):
        if src.names != sources[0].names:
            raise ModelFormatError(f"{lab}: its tensors differ from {labels[0]}'s; a sequence needs one architecture")
    n = len(models)
    report = SeqReport(Path(out), mode, labels, member_bytes=[0] * n)
    sq_err = [0.0] * n
    start = time.perf_counter()
    entries = []
    with Container.create(out) as c:
        for members in zip(*(s.tensors() for s in sources)):
            t0 = members[0]
            if any(t.dtype != t0.dtype or t.array.shape != t0.array.shape for t in members):
                raise ModelFormatError(f"tensor {t0.name!r} changes shape or dtype along the sequence")
            quantize = selected(t0.dtype, t0.array.size, min_size) and all(finite(t) for t in members)
            if quantize:
                side, segs, recon, per_member = _encode_quantized(members, spec, mode, keyint)
                report.quantized_params += t0.array.size
                for i, t in enumerate(members):
                    report.member_bytes[i] += per_member[i]
                    sq_err[i] += float(np.sum((t.float64() - TensorData(t.name, t.dtype, recon[i]).float64()) ** 2))
            else:
                encs = [Lossless().encode(t) for t in members]
                side = {"kind": "lossless", "members": [e.side for e in encs]}
                segs = {f"m{i}": e.segments["data"] for i, e in enumerate(encs)}
                report.lossless_bytes += sum(len(v) for v in segs.values())
            entries.append({
                "name": t0.name, "shape": list(t0.array.shape), "dtype": t0.dtype,
                "method": {**METHOD, "mode": mode, "spec": spec.to_dict(), "keyint": keyint},
                "side": side, "segments": {k: list(c.add_segment(v)) for k, v in segs.items()},
            })
            if progress:
                progress(t0.name)
        zstd = zstandard.ZstdCompressor(level=19)
        files = {name: list(c.add_segment(zstd.compress(data))) for name, data in sorted(sources[0].files.items())}
        src = sources[0]
        c.header = {
            "format_version": FORMAT_VERSION, "zoocodec": __version__,
            "source": {"format": src.format, "name": src.path.name if src.path else None, "layout": src.layout},
            "options": {"spec": spec.to_dict(), "mode": mode, "keyint": keyint, "min_size": min_size},
            "meta": {**(meta or {}), "sequence": {"members": labels, "mode": mode, "keyint": keyint}},
            "tensors": entries, "files": files,
        }
    report.mse = [e / max(report.quantized_params, 1) for e in sq_err]
    report.seconds = time.perf_counter() - start
    report.file_bytes = Path(out).stat().st_size
    return report


def _encode_quantized(members: list[TensorData], spec: Uniform, mode: str, keyint: int):
    """-> (side, segments, reconstructions, coded bytes per member) for one tensor."""
    ws = [t.float64() for t in members]
    envelope = np.max(np.abs(np.stack(ws)), axis=0)
    steps = spec.steps_for(envelope)
    symbols = [K.quantize(w, steps, np) for w in ws]
    side: dict[str, Any] = {"kind": "quantized", "rows": int(steps.shape[0])}
    segs: dict[str, bytes] = {}
    if steps.shape[0] > 1:
        segs["steps"] = steps.astype("<f4").tobytes()
    else:
        side["step"] = float(steps[0])
    if mode == "video":
        data, decoded = video.encode_members(symbols, spec.coder.options(keyint))
        h = video.Header.unpack(data)
        side["video"] = h.describe()
        t = h.frames_per_member
        per_member = [sum(len(p) for s in h.streams for p, _ in s[i * t : (i + 1) * t]) for i in range(len(members))]
        per_member[0] += len(data) - sum(per_member)  # the stream header and CRCs
        segs["video"] = data
        decoded = [d.reshape(symbols[0].shape) for d in decoded]
    else:
        per_member = []
        for i, s in enumerate(symbols):
            full = mode == "independent" or i == 0 or (keyint and i % keyint == 0)
            segs[f"m{i}"] = spec.coder.encode(s if full else s - symbols[i - 1])
            per_member.append(len(segs[f"m{i}"]))
        decoded = symbols
    recon = [from_float64(K.dequantize(d, steps, np), t.dtype) for d, t in zip(decoded, members)]
    return side, segs, recon, per_member


class SeqArchive:
    """An open sequence container: any member's tensors, decoded with the fewest members possible."""

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.container = Container.open(path, verify=verify)
        self.header = self.container.header
        seq = self.header.get("meta", {}).get("sequence")
        if not isinstance(seq, dict) or not isinstance(seq.get("members"), list) or seq.get("mode") not in MODES:
            raise ContainerError(f"{path}: not a sequence container (use zoocodec.Archive for a single model)")
        self.labels: list[str] = [str(m) for m in seq["members"]]
        self.mode: str = seq["mode"]
        self.keyint = seq.get("keyint", 0)
        if not isinstance(self.keyint, int) or self.keyint < 0:
            raise ContainerError(f"{path}: invalid keyint {self.keyint!r}")
        self.entries = {t["name"]: t for t in self.header["tensors"]}

    def __enter__(self) -> SeqArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    def names(self) -> list[str]:
        return list(self.entries)

    def member_index(self, member: int | str) -> int:
        if isinstance(member, str) and member in self.labels:
            return self.labels.index(member)
        if isinstance(member, int) and -len(self.labels) <= member < len(self.labels):
            return member % len(self.labels)
        raise ZoocodecError(f"no member {member!r} in {self.container.path} (members: {', '.join(self.labels)})")

    def read(self, member: int | str, name: str) -> np.ndarray:
        """Decode tensor `name` of one member to its native NumPy array."""
        m = self.member_index(member)
        if name not in self.entries:
            raise ZoocodecError(f"no tensor {name!r} in {self.container.path}")
        e = self.entries[name]
        where = f"tensor {name!r}"
        try:
            return self._read(e, m, where)
        except ContainerError as err:
            raise ContainerError(f"{self.container.path}: {where}: {err}") from None
        except (KeyError, ValueError, TypeError, IndexError, OverflowError, ZoocodecError) as err:
            raise ContainerError(f"{self.container.path}: {where} cannot be decoded ({type(err).__name__}: {err})") from None

    def _read(self, e: dict, m: int, where: str) -> np.ndarray:
        shape, dtype, side = tuple(e["shape"]), e["dtype"], e["side"]
        native_dtype(dtype)
        seg = lambda key: self.container.segment(where, tuple(e["segments"][key]))  # noqa: E731
        count = math.prod(shape)
        if side.get("kind") == "lossless":
            return Lossless().decode(side["members"][m], {"data": seg(f"m{m}")}, shape, dtype)
        spec = spec_from_dict(e["method"]["spec"])
        if self.mode == "video":
            symbols = video.decode_member(seg("video"), m)
            if symbols.size != count:
                raise ContainerError(f"video member holds {symbols.size} symbols, expected {count}")
        else:
            first = m if self.mode == "independent" else (m // self.keyint * self.keyint if self.keyint else 0)
            symbols = spec.coder.decode(seg(f"m{first}"), shape)
            for j in range(first + 1, m + 1):
                symbols = symbols + spec.coder.decode(seg(f"m{j}"), shape)
        rows = side.get("rows")
        if "steps" in e["segments"]:
            steps = np.frombuffer(seg("steps"), dtype="<f4").astype(np.float64)
            if steps.shape[0] != rows or not shape or rows != shape[0]:
                raise ContainerError(f"{steps.shape[0]} steps for shape {shape}")
        else:
            if rows != 1 or not isinstance(side.get("step"), float) or not side["step"] > 0:
                raise ContainerError(f"invalid side info {side}")
            steps = np.array([side["step"]])
        return from_float64(K.dequantize(symbols.reshape(shape), steps, np), dtype)

    def tensors(self, member: int | str) -> dict[str, torch.Tensor]:
        return {n: to_torch(self.read(member, n), self.entries[n]["dtype"]) for n in self.names()}

    def files(self) -> dict[str, bytes]:
        out = {}
        for name, seg in self.header["files"].items():
            data = self.container.segment(f"file {name!r}", tuple(seg))
            try:
                out[name] = zstandard.ZstdDecompressor().decompress(bytes(data), max_output_size=1 << 30)
            except zstandard.ZstdError as e:
                raise ContainerError(f"{self.container.path}: attached file {name!r} is corrupt ({e})") from None
        return out


def decompress_seq(path: str | os.PathLike, member: int | str, out: str | os.PathLike | None = None,
                   fmt: str | None = None) -> dict[str, torch.Tensor] | Path:
    """One member of a sequence: its tensors, or (with `out`) a model file in the source format."""
    with SeqArchive(path) as a:
        tensors = a.tensors(member)
        if out is None:
            return tensors
        src = a.header["source"]
        write_model(tensors, out, src["format"], src.get("layout") or {}, a.files(), fmt)
        return Path(out)
