"""NVIDIA hardware video: NVDEC decode into GPU memory, NVENC encode, through PyNvVideoCodec.

Everything here is optional and imported lazily: PyNvVideoCodec (the `gpu` extra) raises
RuntimeError at import on a machine without the NVIDIA video driver libraries, and CuPy
needs a CUDA GPU. Callers ask `nvdec_available()` / `nvenc_available()` (cached) and fall
back to software (codecs/pyav.py, chosen by codecs/video.py) otherwise. Hopper GPUs (H100, H200) have NVDEC but no
NVENC; sweeps use `nvenc_available()` to give a Ray node the custom resource `nvenc`.

Decoded NV12 / P016 surfaces arrive through DLPack; the luma plane is their first
`height` rows (P016 holds 10/12-bit samples in the high bits of 16).
"""
from __future__ import annotations

import functools
import logging

import numpy as np

from zoocodec.codecs import pyav, videostream

log = logging.getLogger("zoocodec.video")

# (codec, pixel layout, bit depth, lossless) that NVDEC decoded identically to software on
# an H100 (bench/results/video_gpu.json); it refused gray (4:0:0) streams and 10-bit H.264.
# Anything else decodes in software.
NVDEC_VERIFIED = {
    ("hevc", "yuv420p", 8, True), ("hevc", "yuv420p", 8, False),
    ("hevc", "yuv420p", 10, True), ("hevc", "yuv420p", 10, False),
    ("hevc", "yuv420p", 12, True), ("hevc", "yuv420p", 12, False),
    ("h264", "yuv420p", 8, True), ("h264", "yuv420p", 8, False),
}


# Frame sizes NVDEC takes (Video Codec SDK decoder caps; width, height). Smaller tiles
# made cuvidCreateDecoder fail on the H100 (error 1), so such streams decode in software.
NVDEC_MIN = {"h264": (48, 16), "hevc": (144, 144)}
NVDEC_MAX = {"h264": (4096, 4096), "hevc": (8192, 8192)}


@functools.cache
def _load():
    """(PyNvVideoCodec module, None) or (None, why not)."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "no CUDA GPU"
    except Exception as e:  # ImportError, or a CUDA driver error
        return None, f"CuPy/CUDA unavailable ({type(e).__name__})"
    try:
        import PyNvVideoCodec as nvc  # optional: the `gpu` extra
    except ImportError:
        return None, "PyNvVideoCodec is not installed (pip install 'zoocodec[gpu]')"
    except RuntimeError as e:  # raised at import without the NVIDIA video driver libraries
        return None, f"PyNvVideoCodec cannot load the driver ({str(e).splitlines()[0][:160]})"
    return nvc, None


def nvdec_available() -> bool:
    return _load()[0] is not None


@functools.cache
def _nvenc_probe() -> str | None:
    """None when an NVENC session opens on GPU 0, else the reason it does not."""
    nvc, why = _load()
    if nvc is None:
        return why
    try:
        enc = nvc.CreateEncoder(256, 256, "NV12", True, codec="h264")
        del enc
    except Exception as e:  # the GPU has no encoder engine (H100, H200, A100) or no free session
        return f"this GPU has no usable NVENC ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    return None


def nvenc_available() -> bool:
    """True when this machine can encode with NVENC (for the Ray resource `nvenc`)."""
    return _nvenc_probe() is None


def nvenc_reason() -> str:
    return _nvenc_probe() or "available"


def can_decode(h) -> bool:
    """Whether NVDEC here decodes the stream described by videostream.Header `h`."""
    if not nvdec_available() or (h.codec, h.pix, h.depth, h.lossless) not in NVDEC_VERIFIED:
        return False
    (w0, h0), (w1, h1) = NVDEC_MIN[h.codec], NVDEC_MAX[h.codec]
    return w0 <= h.layout.tile_w <= w1 and h0 <= h.layout.tile_h <= h1


def nvdec_reason(h) -> str:
    nvc, why = _load()
    if nvc is None:
        return why
    if (h.codec, h.pix, h.depth, h.lossless) in NVDEC_VERIFIED:
        return f"{h.layout.tile_w}x{h.layout.tile_h} frames are outside NVDEC's {h.codec} sizes"
    lossless = "lossless " if h.lossless else ""
    return f"{lossless}{h.codec} {h.pix} {h.depth}-bit is not a profile NVDEC decodes"


# (codec, depth, frame width, height) -> PyNvVideoCodec decoder, reused by streams of that
# format only (the H100 runs verified reuse for one format, not reconfiguration between them)
_DECODERS: dict[tuple, object] = {}
MAX_DECODERS = 8


def decode_packets(packets: list[bytes], h) -> list:
    """Annex B packets (from a keyframe on) -> luma planes as CuPy arrays in GPU memory."""
    import cupy

    from zoocodec.errors import ContainerError

    nvc, why = _load()
    if nvc is None:
        raise RuntimeError(why)
    key = (h.codec, h.depth, h.layout.tile_w, h.layout.tile_h)
    dec = _DECODERS.get(key)
    if dec is None:  # creating one costs 0.05-0.3 s on an H100: reuse it for streams of the same format
        while len(_DECODERS) >= MAX_DECODERS:
            _DECODERS.pop(next(iter(_DECODERS)))
        codec = {"h264": nvc.cudaVideoCodec.H264, "hevc": nvc.cudaVideoCodec.HEVC}[h.codec]
        dec = _DECODERS[key] = nvc.CreateDecoder(gpuid=0, codec=codec, cudacontext=0, cudastream=0,
                                                 usedevicememory=True)
    height, width = h.layout.tile_h, h.layout.tile_w
    shift = 16 - h.depth if h.depth > 8 else 0
    frames = []
    try:
        for p in [*packets, b""]:  # an empty packet marks the end of the stream and flushes
            buf = np.frombuffer(p, dtype=np.uint8) if p else np.zeros(1, dtype=np.uint8)
            pd = nvc.PacketData()
            pd.bsl_data = int(buf.ctypes.data)
            pd.bsl = len(p)
            for f in dec.Decode(pd):
                surface = cupy.from_dlpack(f)
                surface = surface.reshape(surface.shape[0], -1) if surface.ndim == 3 else surface
                if surface.shape[0] < height or surface.shape[1] < width:
                    raise ContainerError(f"corrupt video payload: NVDEC frame {surface.shape}, "
                                         f"expected {height}x{width}")
                y = surface[:height, :width]
                frames.append((y >> shift) if shift else y.copy())  # the decoder reuses its surfaces
    except BaseException:
        _DECODERS.pop(key, None)  # never reuse a decoder left mid-stream
        raise
    if len(frames) != len(packets):
        raise ContainerError(f"corrupt video payload: NVDEC gave {len(frames)} frames for {len(packets)} packets")
    return frames


def to_host(frame) -> np.ndarray:
    return frame.get()


def decode_gpu(data: bytes | memoryview, member: int = 0, verify: bool = True):
    """A video bitstream's member -> int64 symbols as a CuPy array, decoded by NVDEC.

    The weights stay in GPU memory; `verify` copies them to the host once to check the
    member's CRC (the container already checks the payload's own CRC32 before this).
    """
    import cupy

    from zoocodec.errors import ContainerError

    h = videostream.Header.unpack(data)
    if not 0 <= member < h.members:
        raise ContainerError(f"video payload holds {h.members} members, not member {member}")
    if not can_decode(h):
        raise RuntimeError(nvdec_reason(h))
    t = h.frames_per_member
    u = cupy.zeros(h.layout.count, dtype=cupy.int64)
    for stream in h.streams:
        start = max(i for i in range(member * t + 1) if stream[i][1])
        frames = decode_packets([p for p, _ in stream[start : (member + 1) * t]], h)[member * t - start :]
        plane = h.layout.from_frames(frames, xp=cupy).astype(cupy.int64)
        u = (u << (8 * (h.planes > 1))) | plane
    u += h.lo
    if verify:
        videostream.check(h, member, cupy.asnumpy(u))
    return u


def nvenc_encode(frames: list[np.ndarray], codec: str, depth: int, crf: int | None,
                 keyint_frames: int) -> list[tuple[bytes, bool]]:
    """uint frames -> [(Annex B access unit, keyframe)] with NVENC (NV12 / P010, flat chroma).

    Lossless uses NVENC's lossless tuning; lossy a constant QP equal to `crf`.
    """
    nvc, why = _load()
    if nvc is None or depth > 10:
        raise RuntimeError(why or "NVENC takes 8- and 10-bit input only")
    h, w = frames[0].shape
    params = {"codec": codec, "bf": 0, "gop": keyint_frames or 1 << 20, "idrperiod": keyint_frames or 1 << 20}
    params.update({"tuning_info": "lossless"} if crf is None else {"rc": "constqp", "constqp": crf})
    enc = nvc.CreateEncoder(w, h, "NV12" if depth == 8 else "P010", True, **params)
    dtype = np.uint8 if depth == 8 else np.uint16
    shift = 0 if depth == 8 else 16 - depth
    stream = bytearray()
    for f in frames:
        surface = np.full((h * 3 // 2, w), (1 << (depth - 1)) << shift, dtype=dtype)
        surface[:h] = f.astype(dtype) << shift
        stream += bytes(enc.Encode(surface))
    stream += bytes(enc.EndEncode())
    packets = pyav.split_access_units(bytes(stream), codec)
    if len(packets) != len(frames):
        raise RuntimeError(f"NVENC gave {len(packets)} access units for {len(frames)} frames")
    gop = keyint_frames or len(frames)
    return [(p, i % gop == 0) for i, p in enumerate(packets)]
