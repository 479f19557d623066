"""Checkpoint sequences: one tensor of several related models (checkpoints, fine-tunes of one
base) coded together, with random access to any member: `sequence`.

    sequence:mode=delta,keyint=4,then=uniform:bits=8
    sequence:mode=video,then=uniform:bits=8;coder=video-hevc
    sequence:mode=independent,then=lossless

The tensor it quantizes is the members stacked on a leading axis. With a uniform `then`,
every member is quantized on one shared grid (the steps of the element-wise largest
magnitude over the members), so an unchanged weight keeps its symbol, and the symbols go
to `then`'s coder in one of three ways:

- `video`: one inter-coded H.264/HEVC stream (`then` has a video coder), members as
  consecutive frames, so the encoder predicts each member from the one before;
- `delta`: member minus its predecessor on the grid, one symbol stream per member;
- `independent`: each member's symbols alone.

`keyint` (members per group) bounds random access: reading member m decodes at most
`keyint` members (video: from the keyframe before m; delta: from the group's first member).
Any other `then` (lossless for small tensors) codes each member independently with it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoocodec.codecs.video import MemberVideo, VideoCoder
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels import uniform as K
from zoocodec.methods.arrays import from_float64
from zoocodec.methods.base import MethodSpec, Quantized, TensorData, inner_method, nested_text, register
from zoocodec.methods.lossless import native_dtype
from zoocodec.methods.uniform import load_steps, store_steps
from zoocodec.registry import METHOD_TEXT, ints, one_of

MODES = ("video", "delta", "independent")


@register
@dataclass(frozen=True)
class Sequence(MethodSpec):
    name = "sequence"
    version = 1
    ranges = {"mode": one_of(*MODES), "keyint": ints(0), "then": METHOD_TEXT}
    examples = ("sequence:mode=delta,keyint=2", "sequence:mode=independent,then=kmeans:k=4")

    mode: str = "delta"
    keyint: int = 0
    then: str = "uniform"

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "then", nested_text(self.inner))

    inner = property(inner_method)

    @property
    def on_grid(self) -> bool:
        """Members quantized on one shared grid, where the inner method declares one (else each
        member coded alone by `then`)."""
        return self.inner.shared_grid

    def check(self) -> None:
        video = isinstance(getattr(self.inner, "coder", None), VideoCoder)
        if self.mode == "video" and not (self.on_grid and video):
            raise SpecError(f"sequence mode 'video' needs a uniform spec with a video coder "
                            f"(e.g. uniform:bits=8,coder=video-hevc), got {self.inner}")
        if self.mode != "video" and video:
            raise SpecError(f"sequence mode {self.mode!r} needs a uniform spec with an entropy coder "
                            f"(e.g. uniform:bits=8), got {self.inner}")
        if self.on_grid or self.mode == "independent":
            return
        raise SpecError(f"sequence: mode {self.mode!r} needs a uniform spec (a shared grid), got {self.inner}")

    # ---- streams ------------------------------------------------------------------------
    def coder_for(self, stream):
        if stream == "video":
            return MemberVideo(self.inner.coder, self.keyint)
        return self.inner.coder_for(self._inner_stream(stream))

    def symbol_dtype(self, stream, dtype):
        return np.dtype(np.int64) if self.on_grid else self.inner.symbol_dtype(self._inner_stream(stream), dtype)

    def _inner_stream(self, stream: str) -> str:
        return "symbols" if self.on_grid else stream.split(".", 1)[1]

    def key(self, m: int) -> int:
        """The member that starts m's group (delta coding starts over there)."""
        return m if self.mode == "independent" else (m // self.keyint * self.keyint if self.keyint else 0)

    # ---- quantizer ----------------------------------------------------------------------
    def quantize(self, t: TensorData, xp=np) -> Quantized:
        """`t` holds the members stacked on axis 0."""
        if not t.array.shape[0]:  # no member: nothing to code
            return Quantized({}, {}, {}, t.array.copy())
        members = [TensorData(t.name, t.dtype, t.array[i]) for i in range(t.array.shape[0])]
        if not self.on_grid:
            qs = [self.inner.quantize(m, xp) for m in members]
            symbols = {f"m{i}.{k}": v for i, q in enumerate(qs) for k, v in q.symbols.items()}
            arrays = {f"m{i}.{k}": v for i, q in enumerate(qs) for k, v in q.arrays.items()}
            return Quantized(symbols, {"members": [q.side for q in qs]}, arrays, np.stack([q.recon for q in qs]))
        ws = [m.float64() for m in members]
        steps = self.inner.steps_for(np.max(np.abs(np.stack(ws)), axis=0))
        levels = [K.quantize(w, steps, np) for w in ws]
        side, arrays = {}, {}
        store_steps(steps, side, arrays)
        if self.mode == "video":
            symbols = {"video": np.stack(levels)}
        else:
            symbols = {f"m{i}": s if self.key(i) == i else s - levels[i - 1] for i, s in enumerate(levels)}
        recon = np.stack([from_float64(K.dequantize(s, steps, np), t.dtype) for s in levels])
        return Quantized(symbols, side, arrays, recon)

    def dequantize(self, q, shape, dtype):
        if not shape[0]:
            return np.empty(shape, dtype=native_dtype(dtype))
        return np.stack([self._member(q, tuple(shape[1:]), dtype, m, q.symbols) for m in range(shape[0])])

    def decode_member(self, side: dict, segments: dict, shape: tuple[int, ...], dtype: str, m: int) -> np.ndarray:
        """Member `m` of a tensor of `shape` (one member's), decoding only what it depends on."""
        shapes = side.get("symbols") if isinstance(side, dict) else None
        if not isinstance(shapes, dict):
            raise ContainerError(f"sequence: bad symbol shapes {shapes!r}")
        if "video" in shapes:
            coder = self.coder_for("video")
            symbols = {"video": coder.decode_member(segments.get("video", b""), tuple(shape), m)}
        else:
            if self.on_grid:
                need = [k for k in shapes if k in {f"m{j}" for j in range(self.key(m), m + 1)}]
            else:
                need = [k for k in shapes if k.startswith(f"m{m}.")]
            sub = {**side, "symbols": {k: shapes[k] for k in need}}
            q = self._decode_streams(sub, segments, dtype)
            symbols = q.symbols
        q = Quantized(symbols, side, {k: v for k, v in segments.items() if k not in shapes})
        return self._member(q, tuple(shape), dtype, m, symbols)

    def _decode_streams(self, side, segments, dtype) -> Quantized:
        shapes = side["symbols"]
        if not all(isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s) for s in shapes.values()):
            raise ContainerError(f"sequence: bad symbol shapes {shapes!r}")
        if not set(shapes) <= set(segments):
            raise ContainerError("sequence: a member's stream is missing")
        return Quantized({k: self.coder_for(k).decode(segments[k], tuple(s), self.symbol_dtype(k, dtype))
                          for k, s in shapes.items()}, side)

    def _member(self, q: Quantized, shape: tuple[int, ...], dtype: str, m: int, symbols: dict) -> np.ndarray:
        if not self.on_grid:
            sides = q.side.get("members")
            if not isinstance(sides, list) or not 0 <= m < len(sides) or not isinstance(sides[m], dict):
                raise ContainerError("sequence: bad member side info")
            p = f"m{m}."
            part = Quantized({k[len(p):]: v for k, v in symbols.items() if k.startswith(p)}, sides[m],
                             {k[len(p):]: v for k, v in q.arrays.items() if k.startswith(p)})
            return self.inner.dequantize(part, shape, dtype)
        steps = load_steps(q, shape, "sequence")
        if "video" in symbols:
            v = symbols["video"]
            level = v if v.shape == shape else v[m]
        else:
            level = None
            for j in range(self.key(m), m + 1):
                s = symbols.get(f"m{j}")
                if s is None or s.shape != shape:
                    raise ContainerError(f"sequence: member {j}'s symbols are missing or misshapen")
                level = s if level is None else level + s
        if level.shape != shape:
            raise ContainerError(f"sequence: member symbols of shape {level.shape}, expected {shape}")
        return from_float64(K.dequantize(level, steps, np), dtype)
