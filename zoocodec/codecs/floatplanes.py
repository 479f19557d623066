"""Lossless coding of fp32 / fp16 / bf16 by byte planes (the zipnn idea, with rANS).

Each value's bits are rotated left by one so the sign moves to the lowest bit and the
exponent fills the top byte; the bytes are then split into planes, top plane first.
The exponent plane of trained weights is highly skewed and entropy-codes well; the
mantissa planes are close to uniform but sometimes hold repeats that zstd finds (on
`minilm` the two lowest code 1.2% below their order-0 entropy). Each plane takes the
smallest of raw, order-0 rANS (tried where its entropy says it may win) and zstd (tried
whole on planes up to 128 KiB, and on larger ones where a sample says it wins: 128 KiB of
planes up to 1 MiB, 1 MiB of larger ones).

The native engine splits the planes and, decoding, rebuilds the values in chunks of
2^16 on its thread pool, rANS-decoding each chunk's substreams into a cache-sized buffer;
zstd planes are inflated first (they are rare).

Bitstream: n, number of planes, then per plane a mode byte (0 raw, 1 rANS order-0 (the
native stream of 256 byte symbols), 2 zstd) and a varint length, then the plane data.
"""
from __future__ import annotations

import threading

import numpy as np
import zstandard

from zoocodec.budget import unzstd
from zoocodec.codecs import native
from zoocodec.codecs.wire import Reader, put_uvarint
from zoocodec.errors import ContainerError

RAW, ORDER0, ZSTD = 0, 1, 2
ZSTD_LEVEL = 3
SAMPLE = 1 << 20  # bytes of a plane zstd is tried on before the whole plane
SMALL = 1 << 17  # planes up to this size are tried whole; up to SAMPLE, on a sample of this size
PRECISION = 12  # rANS probability bits at most: one 32-bit table entry a slot, the vector decoder's (16 KB)
_UINT = {2: np.uint16, 4: np.uint32}


def _entropy_bytes(plane: np.ndarray) -> float:
    counts = native.engine().byte_histogram(plane).astype(np.float64)
    counts = counts[counts > 0]
    n = plane.size
    return float(n * np.log2(n) - (counts * np.log2(counts)).sum()) / 8


_local = threading.local()


def _compressor(threads: int) -> zstandard.ZstdCompressor:
    """A ZstdCompressor per thread and thread count, made once: a model's hundreds of small
    planes each paid for a new compression context (0.3 ms apiece, most of a small plane's time)."""
    cache = _local.__dict__.setdefault("compressors", {})
    if threads not in cache:
        cache[threads] = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=threads)
    return cache[threads]


def _zstd_wins(plane: np.ndarray, best: float, sample: int = SAMPLE) -> bool:
    """Does zstd beat `best` bytes on a sample of the plane (its start and middle, where
    repeated rows such as unused vocabulary entries sit), by 0.5%?"""
    half = sample // 2
    mid = plane.size // 2
    sample = np.concatenate([plane[:half], plane[mid : mid + half]])
    size = len(_compressor(0).compress(sample.tobytes()))
    return size < 0.995 * best * sample.size / plane.size


def encode(values: np.ndarray, threads: int = 0) -> bytes:
    """A 2- or 4-byte float array (any shape) -> bytes."""
    width = values.dtype.itemsize
    if width not in _UINT:
        raise ValueError(f"float coder takes 2- or 4-byte floats, not {values.dtype}")
    bits = np.ascontiguousarray(values).view(_UINT[width]).ravel()
    planes = native.engine().float_split(bits, threads) if bits.size else [bits.view(np.uint8)[:0]] * width
    head = bytearray()
    put_uvarint(head, bits.size)
    head.append(width)
    parts = [head]
    while planes:  # each plane is released once coded: planes and bodies never both exist whole
        plane = planes.pop(0)
        mode, body = RAW, plane
        if plane.size:
            if _entropy_bytes(plane) < 0.995 * plane.size:  # else rANS cannot pay for its table
                coded = native.rans_encode(plane, 256, threads=threads, max_bits=PRECISION)
                if len(coded) < plane.size:
                    mode, body = ORDER0, coded
            best = len(body)
            # planes up to SMALL are tried whole; larger ones on a sample first (a quarter to an
            # eighth of a plane up to 1 MiB): the mantissa planes of most matrices are noise
            if plane.size <= SMALL or _zstd_wins(plane, best, SAMPLE if plane.size > SAMPLE else SMALL):
                z = _compressor(-1 if threads <= 0 else threads)
                packed = z.compress(plane.tobytes())
                if len(packed) < best:
                    mode, body = ZSTD, packed
        frame = bytearray([mode])
        put_uvarint(frame, len(body))
        parts += [frame, body]  # (a raw plane joins as the array itself: no copy before the join)
        del plane, body
    return b"".join(parts)


def frame(data: bytes | memoryview, count: int, dtype: np.dtype) -> list[tuple[int, bytes | memoryview]]:
    """The planes of a payload of `count` values of `dtype`, top first: (RAW, bytes) or
    (ORDER0, a native rANS stream); zstd planes come inflated, as RAW. The one parser of this
    frame, for the CPU decoder below and the GPU decoder (kernels/decode.py)."""
    r = Reader(data, "float payload")
    n = r.uvarint()
    width = r.byte()
    if n != count or width != np.dtype(dtype).itemsize or width not in _UINT:
        raise r.fail(f"holds {n} values of {width} bytes, expected {count} of {np.dtype(dtype).itemsize}")
    parts = []
    for _ in range(width):
        mode = r.byte()
        body = r.take(r.uvarint(limit=len(r.data)))
        if mode == ZSTD:
            body = unzstd(body, n, "corrupt float payload: zstd plane")
            mode = RAW
        elif mode not in (RAW, ORDER0):
            raise r.fail(f"unknown plane mode {mode}")
        parts.append((mode, body))
    r.done()
    return parts


def decode(data: bytes | memoryview, count: int, dtype: np.dtype, threads: int = 0) -> np.ndarray:
    """Bytes -> flat array of `count` values of `dtype` (a 2- or 4-byte float type)."""
    parts = frame(data, count, dtype)
    n, width = count, np.dtype(dtype).itemsize
    eng = native.engine()
    try:
        bits = eng.float_merge(n, width, parts, threads)
    except eng.CorruptStream as e:
        raise ContainerError(f"corrupt float payload: {e}") from None
    return bits.view(dtype)
