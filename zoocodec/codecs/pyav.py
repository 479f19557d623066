"""Software video back end: FFmpeg's x264/x265 encoders and H.264/HEVC decoders through PyAV.

PyAV (the `video` extra) is imported where used. Exactness traps (found with PyAV 18.1.0 / FFmpeg 8.1.2): H.264 decodes
a gray stream as yuv420p and the gray conversion is not exact, so the luma plane is read
directly; x264's SEI options string is stripped from every packet.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from zoocodec.codecs.videostream import CODECS, Codec, Header, Options, pixel_format
from zoocodec.errors import ContainerError, SpecError

THREADS = 4  # fixed, so the bitstream does not depend on the machine's core count


def encode_frames(frames: list[np.ndarray], codec: Codec, depth: int, opts: Options,
                  keyint_frames: int) -> list[tuple[bytes, bool]]:
    """uint frames -> [(Annex B access unit, keyframe)] with x264/x265, one per frame, in order."""
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
        import av  # optional: pip install 'zoocodec[video]'
    except ImportError:
        raise SpecError("video coding needs PyAV: pip install 'zoocodec[video]'") from None
    return av


def decode_packets(packets: list[bytes], h: Header) -> list[np.ndarray]:
    """Annex B packets (from a keyframe on) -> luma planes as uint arrays, in order."""
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
