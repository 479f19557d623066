"""The video bitstream of zoocodec: frame layout, codec tables, options and the header.

No back end here (codecs/pyav.py encodes and decodes in software, codecs/nvdec.py on NVIDIA
hardware, codecs/video.py chooses between them and is the `video-*` coders).

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

import math
import zlib
from dataclasses import dataclass

import numpy as np

from zoocodec.codecs.wire import Reader, put_svarint, put_uvarint
from zoocodec.errors import ContainerError, SpecError

MAGIC = b"ZV"
VERSION = 1
MIN_SIDE, MAX_SIDE = 16, 4096  # x265 refuses < 16; NVDEC H.264 stops at 4096
FOLD_WIDTH = 1024
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


def profile_name(codec: str, pix: str, depth: int, lossless: bool) -> str:
    """The profile the software encoders produce (x264 lossless is always High 4:4:4 Predictive)."""
    if codec == "h264":
        if lossless:
            return "High 4:4:4 Predictive"
        return "High" if depth == 8 else "High 10"  # gray is 4:0:0, which High allows
    if pix == "gray" or depth == 12:
        return "Rext"
    return "Main" if depth == 8 else "Main 10"


def check(h: Header, member: int, symbols: np.ndarray) -> np.ndarray:
    if crc(symbols) != h.crcs[member]:
        raise ContainerError(f"corrupt video payload: member {member} decodes to symbols that fail their CRC")
    return symbols
