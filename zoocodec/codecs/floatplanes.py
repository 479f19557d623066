"""Lossless coding of fp32 / fp16 / bf16 by byte planes (the zipnn idea, with rANS).

Each value's bits are rotated left by one so the sign moves to the lowest bit and the
exponent fills the top byte; the bytes are then split into planes, top plane first.
The exponent plane of trained weights is highly skewed and entropy-codes well; the
mantissa planes are close to uniform but sometimes hold repeats that zstd finds (on
`minilm` the two lowest code 1.2% below their order-0 entropy). Each plane takes the
smallest of raw, order-0 rANS and zstd, each coded only where it may win: rANS where the
size of its stream, computed from the histogram and the table it would use, is 1% under
raw; zstd whole on planes up to 64 KiB, and on larger ones where a sample at a fast level
(an eighth of the plane, 32-256 KiB from its start and middle) beats the best so far. A plane
that no coder shrinks by 1% stays raw (GATE): decoding it costs as much as decoding one
that shrinks by half (smollm2-135m's fp32 holds a plane coded 0.6% under raw, a quarter of
its decoding for 0.15% of its size); zipnn keeps planes raw below 5%.

rANS tables have at most 12 probability bits (0.06% on minilm's exponents against 14),
so that the native decoder reads one packed table entry a step (finer tables, written before
up to 14 bits, take 8-byte entries): the 8 interleaved states of a substream form one vector
(native/rans_avx2.cpp), and a task advances up to 8 substreams (equal ones of at most 2^16 values: `substream`)
together so that their table lookups overlap; when only the exponent plane is coded it writes
the values straight from its registers. zstd planes (minilm's fp32 embedding has two) are
inflated first: on the native pass by the vendored zstd (native/inflate.cpp) when a model loads,
here by python-zstandard for frame()'s callers (the GPU decoder, one tensor's decode). The
encoder codes 4 substreams together the same way and writes the scalar encoder's bytes exactly.
Outputs are allocated on transparent huge pages.

Version 2 of the float coder (`planes=huffman`, the default) codes a plane that rANS would code
with canonical Huffman instead where that is at most 2% larger (minilm's exponents: 1.4%,
0.3% of the file): its native decoder reads about 3 symbols a lookup of a 12-bit table
(native/huffman.h), where rANS decodes one a step; minilm's bf16 planes decode about 1.3x faster.

Bitstream: n, number of planes, then per plane a mode byte (0 raw, 1 rANS order-0 (the
native stream of 256 byte symbols), 2 zstd, 3 Huffman (native/huffman.h)) and a varint
length, then the plane data.
"""
from __future__ import annotations

import threading

import numpy as np
import zstandard

from zoocodec.budget import unzstd_into
from zoocodec.codecs import native
from zoocodec.codecs.wire import Reader, put_uvarint
from zoocodec.errors import ContainerError

RAW, ORDER0, ZSTD, HUFFMAN = 0, 1, 2, 3
HUFFMAN_SLACK = 1.02  # Huffman where its stream is at most 2% larger than rANS's (minilm's exponents: 1.4%)
HUFFMAN_MIN = 1 << 16  # and the plane fills a substream: its decoding table takes as long as 50K symbols
ZSTD_LEVEL = 3
GATE = 0.99  # a plane is coded only where that takes at least 1% off it
SAMPLE_LEVEL = -1  # samples: a fast level finds the same long repeats at a third of the time
SMALL = 1 << 16  # planes up to this size are tried whole with zstd; larger ones on a sample first,
SAMPLE = 1 << 18  # an eighth of the plane, from SMALL / 2 up to this size
PRECISION = 12  # rANS probability bits at most: one 32-bit table entry a slot, the vector decoder's (16 KB)
_UINT = {2: np.uint16, 4: np.uint32}


_local = threading.local()


def _compressor(threads: int, level: int = ZSTD_LEVEL) -> zstandard.ZstdCompressor:
    """A ZstdCompressor per thread and thread count, made once: a model's hundreds of small
    planes each paid for a new compression context (0.3 ms apiece, most of a small plane's time)."""
    cache = _local.__dict__.setdefault("compressors", {})
    if (threads, level) not in cache:
        cache[threads, level] = zstandard.ZstdCompressor(level=level, threads=threads)
    return cache[threads, level]


def _zstd_wins(plane: np.ndarray, best: float) -> bool:
    """Does zstd beat `best` bytes on a sample of the plane (its start and middle, where
    repeated rows such as unused vocabulary entries sit), by 0.5%?"""
    half = min(max(plane.size // 16, SMALL // 4), SAMPLE // 2)
    mid = plane.size // 2
    sample = np.concatenate([plane[:half], plane[mid : mid + half]])
    size = len(_compressor(0, SAMPLE_LEVEL).compress(sample.tobytes()))
    return size < 0.995 * best * sample.size / plane.size


def substream(n: int) -> int:
    """Values per substream of a plane of `n` (every coded plane of a payload is cut alike): one
    substream up to native.SUBSTREAM values, else equal ones, 4 or a multiple of 8 of them. A
    decoder task advances up to 8 substreams together, Huffman's 4 at a time, and a group of 3
    decodes a symbol 1.6x slower than one of 4, a group of 2 1.9x: cut at 2^16, a 576 x 576
    matrix was 6 substreams, the last of 4K values, decoded as 3 + 3 and then 2."""
    if n <= native.SUBSTREAM:
        return native.SUBSTREAM
    subs = -(-n // native.SUBSTREAM)
    subs = 4 if subs <= 4 else -(-subs // 8) * 8
    return -(-n // subs)


def _code(plane: np.ndarray, threads: int, huffman: bool = False) -> tuple[int, np.ndarray | bytes]:
    """(mode, body) of one plane: the smallest of raw, rANS and zstd, each coded only where
    the plane's histogram (rANS: the size of its stream, from its table) or a sample (zstd)
    says it may win; with `huffman`, a plane rANS would code takes Huffman instead where its
    stream (sized from the histogram and its code lengths) is within HUFFMAN_SLACK of rANS's
    and the plane holds at least HUFFMAN_MIN values."""
    if not plane.size:
        return RAW, plane
    eng = native.engine()
    gate, chunk = int(GATE * plane.size), substream(plane.size)
    counts = eng.byte_histogram(plane)
    rans = eng.rans_size(counts, PRECISION, chunk, gate)  # (or a bound >= gate)
    guess = min(rans, gate)
    # the mantissa planes of most matrices are noise: zstd is tried whole on small planes only
    if plane.size <= SMALL or _zstd_wins(plane, guess):
        packed = _compressor(-1 if threads <= 0 else threads).compress(plane.tobytes())
        if len(packed) < guess:
            return ZSTD, packed
    if rans < gate and huffman and plane.size >= HUFFMAN_MIN:
        lengths = eng.huff_lengths(counts)
        size = eng.huff_size(counts, lengths, chunk) if lengths.any() else gate
        if size < gate and size <= HUFFMAN_SLACK * rans:
            return HUFFMAN, eng.huff_encode(plane, lengths, chunk, threads)
    if rans < gate:
        coded = eng.plane_encode(plane, PRECISION, chunk, threads)  # (rans_encode's bytes)
        if len(coded) < plane.size:
            return ORDER0, coded
    return RAW, plane


def encode(values: np.ndarray, threads: int = 0, huffman: bool = False) -> bytes:
    """A 2- or 4-byte float array (any shape) -> bytes (`huffman`: see _code)."""
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
        mode, body = _code(plane, threads, huffman)
        frame = bytearray([mode])
        put_uvarint(frame, len(body))
        parts += [frame, body]  # (a raw plane joins as the array itself: no copy before the join)
        del plane, body
    return b"".join(parts)


def frame(data: bytes | memoryview, count: int, dtype: np.dtype,
          huffman: bool = False) -> list[tuple[int, bytes | memoryview]]:
    """The planes of a payload of `count` values of `dtype`, top first: (RAW, bytes) or
    (ORDER0, a native rANS stream); zstd planes come inflated, as RAW, and Huffman planes decoded,
    as RAW (`huffman`: left as (HUFFMAN, the stream), for the native merge). The one parser of
    this frame, for the CPU decoder below and the GPU decoder (kernels/decode.py); the native
    batched decoder (plan.cpp) parses it too."""
    r = Reader(data, "float payload")
    n = r.uvarint()
    width = r.byte()
    if n != count or width != np.dtype(dtype).itemsize or width not in _UINT:
        raise r.fail(f"holds {n} values of {width} bytes, expected {count} of {np.dtype(dtype).itemsize}")
    parts = []
    for _ in range(width):
        mode = r.byte()
        body = r.take(r.uvarint(limit=len(r.data)))
        if mode == ZSTD:  # inflated into a block of its own (on huge pages from 4 MB on)
            plane = memoryview(native.engine().output_block(n))
            unzstd_into(body, plane, "corrupt float payload: zstd plane")
            body, mode = plane, RAW
        elif mode == HUFFMAN and not huffman:
            eng = native.engine()
            try:
                body, mode = eng.huff_decode(body, n), RAW
            except eng.CorruptStream as e:
                raise r.fail(f"corrupt Huffman plane: {e}") from None
        elif mode not in (RAW, ORDER0, HUFFMAN):
            raise r.fail(f"unknown plane mode {mode}")
        parts.append((mode, body))
    r.done()
    return parts


def decode(data: bytes | memoryview, count: int, dtype: np.dtype, threads: int = 0) -> np.ndarray:
    """Bytes -> flat array of `count` values of `dtype` (a 2- or 4-byte float type)."""
    parts = frame(data, count, dtype, huffman=True)
    n, width = count, np.dtype(dtype).itemsize
    eng = native.engine()
    try:
        bits = eng.float_merge(n, width, parts, threads)
    except eng.CorruptStream as e:
        raise ContainerError(f"corrupt float payload: {e}") from None
    return bits.view(dtype)
