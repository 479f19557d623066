"""Order-0 rANS coding of integer symbols with the native engine (coder `ans`), plus a
packed-zstd fallback; and the one ANS stream primitive every coder here uses (encode_stream
/ decode_stream under an integer frequency table the caller keeps).

Bitstream: a mode byte, 0 = rANS, 1 = packed little-endian ints + zstd (chosen when
smaller, e.g. for near-uniform wide alphabets whose table would cost more than it saves).
The rANS frame with k = 0 is parsed by the native engine (codecs/native/ans_frame.h), for
this decoder, the batched CPU decoder and the GPU decoder alike; ans.py reads the others.
  rANS: lo (signed varint), k (a byte), then the native stream of (symbols - lo) >> k
        (zoocodec/codecs/native/rans.h: count, alphabet, precision, table, substreams of
        2^16 symbols decoded in parallel). k = 0 unless the alphabet is wider than 2^16:
        then k low bits of each symbol follow the stream raw (bit-packed, little-endian),
        and the stream's byte length precedes it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import zstandard

from zoocodec.budget import unzstd
from zoocodec.codecs import native
from zoocodec.codecs.base import CoderSpec, register_coder
from zoocodec.codecs.wire import Reader, put_svarint, put_uvarint
from zoocodec.kernels.backend import on_device

TABLE_SCALE = 1 << 16
MAX_ALPHABET = native.RANS_MAX_ALPHABET  # of one rANS table
ANS, PACKED = 0, 1


def _narrow(idx: np.ndarray, size: int) -> np.ndarray:
    return np.ascontiguousarray(idx, dtype=np.uint8 if size <= 256 else np.uint16).ravel()


def encode_stream(idx: np.ndarray, freqs: np.ndarray) -> bytes:
    """Indices 0..len(freqs)-1 under integer frequencies (any sum, two or more non-zero)."""
    return native.rans_encode_freqs(_narrow(idx, len(freqs)), freqs)


def decode_stream(data: memoryview, freqs: np.ndarray, count: int, r: Reader) -> np.ndarray:
    """`count` int64 indices from one stream of encode_stream; damage raises ContainerError."""
    return native.rans_decode_freqs(data, freqs, count, what=r.what).astype(np.int64)


def quantized_freqs(counts: np.ndarray) -> np.ndarray:
    """Integer frequencies ~2**16 in total, every present symbol at least 1."""
    total = int(counts.sum())
    scale = max(TABLE_SCALE, 4 * int(np.count_nonzero(counts)))
    freqs = np.floor(counts.astype(np.float64) * (scale / total)).astype(np.int64)
    freqs[(counts > 0) & (freqs == 0)] = 1
    return freqs


def put_table(out: bytearray, freqs: np.ndarray) -> None:
    """An integer frequency table (zero runs collapsed)."""
    i, n = 0, len(freqs)
    nz = np.flatnonzero(freqs)
    for j in nz:
        if j > i:  # a run of zeros: 0 then the run length - 1
            put_uvarint(out, 0)
            put_uvarint(out, int(j - i - 1))
        put_uvarint(out, int(freqs[j]))
        i = j + 1
    if i < n:
        put_uvarint(out, 0)
        put_uvarint(out, n - i - 1)


def read_table(r: Reader, size: int) -> np.ndarray:
    freqs = np.zeros(size, dtype=np.int64)
    i = 0
    while i < size:
        f = r.uvarint(limit=1 << 40)
        if f == 0:
            run = r.uvarint(limit=size) + 1
            if i + run > size:
                raise r.fail("frequency table overruns its alphabet")
            i += run
        else:
            freqs[i] = f
            i += 1
    if freqs.sum() == 0:
        raise r.fail("empty frequency table")
    return freqs


def _packed(symbols: np.ndarray) -> bytes:
    out = bytearray([PACKED])
    lo = int(symbols.min()) if symbols.size else 0
    width = _width(int(symbols.max()) - lo if symbols.size else 0)
    put_uvarint(out, symbols.size)
    put_svarint(out, lo)
    out.append(width)
    raw = (symbols - lo).astype(f"<u{width}").tobytes()
    out += zstandard.ZstdCompressor(level=9).compress(raw)
    return bytes(out)


def _width(span: int) -> int:
    return 1 if span < 1 << 8 else 2 if span < 1 << 16 else 4 if span < 1 << 32 else 8


def encode(symbols: np.ndarray) -> bytes:
    """Symbols (any integer array) -> bytes; the smaller of rANS and packed zstd.

    Alphabets of up to 2^16 symbols go to the engine as uint8/uint16 indices made block by
    block from the symbols' own type: no int64 copy of a large tensor's symbols."""
    s = np.ascontiguousarray(symbols).ravel()
    if s.size == 0:
        return _packed(s.astype(np.int64))
    lo, hi = int(s.min()), int(s.max())
    k = max(0, (hi - lo).bit_length() - 16)  # wide alphabets: code the top 16 bits
    if k > 48:
        return _packed(s.astype(np.int64))
    out = bytearray([ANS])
    put_svarint(out, lo)
    out.append(k)
    top = ((hi - lo) >> k) + 1
    if not k:  # the frame's first bytes go in front of the stream in the engine: one copy of it
        width = np.dtype(np.uint8 if top <= 256 else np.uint16)
        if s.dtype.itemsize == width.itemsize:  # int8 / int16 symbols: the engine subtracts lo as it reads
            coded = native.rans_encode(s.view(width), top, add=-lo % (1 << (8 * width.itemsize)), prefix=bytes(out))
        else:
            coded = native.rans_encode(_offset(s, -lo, width), top, prefix=bytes(out))
    else:
        s = s.astype(np.int64)
        idx = (s - lo).astype(np.uint64)
        stream = native.rans_encode(_narrow(idx >> np.uint64(k), top), top)
        put_uvarint(out, len(stream))
        out += stream
        bits = (idx[:, None] >> np.arange(k, dtype=np.uint64)) & np.uint64(1)
        out += np.packbits(bits.astype(np.uint8).ravel(), bitorder="little").tobytes()
        coded = bytes(out)
    if len(coded) > s.size:  # wide, flat alphabets: the table can cost more than it saves
        packed = _packed(s.astype(np.int64, copy=False))
        if len(packed) < len(coded):
            return packed
    return coded


def decode(data: bytes | memoryview, count: int, narrow: bool = False) -> np.ndarray:
    """Bytes -> int64 symbols (`narrow`: the smallest signed type that holds them, made
    without an int64 copy); `count` is the number the caller expects (from the shape)."""
    frame = native.ans_decode(data, count, what="entropy-coded payload")  # the one parser of the rANS frame
    if frame is not None:
        lo, idx = frame
        dt = narrowest(lo, lo + (int(idx.max()) if idx.size else 0)) if narrow else np.dtype(np.int64)
        if dt.itemsize == idx.itemsize:  # in place: two's complement wraps to the right values
            out = idx.view(dt)
            out += np.array(lo).astype(dt)
            return out
        return _offset(idx, lo, dt)
    r = Reader(data, "entropy-coded payload")  # the frames the native parser leaves here
    if r.byte() == PACKED:
        lo, width, raw = unpack(r, count)
        return np.frombuffer(raw, dtype=f"<u{width}").astype(np.int64) + lo
    lo, k, stream, packed = wide(r, count)
    top = native.rans_decode(stream, count, what=r.what).astype(np.int64)
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=count * k, bitorder="little")
    low = (bits.reshape(count, k).astype(np.int64) << np.arange(k, dtype=np.int64)).sum(axis=1)
    return (top << k | low) + lo


def wide(r: Reader, count: int) -> tuple[int, int, memoryview, memoryview]:
    """The rANS frame with raw low bits after its mode byte: (lo, k, the native stream of the
    symbols' top bits, their k low bits packed little-endian); the CPU and GPU decoders both read it here."""
    lo = r.svarint()
    k = r.byte()
    stream = r.take(r.uvarint(limit=len(r.data)))
    low = r.take(-(-count * k // 8))
    r.done()
    return lo, k, stream, low


def unpack(r: Reader, count: int) -> tuple[int, int, bytes]:
    """The packed frame after its mode byte: (lo, width, the inflated little-endian ints), each
    symbol lo + an unsigned int of `width` bytes (the CPU and GPU decoders both read it here)."""
    n = r.uvarint()
    if n != count:
        raise r.fail(f"holds {n} symbols, expected {count}")
    lo = r.svarint()
    width = r.byte()
    if width not in (1, 2, 4, 8):
        raise r.fail(f"bad symbol width {width}")
    return lo, width, unzstd(r.rest(), n * width, "corrupt entropy-coded payload: packed symbols")


def _offset(a: np.ndarray, by: int, dtype) -> np.ndarray:
    """a + by as integer `dtype` (which holds every result): in that dtype's own modular arithmetic, which
    gives the result's bits whatever wraps on the way (through int64, it took more than the decoding)."""
    dt = np.dtype(dtype)
    if a.dtype.kind in "iu" and dt.kind == "u" and a.dtype.itemsize == dt.itemsize:
        # same width (int8 symbols -> uint8 indices): modular addition is exact when results fit
        return a.view(dt) + dt.type(by % (1 << (8 * dt.itemsize)))
    out = a.astype(dt)
    out += np.array(by % (1 << (8 * dt.itemsize))).astype(dt)
    return out


def narrowest(lo: int, hi: int) -> np.dtype:
    """The smallest signed integer type holding lo..hi."""
    for dt in (np.int8, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def as_requested(symbols: np.ndarray, dtype) -> np.ndarray:
    """Decoded symbols as the caller's `dtype`; None asks for the narrowest signed type
    that holds them (methods whose dequantization takes any integer type)."""
    if dtype is not None:
        return symbols.astype(dtype, copy=False)
    if not symbols.size:
        return symbols.astype(np.int8)
    dt = narrowest(int(symbols.min()), int(symbols.max()))
    return symbols if symbols.dtype == dt else _offset(symbols, 0, dt)


@register_coder
@dataclass(frozen=True)
class Ans(CoderSpec):
    """Order-0 rANS (the default coder): one frequency table per tensor, substreams of 2^16 symbols."""

    name = "ans"
    version = 1
    narrows = True
    gpu_decode = True
    gpu_encode = True

    def encode(self, symbols, trellis=None) -> bytes:
        if not on_device(symbols):
            return encode(symbols)
        from zoocodec.kernels import rans_encode  # symbols on a GPU: coded there, the same bytes

        return rans_encode.encode_checked(symbols)

    def decode(self, data, shape, dtype=np.int64, trellis=None) -> np.ndarray:
        return as_requested(decode(data, math.prod(shape), narrow=dtype is None), dtype).reshape(shape)
