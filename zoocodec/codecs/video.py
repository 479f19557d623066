"""Integer weights as video: H.264 / HEVC coding of quantized symbols through PyAV.

A tensor's symbols become frames: a 2-D view (rows = output channels, the rest flattened;
1-D and very thin tensors are folded into near-square rows), offset to unsigned by their
minimum, padded by edge replication and cut into tiles the codecs accept (even sides,
16..4096, so NVDEC can decode them too). Symbols that fit the codec's bit depth go into
the luma plane at 8, 10 or 12 bits (HEVC only for 12); wider symbols are split into 8-bit
planes (high byte first), each its own stream. Chroma is flat. A sequence of members
(checkpoints of one tensor) is one stream of member-major frames, so the encoder predicts
each member from the one before.

Bitstream (varints, see codecs/wire.py):
  b"ZV", version, codec, pixel layout, members, symbols per member, lo (signed),
  depth, planes, rows, cols, tile_h, tile_w, keyint (members per GOP), lossless, then one CRC32
  (4 bytes LE) of each member's decoded symbols, then per plane the packet table (one
  varint per frame: length * 2 + keyframe) followed by every plane's packets.
Packets are Annex B access units, one per frame (no B-frames), so a member is decoded
from the keyframe before it without a demuxer, and NVDEC can take the same packets.
The CRCs make a damaged or mis-decoded stream an error instead of silent garbage, in
lossy mode too (H.264/HEVC decoding is bit-exact by specification).
"""
from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import numpy as np

from zoocodec.codecs.base import CoderSpec, register_coder
from zoocodec.codecs.wire import Reader, put_svarint, put_uvarint
from zoocodec.errors import ContainerError, SpecError

log = logging.getLogger("zoocodec.video")

MAGIC = b"ZV"
VERSION = 1
MIN_SIDE, MAX_SIDE = 16, 4096  # x265 refuses < 16; NVDEC H.264 stops at 4096
FOLD_WIDTH = 1024
THREADS = 4  # fixed, so the bitstream does not depend on the machine's core count
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
PIXEL_LAYOUTS = ("yuv420p", "gray")  # yuv420p: flat chroma, the layout NVDEC and NVENC take


@dataclass(frozen=True)
class Codec:
    name: str  # zoocodec's name: h264 | hevc
    encoder: str  # FFmpeg encoder
    decoder: str  # FFmpeg decoder
    depths: tuple[int, ...]  # luma bit depths its software encoder takes


CODECS = {
    "h264": Codec("h264", "libx264", "h264", (8, 10)),
    "hevc": Codec("hevc", "libx265", "hevc", (8, 10, 12)),
}
CODEC_IDS = {"h264": 0, "hevc": 1}


@dataclass(frozen=True)
class Options:
    """How to encode: lossless unless `crf` is given; `hw` picks NVENC or software."""

    codec: str = "hevc"
    crf: int | None = None
    preset: str = "medium"
    pix: str = "yuv420p"
    hw: str = "auto"  # auto | cpu | nvenc | nvdec (nvdec: software encode, an NVDEC-decodable stream)
    keyint: int = 0  # members per GOP in a sequence; 0 = one GOP for the whole stream

    def validate(self) -> None:
        if self.codec not in CODECS:
            raise SpecError(f"video codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if self.crf is not None and not 0 <= self.crf <= 51:
            raise SpecError(f"video crf must be 0..51, got {self.crf}")
        if self.preset not in PRESETS:
            raise SpecError(f"video preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.pix not in PIXEL_LAYOUTS:
            raise SpecError(f"video pixel layout must be one of {', '.join(PIXEL_LAYOUTS)}, got {self.pix!r}")
        if self.hw not in ("auto", "cpu", "nvenc", "nvdec"):
            raise SpecError(f"video hw must be auto, cpu, nvenc or nvdec, got {self.hw!r}")
        if self.keyint < 0:
            raise SpecError(f"video keyint must be >= 0, got {self.keyint}")


# ---- frame layout ----------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where each symbol sits: a rows x cols view cut into tile_h x tile_w frames."""

    count: int
    rows: int
    cols: int
    tile_h: int
    tile_w: int

    @property
    def grid(self) -> tuple[int, int]:
        return -(-self.rows // self.tile_h), -(-self.cols // self.tile_w)

    @property
    def tiles(self) -> int:
        gr, gc = self.grid
        return gr * gc

    @classmethod
    def for_shape(cls, shape: tuple[int, ...], min_w: int = MIN_SIDE, min_h: int = MIN_SIDE) -> Layout:
        count = math.prod(shape)
        if len(shape) >= 2 and shape[0] >= MIN_SIDE and count // shape[0] >= MIN_SIDE:
            rows, cols = shape[0], count // shape[0]
        else:  # 1-D or thin: fold into rows of a near-square width
            cols = min(FOLD_WIDTH, max(MIN_SIDE, math.isqrt(max(count - 1, 0)) + 1))
            rows = max(1, -(-count // cols))
        return cls(count, rows, cols, _side(rows, min_h), _side(cols, min_w))

    def to_frames(self, u: np.ndarray) -> list[np.ndarray]:
        """Flat unsigned symbols -> tiles (edge-padded), row-major."""
        flat = np.empty(self.rows * self.cols, dtype=u.dtype)
        flat[: self.count] = u
        flat[self.count :] = u[-1] if self.count else 0
        gr, gc = self.grid
        view = flat.reshape(self.rows, self.cols)
        padded = np.pad(view, ((0, gr * self.tile_h - self.rows), (0, gc * self.tile_w - self.cols)), mode="edge")
        return [padded[i * self.tile_h : (i + 1) * self.tile_h, j * self.tile_w : (j + 1) * self.tile_w]
                for i in range(gr) for j in range(gc)]

    def from_frames(self, frames: list, xp=np):
        """Tiles -> flat unsigned symbols (padding dropped); `xp` is NumPy or CuPy."""
        gr, gc = self.grid
        rows = [xp.concatenate(frames[i * gc : (i + 1) * gc], axis=1) for i in range(gr)]
        return xp.concatenate(rows, axis=0)[: self.rows, : self.cols].reshape(-1)[: self.count]


def _side(n: int, least: int = MIN_SIDE) -> int:
    """The tile side for a dimension of n: even, least..MAX_SIDE, tiles of equal size."""
    pieces = -(-n // MAX_SIDE)
    side = -(-n // pieces)
    return max(least, side + (side & 1))


def depth_for(span: int, codec: Codec) -> tuple[int, int]:
    """(bit depth per plane, number of planes) for unsigned symbols 0..span."""
    bits = max(1, int(span).bit_length())
    for d in codec.depths:
        if bits <= d:
            return d, 1
    return 8, -(-bits // 8)


def pixel_format(pix: str, depth: int) -> str:
    return pix if depth == 8 else f"{pix}{depth}le"


# ---- encode ---------------------------------------------------------------------------
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
        from zoocodec.codecs.nvdec import NVDEC_MIN  # noqa: PLC0415

        layout = Layout.for_shape(shape, *NVDEC_MIN[codec.name])
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
        from zoocodec.codecs.nvdec import NVDEC_VERIFIED  # noqa: PLC0415

        if (codec.name, opts.pix, depth, opts.crf is None) not in NVDEC_VERIFIED:
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
    decoded = flat if opts.crf is None else header.decode_streams(range(len(members)), hw="cpu")
    header.crcs = [crc(d) for d in decoded]
    return header.pack(), decoded


def _encode_frames(frames: list[np.ndarray], codec: Codec, depth: int, opts: Options,
                   keyint_frames: int) -> list[tuple[bytes, bool]]:
    """uint frames -> [(Annex B access unit, keyframe)], one per frame, in order."""
    if opts.hw in ("auto", "nvenc"):
        from zoocodec.codecs import nvdec  # noqa: PLC0415  (imports PyNvVideoCodec lazily itself)

        level = logging.WARNING if opts.hw == "nvenc" else logging.DEBUG
        if nvdec.nvenc_available():
            try:
                return nvdec.nvenc_encode(frames, codec.name, depth, opts.crf, keyint_frames)
            except Exception as e:  # a format or size this NVENC refuses
                log.log(level, "NVENC refused this stream (%s); encoding with %s in software", e, codec.encoder)
        else:
            log.log(level, "NVENC is not available on this machine (%s); encoding with %s in software",
                    nvdec.nvenc_reason(), codec.encoder)
    av = _av()
    h, w = frames[0].shape
    ctx = av.CodecContext.create(codec.encoder, "w")
    ctx.width, ctx.height = w, h
    ctx.pix_fmt = pixel_format(opts.pix, depth)
    ctx.time_base = Fraction(1, 25)
    ctx.framerate = Fraction(25, 1)
    ctx.options = _encoder_options(codec, opts, keyint_frames)
    out: list[tuple[bytes, bool]] = []
    try:
        for i, f in enumerate(frames):
            frame = _to_videoframe(av, f, ctx.pix_fmt, depth)
            frame.pts = i
            out += [(_strip_sei(bytes(p), codec.name), bool(p.is_keyframe)) for p in ctx.encode(frame)]
        out += [(_strip_sei(bytes(p), codec.name), bool(p.is_keyframe)) for p in ctx.encode(None)]
    except av.FFmpegError as e:
        raise SpecError(f"{codec.encoder} refused a {w}x{h} {ctx.pix_fmt} frame: {e}") from None
    if len(out) != len(frames):
        raise RuntimeError(f"{codec.encoder} gave {len(out)} packets for {len(frames)} frames")
    return out


def _encoder_options(codec: Codec, opts: Options, keyint_frames: int) -> dict[str, str]:
    gop = keyint_frames if keyint_frames > 0 else 1 << 20
    if codec.name == "h264":
        params = f"threads={THREADS}:bframes=0:keyint={gop}:min-keyint={gop}:scenecut=0"
        rate = {"qp": "0"} if opts.crf is None else {"crf": str(opts.crf)}
        return {"preset": opts.preset, "x264-params": params, **rate}
    params = ["log-level=error", "info=0", f"pools={THREADS}", "frame-threads=1", "bframes=0", f"keyint={gop}",
              f"min-keyint={gop}", "scenecut=0", "open-gop=0"]
    params.append("lossless=1" if opts.crf is None else f"crf={opts.crf}")
    return {"preset": opts.preset, "x265-params": ":".join(params)}


def _strip_sei(packet: bytes, codec: str) -> bytes:
    """Drop H.264 SEI NAL units (x264 writes its ~600-byte options string there); decoding ignores them."""
    if codec != "h264":
        return packet  # x265 is told info=0 instead
    starts, m = [], packet.find(b"\0\0\1")
    while m >= 0:
        starts.append(m)
        m = packet.find(b"\0\0\1", m + 3)
    if not starts:
        return packet
    out = bytearray()
    for i, m in enumerate(starts):
        end = starts[i + 1] - (packet[starts[i + 1] - 1] == 0) if i + 1 < len(starts) else len(packet)
        if packet[m + 3] & 0x1F != 6:
            out += b"\0\0\0\1" + packet[m + 3 : end]
    return bytes(out)


def split_access_units(stream: bytes, codec: str) -> list[bytes]:
    """An Annex B elementary stream -> its access units (one per frame), with FFmpeg's parser."""
    ctx = _av().CodecContext.create(CODECS[codec].decoder, "r")
    return [bytes(p) for p in ctx.parse(stream) + ctx.parse(None)]


def _to_videoframe(av, tile: np.ndarray, pix_fmt: str, depth: int):
    h, w = tile.shape
    frame = av.VideoFrame(w, h, pix_fmt)
    dtype = np.uint8 if depth == 8 else np.dtype("<u2")
    itemsize = np.dtype(dtype).itemsize
    for i, plane in enumerate(frame.planes):
        buf = np.frombuffer(plane, dtype=dtype).reshape(plane.height, plane.line_size // itemsize)
        if i == 0:
            buf[:, :w] = tile
        else:
            buf[:] = 1 << (depth - 1)
    return frame


def _av():
    try:
        import av  # noqa: PLC0415  (optional: pip install 'zoocodec[video]')
    except ImportError:
        raise SpecError("video coding needs PyAV: pip install 'zoocodec[video]'") from None
    return av


def crc(symbols: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(symbols, dtype="<i8").tobytes())


# ---- the bitstream --------------------------------------------------------------------
@dataclass
class Header:
    codec: str
    pix: str
    members: int
    layout: Layout
    lo: int
    depth: int
    planes: int
    keyint: int
    lossless: bool
    crcs: list[int]
    streams: list[list[tuple[bytes, bool]]]  # per plane: (packet, keyframe) per frame

    @property
    def frames_per_member(self) -> int:
        return self.layout.tiles

    def describe(self) -> dict:
        """What a container header shows about this stream (for inspect; the bitstream is authoritative)."""
        return {"codec": self.codec, "pix_fmt": pixel_format(self.pix, self.depth), "depth": self.depth,
                "planes": self.planes, "profile": profile_name(self.codec, self.pix, self.depth, self.lossless),
                "frame": [self.layout.tile_w, self.layout.tile_h], "frames": self.layout.tiles * self.members,
                "view": [self.layout.rows, self.layout.cols],
                "padding": self.layout.tiles * self.layout.tile_h * self.layout.tile_w - self.layout.count}

    def pack(self) -> bytes:
        out = bytearray(MAGIC)
        for v in (VERSION, CODEC_IDS[self.codec], PIXEL_LAYOUTS.index(self.pix), self.members, self.layout.count):
            put_uvarint(out, v)
        put_svarint(out, self.lo)
        for v in (self.depth, self.planes, self.layout.rows, self.layout.cols, self.layout.tile_h,
                  self.layout.tile_w, self.keyint, int(self.lossless)):
            put_uvarint(out, v)
        for c in self.crcs:
            out += c.to_bytes(4, "little")
        for stream in self.streams:
            for packet, key in stream:
                put_uvarint(out, 2 * len(packet) + key)
        for stream in self.streams:
            for packet, _ in stream:
                out += packet
        return bytes(out)

    @classmethod
    def unpack(cls, data: bytes | memoryview) -> Header:
        r = Reader(data, "video payload")
        if bytes(r.take(2)) != MAGIC:
            raise r.fail("bad magic")
        version = r.uvarint()
        if version != VERSION:
            raise r.fail(f"version {version} (this zoocodec reads {VERSION})")
        codec_id, pix_id = r.uvarint(limit=8), r.uvarint(limit=8)
        names = {v: k for k, v in CODEC_IDS.items()}
        if codec_id not in names or pix_id >= len(PIXEL_LAYOUTS):
            raise r.fail("unknown codec or pixel layout")
        members, count = r.uvarint(limit=1 << 20), r.uvarint(limit=1 << 40)
        lo = r.svarint()
        depth, planes = r.uvarint(limit=16), r.uvarint(limit=8)
        rows, cols, tile_h, tile_w = (r.uvarint(limit=1 << 40) for _ in range(4))
        keyint, lossless = r.uvarint(limit=1 << 20), r.uvarint(limit=1)
        codec = names[codec_id]
        if depth not in CODECS[codec].depths or planes < 1 or (planes > 1 and depth != 8) or members < 1:
            raise r.fail(f"depth {depth} x {planes} planes, {members} members")
        if not (MIN_SIDE <= tile_h <= MAX_SIDE and MIN_SIDE <= tile_w <= MAX_SIDE) or tile_h % 2 or tile_w % 2 \
                or rows * cols < count or (count and (rows == 0 or cols == 0)):
            raise r.fail(f"layout {rows}x{cols} in {tile_h}x{tile_w} tiles for {count} symbols")
        layout = Layout(count, rows, cols, tile_h, tile_w)
        crcs = [int.from_bytes(r.take(4), "little") for _ in range(members)]
        nframes = layout.tiles * members
        tables = [[r.uvarint(limit=1 << 40) for _ in range(nframes)] for _ in range(planes)]
        streams = [[(bytes(r.take(v >> 1)), bool(v & 1)) for v in table] for table in tables]
        r.done()
        return cls(codec, PIXEL_LAYOUTS[pix_id], members, layout, lo, depth, planes, keyint, bool(lossless), crcs,
                   streams)

    def decode_streams(self, members, streams=None, hw: str = "auto") -> list[np.ndarray]:
        """Decode `members` (indices) -> their int64 symbols, each from the keyframe before it."""
        members = list(members)
        streams = streams or self.streams
        t = self.frames_per_member
        first, last = min(members) * t, (max(members) + 1) * t
        planes = []
        for stream in streams:
            start = max((i for i in range(first + 1) if stream[i][1]), default=None)
            if start is None:
                raise ContainerError("corrupt video payload: no keyframe before the requested member")
            frames = decode_packets([p for p, _ in stream[start:last]], self, hw)
            planes.append(frames[first - start :])
        out = []
        for m in members:
            k = (m - min(members)) * t
            u = np.zeros(self.layout.count, dtype=np.int64)
            for plane in planes:  # high byte first; a single plane is the whole symbol
                u = (u << (8 * (self.planes > 1))) | self.layout.from_frames(plane[k : k + t]).astype(np.int64)
            out.append(u + self.lo)
        return out


def profile_name(codec: str, pix: str, depth: int, lossless: bool) -> str:
    """The profile the software encoders produce (x264 lossless is always High 4:4:4 Predictive)."""
    if codec == "h264":
        if lossless:
            return "High 4:4:4 Predictive"
        return "High" if depth == 8 else "High 10"  # gray is 4:0:0, which High allows
    if pix == "gray" or depth == 12:
        return "Rext"
    return "Main" if depth == 8 else "Main 10"


def decode_packets(packets: list[bytes], h: Header, hw: str = "auto") -> list[np.ndarray]:
    """Annex B packets (from a keyframe on) -> luma planes as uint arrays, in order."""
    if hw in ("auto", "nvdec"):
        from zoocodec.codecs import nvdec  # noqa: PLC0415

        if nvdec.can_decode(h):
            try:
                return [nvdec.to_host(f) for f in nvdec.decode_packets(packets, h)]
            except ContainerError:
                raise
            except Exception as e:  # a stream this NVDEC refuses after all: software gives the same symbols
                log.warning("NVDEC failed on this stream (%s); decoding in software", str(e).splitlines()[0][:160])
        elif hw == "nvdec":
            log.warning("NVDEC cannot decode this stream here (%s); decoding in software", nvdec.nvdec_reason(h))
    av = _av()
    ctx = av.CodecContext.create(CODECS[h.codec].decoder, "r")
    ctx.thread_count = THREADS
    frames = []
    try:
        for p in packets:
            frames += ctx.decode(av.Packet(p))
        frames += ctx.decode(None)
    except av.FFmpegError as e:
        raise ContainerError(f"corrupt video payload: {e}") from None
    if len(frames) != len(packets):
        raise ContainerError(f"corrupt video payload: {len(frames)} frames decoded from {len(packets)} packets")
    return [luma(f, h) for f in frames]


def luma(frame, h: Header) -> np.ndarray:
    """The luma plane of a decoded frame, read directly (the gray conversion path is not exact)."""
    if (frame.width, frame.height) != (h.layout.tile_w, h.layout.tile_h):
        raise ContainerError(f"corrupt video payload: frame {frame.width}x{frame.height}, "
                             f"expected {h.layout.tile_w}x{h.layout.tile_h}")
    plane = frame.planes[0]
    dtype = np.uint8 if h.depth == 8 else np.dtype("<u2")
    if plane.line_size < frame.width * np.dtype(dtype).itemsize:
        raise ContainerError(f"corrupt video payload: decoded as {frame.format.name}, expected {h.depth}-bit")
    a = np.frombuffer(plane, dtype=dtype).reshape(plane.height, plane.line_size // np.dtype(dtype).itemsize)
    return a[:, : frame.width].copy()


# ---- the coders `video-h264` and `video-hevc` ----------------------------------------------
def decode(data: bytes | memoryview, count: int, hw: str = "auto") -> np.ndarray:
    """A one-member bitstream -> flat int64 symbols; `count` is what the caller expects."""
    h = Header.unpack(data)
    if h.members != 1 or h.layout.count != count:
        raise ContainerError(f"corrupt video payload: {h.members} members of {h.layout.count} symbols, "
                             f"expected 1 of {count}")
    return check(h, 0, h.decode_streams([0], hw=hw)[0])


def decode_member(data: bytes | memoryview, member: int, hw: str = "auto") -> np.ndarray:
    """One member of a sequence bitstream, decoded from the keyframe before it."""
    h = Header.unpack(data)
    if not 0 <= member < h.members:
        raise ContainerError(f"video payload holds {h.members} members, not member {member}")
    return check(h, member, h.decode_streams([member], hw=hw)[0])


def check(h: Header, member: int, symbols: np.ndarray) -> np.ndarray:
    if crc(symbols) != h.crcs[member]:
        raise ContainerError(f"corrupt video payload: member {member} decodes to symbols that fail their CRC")
    return symbols


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

    crf: int | None = None
    preset: str = "medium"
    pix: str = "yuv420p"
    hw: str = "auto"

    @property
    def lossy(self) -> bool:
        return self.crf is not None

    def options(self, keyint: int = 0) -> Options:
        return Options(codec=self.codec, crf=self.crf, preset=self.preset, pix=self.pix, hw=self.hw, keyint=keyint)

    def validate(self) -> None:
        self.options().validate()

    def encode(self, symbols, trellis=None) -> bytes:
        return encode_members([np.asarray(symbols)], self.options())[0]

    def decode(self, data, shape, dtype=np.int64, trellis=None) -> np.ndarray:
        return decode(data, math.prod(shape)).reshape(shape).astype(dtype, copy=False)

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
