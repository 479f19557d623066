"""Integer weights as video (coders `video-h264`, `video-hevc`): H.264 / HEVC frames of
quantized symbols, encoded with NVENC or x264/x265 and decoded with NVDEC or FFmpeg.

This is the front end: it lays symbols out (codecs/videostream.py holds the layout and the
bitstream header), picks a back end (codecs/nvdec.py, codecs/pyav.py) and falls back to
software where the hardware is missing or refuses a stream.

A tensor's symbols become frames: a 2-D view (rows = output channels, the rest flattened;
1-D and very thin tensors are folded into near-square rows), offset to unsigned by their
minimum, padded by edge replication and cut into tiles the codecs accept (even sides,
16..4096, so NVDEC can decode them too). Symbols that fit the codec's bit depth go into
the luma plane at 8, 10 or 12 bits (HEVC only for 12); wider symbols are split into 8-bit
planes (high byte first), each its own stream. Chroma is flat. A sequence of members
(checkpoints of one tensor) is one stream of member-major frames, so the encoder predicts
each member from the one before.

"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from zoocodec.codecs import nvdec, pyav
from zoocodec.codecs.base import CoderSpec, register_coder
from zoocodec.codecs.videostream import (
    CODECS,
    PIXEL_LAYOUTS,
    PRESETS,
    Codec,
    Header,
    Layout,
    Options,
    check,
    crc,
    depth_for,
)
from zoocodec.errors import ContainerError, SpecError
from zoocodec.registry import ints, one_of

log = logging.getLogger("zoocodec.video")


def encode(symbols: np.ndarray, opts: Options = Options()) -> bytes:
    """Integer symbols (one tensor, any shape) -> a self-describing video bitstream."""
    return encode_members([np.asarray(symbols)], opts)[0]


def encode_members(members: list[np.ndarray], opts: Options) -> tuple[bytes, list[np.ndarray]]:
    """Same-shape integer arrays (a sequence) -> (bitstream, the symbols a decoder returns).

    Lossless: the returned symbols equal the input. Lossy: they are what the stream decodes to.
    """
    opts.validate()
    codec = CODECS[opts.codec]
    shape = members[0].shape
    if any(m.shape != shape for m in members):
        raise SpecError("video: every member of a sequence must have the same shape")
    if opts.hw == "nvdec":  # pad small tensors up to the frame sizes NVDEC takes
        layout = Layout.for_shape(shape, *nvdec.NVDEC_MIN[codec.name])
    else:
        layout = Layout.for_shape(shape)
    flat = [np.ascontiguousarray(m, dtype=np.int64).reshape(-1) for m in members]
    lo = min((int(f.min()) for f in flat if f.size), default=0)
    span = max((int(f.max()) - lo for f in flat if f.size), default=0)
    depth, planes = depth_for(span, codec)
    if planes > 1 and opts.crf is not None:
        raise SpecError(f"lossy video needs symbols of at most {max(codec.depths)} bits for {codec.name}; "
                        f"these span {span.bit_length()} bits (use fewer bits or lossless)")
    if opts.hw == "nvdec":
        if (codec.name, opts.pix, depth, opts.crf is None) not in nvdec.NVDEC_VERIFIED:
            raise SpecError(f"hw=nvdec: NVDEC does not decode {opts.pix} {depth}-bit {codec.name} "
                            f"(it takes yuv420p, 8-bit H.264 or 8/10/12-bit HEVC)")
    unsigned = [f - lo for f in flat]
    streams = []
    for p in reversed(range(planes)):  # high byte first
        values = [(u >> (8 * p)) & 0xFF for u in unsigned] if planes > 1 else unsigned
        frames = [t for u in values for t in layout.to_frames(u)]
        streams.append(_encode_frames(frames, codec, depth, opts, keyint_frames=opts.keyint * layout.tiles))
    header = Header(opts.codec, opts.pix, len(members), layout, lo, depth, planes, opts.keyint, opts.crf is None,
                    [], streams)
    decoded = flat if opts.crf is None else decode_streams(header, range(len(members)), hw="cpu")
    header.crcs = [crc(d) for d in decoded]
    return header.pack(), decoded


def _encode_frames(frames: list[np.ndarray], codec: Codec, depth: int, opts: Options,
                   keyint_frames: int) -> list[tuple[bytes, bool]]:
    """uint frames -> [(Annex B access unit, keyframe)], one per frame, in order."""
    if opts.hw in ("auto", "nvenc"):
        level = logging.WARNING if opts.hw == "nvenc" else logging.DEBUG
        if nvdec.nvenc_available():
            try:
                return nvdec.nvenc_encode(frames, codec.name, depth, opts.crf, keyint_frames)
            except Exception as e:  # a format or size this NVENC refuses
                log.log(level, "NVENC refused this stream (%s); encoding with %s in software", e, codec.encoder)
        else:
            log.log(level, "NVENC is not available on this machine (%s); encoding with %s in software",
                    nvdec.nvenc_reason(), codec.encoder)
    return pyav.encode_frames(frames, codec, depth, opts, keyint_frames)


def decode_streams(h: Header, members, streams=None, hw: str = "auto") -> list[np.ndarray]:
    """Decode `members` (indices) -> their int64 symbols, each from the keyframe before it."""
    members = list(members)
    streams = streams or h.streams
    t = h.frames_per_member
    first, last = min(members) * t, (max(members) + 1) * t
    planes = []
    for stream in streams:
        start = max((i for i in range(first + 1) if stream[i][1]), default=None)
        if start is None:
            raise ContainerError("corrupt video payload: no keyframe before the requested member")
        frames = decode_packets([p for p, _ in stream[start:last]], h, hw)
        planes.append(frames[first - start :])
    out = []
    for m in members:
        k = (m - min(members)) * t
        u = np.zeros(h.layout.count, dtype=np.int64)
        for plane in planes:  # high byte first; a single plane is the whole symbol
            u = (u << (8 * (h.planes > 1))) | h.layout.from_frames(plane[k : k + t]).astype(np.int64)
        out.append(u + h.lo)
    return out


def decode_packets(packets: list[bytes], h: Header, hw: str = "auto") -> list[np.ndarray]:
    """Annex B packets (from a keyframe on) -> luma planes as uint arrays, in order."""
    if hw in ("auto", "nvdec"):
        if nvdec.can_decode(h):
            try:
                return [nvdec.to_host(f) for f in nvdec.decode_packets(packets, h)]
            except ContainerError:
                raise
            except Exception as e:  # a stream this NVDEC refuses after all: software gives the same symbols
                log.warning("NVDEC failed on this stream (%s); decoding in software", str(e).splitlines()[0][:160])
        elif hw == "nvdec":
            log.warning("NVDEC cannot decode this stream here (%s); decoding in software", nvdec.nvdec_reason(h))
    return pyav.decode_packets(packets, h)


# ---- the coders `video-h264` and `video-hevc` ----------------------------------------------
def decode(data: bytes | memoryview, count: int, hw: str = "auto") -> np.ndarray:
    """A one-member bitstream -> flat int64 symbols; `count` is what the caller expects."""
    h = Header.unpack(data)
    if h.members != 1 or h.layout.count != count:
        raise ContainerError(f"corrupt video payload: {h.members} members of {h.layout.count} symbols, "
                             f"expected 1 of {count}")
    return check(h, 0, decode_streams(h, [0], hw=hw)[0])


def decode_member(data: bytes | memoryview, member: int, hw: str = "auto") -> np.ndarray:
    """One member of a sequence bitstream, decoded from the keyframe before it."""
    h = Header.unpack(data)
    if not 0 <= member < h.members:
        raise ContainerError(f"video payload holds {h.members} members, not member {member}")
    return check(h, member, decode_streams(h, [member], hw=hw)[0])


@dataclass(frozen=True)
class VideoCoder(CoderSpec):
    """Symbols as H.264/HEVC frames: lossless unless `crf` (0..51) is given.

    `preset` is the encoder's; `pix` yuv420p (flat chroma) or gray; `hw` where to encode
    (auto | cpu | nvenc, or nvdec: a software-encoded stream NVDEC can decode). Decoding
    uses NVDEC where present and the stream is one it decodes, software otherwise; the
    bitstream's CRCs make both give the same symbols.
    """

    codec: ClassVar[str] = ""
    version = 1
    ranges = {"crf": ints(0, 51), "preset": one_of(*PRESETS), "pix": one_of(*PIXEL_LAYOUTS),
              "hw": one_of("auto", "cpu", "nvenc", "nvdec")}

    crf: int | None = None
    preset: str = "medium"
    pix: str = "yuv420p"
    hw: str = "auto"

    @property
    def lossy(self) -> bool:
        return self.crf is not None

    def options(self, keyint: int = 0) -> Options:
        return Options(codec=self.codec, crf=self.crf, preset=self.preset, pix=self.pix, hw=self.hw, keyint=keyint)

    def encode(self, symbols, trellis=None) -> bytes:
        return encode_members([np.asarray(symbols)], self.options())[0]

    def decode(self, data, shape, dtype=np.int64, trellis=None) -> np.ndarray:
        return decode(data, math.prod(shape)).reshape(shape).astype(dtype, copy=False)

    def describe(self, data) -> dict:
        return Header.unpack(data).describe()


@dataclass(frozen=True)
class MemberVideo(CoderSpec):
    """A video coder over a leading axis of members (a sequence), inter-coded, `keyint`
    members per group (0: one group). Not registered: the sequence method that uses it
    stores its video coder and keyint in its own spec."""

    name = "video-members"

    video: VideoCoder | None = None
    keyint: int = 0

    @property
    def lossy(self) -> bool:
        return self.video.lossy

    def encode(self, symbols, trellis=None) -> bytes:
        return encode_members(list(np.asarray(symbols)), self.video.options(self.keyint))[0]

    def decode(self, data, shape, dtype=np.int64, trellis=None) -> np.ndarray:
        h = Header.unpack(data)
        if not shape or h.members != shape[0] or h.layout.count != math.prod(shape[1:]):
            raise ContainerError(f"corrupt video payload: {h.members} members of {h.layout.count} symbols "
                                 f"for shape {tuple(shape)}")
        out = [check(h, m, s) for m, s in enumerate(decode_streams(h, range(h.members)))]
        return np.stack(out).reshape(shape).astype(dtype, copy=False)

    def decode_member(self, data, shape, m: int) -> np.ndarray:
        """Member `m` (of one member's `shape`), decoded from the keyframe before it."""
        symbols = decode_member(data, m)
        if symbols.size != math.prod(shape):
            raise ContainerError(f"video member holds {symbols.size} symbols, expected {math.prod(shape)}")
        return symbols.reshape(shape)

    def describe(self, data) -> dict:
        return Header.unpack(data).describe()


@register_coder
@dataclass(frozen=True)
class H264(VideoCoder):
    name = "video-h264"
    codec = "h264"


@register_coder
@dataclass(frozen=True)
class HEVC(VideoCoder):
    name = "video-hevc"
    codec = "hevc"
