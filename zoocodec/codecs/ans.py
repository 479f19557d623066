"""Order-0 ANS coding of integer symbols with constriction (coder `ans`), plus a packed-zstd
fallback; and the one ANS stream primitive every coder here uses (encode_stream /
decode_stream with an integer frequency table).

Bitstream (all integers are varints):
  mode byte: 0 = ANS, 1 = packed little-endian ints + zstd (chosen when smaller, e.g. for
  near-uniform wide alphabets whose table would cost more than it saves)
  ANS: n, lo (signed), alphabet size, frequency table (zero runs collapsed), chunk size,
       one byte length per chunk, then the chunks (uint32 words). Chunks are independent
       streams so a decoder may run them in parallel.
The table holds integer frequencies scaled to about 2**16; encoder and decoder turn them
into the same float64 probabilities, so decoding never depends on the machine.
"""
from __future__ import annotations

import math

import numpy as np
import zstandard

from dataclasses import dataclass

from zoocodec.codecs.base import CoderSpec, register_coder
from zoocodec.codecs.wire import Reader, put_streams, put_svarint, put_uvarint

CHUNK = 1 << 20
TABLE_SCALE = 1 << 16
MAX_ALPHABET = 1 << 24
ANS, PACKED = 0, 1


def _model(freqs: np.ndarray):
    import constriction  # noqa: PLC0415  (base dependency; imported where used)

    probs = freqs.astype(np.float64) / float(freqs.sum())
    return constriction.stream.model.Categorical(probs, perfect=False)


def encode_stream(idx: np.ndarray, freqs: np.ndarray) -> bytes:
    """One ANS stream of indices 0..len(freqs)-1 under integer frequencies: uint32 words, LE."""
    import constriction  # noqa: PLC0415

    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(np.ascontiguousarray(idx, dtype=np.int32), _model(freqs))
    return coder.get_compressed().astype("<u4").tobytes()


def decode_stream(data: memoryview, freqs: np.ndarray, count: int, r: Reader) -> np.ndarray:
    """`count` indices from one stream of encode_stream; damage raises r.fail (ContainerError)."""
    import constriction  # noqa: PLC0415

    if len(data) % 4:
        raise r.fail("stream length is not a whole number of words")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    try:
        return constriction.stream.stack.AnsCoder(words).decode(_model(freqs), count).astype(np.int64)
    except Exception as e:  # constriction reports damaged streams in its own ways
        raise r.fail(f"ANS stream ({e})") from None


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
    """Symbols (any integer array) -> bytes; the smaller of ANS and packed zstd."""
    s = np.ascontiguousarray(symbols, dtype=np.int64).ravel()
    if s.size == 0:
        return _packed(s)
    lo, hi = int(s.min()), int(s.max())
    size = hi - lo + 1
    if size > MAX_ALPHABET:
        return _packed(s)
    idx = (s - lo).astype(np.int32)
    counts = np.bincount(idx, minlength=size)
    freqs = quantized_freqs(counts)
    out = bytearray([ANS])
    put_uvarint(out, s.size)
    put_svarint(out, lo)
    put_uvarint(out, size)
    put_table(out, freqs)
    put_uvarint(out, CHUNK)
    # a constant tensor needs no coded bits at all
    chunks = [encode_stream(idx[i : i + CHUNK], freqs) for i in range(0, s.size, CHUNK)] if size > 1 else []
    put_streams(out, chunks)
    ans = bytes(out)
    if len(ans) > s.size:  # wide, flat alphabets: the table can cost more than it saves
        packed = _packed(s)
        if len(packed) < len(ans):
            return packed
    return ans


def decode(data: bytes | memoryview, count: int) -> np.ndarray:
    """Bytes -> int64 symbols; `count` is the number the caller expects (from the shape)."""
    r = Reader(data, "entropy-coded payload")
    mode = r.byte()
    if mode == PACKED:
        n = r.uvarint()
        if n != count:
            raise r.fail(f"holds {n} symbols, expected {count}")
        lo = r.svarint()
        width = r.byte()
        if width not in (1, 2, 4, 8):
            raise r.fail(f"bad symbol width {width}")
        try:
            raw = zstandard.ZstdDecompressor().decompress(bytes(r.rest()), max_output_size=n * width)
        except zstandard.ZstdError as e:
            raise r.fail(f"zstd: {e}") from None
        if len(raw) != n * width:
            raise r.fail("packed symbols have the wrong length")
        return np.frombuffer(raw, dtype=f"<u{width}").astype(np.int64) + lo
    if mode != ANS:
        raise r.fail(f"unknown coder mode {mode}")
    n = r.uvarint()
    if n != count:
        raise r.fail(f"holds {n} symbols, expected {count}")
    lo = r.svarint()
    size = r.uvarint(limit=MAX_ALPHABET)
    if size < 1:
        raise r.fail("empty alphabet")
    freqs = read_table(r, size)
    chunk = r.uvarint(limit=1 << 30)
    if chunk < 1:
        raise r.fail("chunk size 0")
    chunks = r.streams(0 if size == 1 else -(-n // chunk))
    r.done()
    if size == 1:
        return np.full(n, lo, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    for i, data in enumerate(chunks):
        out[i * chunk : i * chunk + min(chunk, n - i * chunk)] = decode_stream(data, freqs, min(chunk, n - i * chunk), r)
    return out + lo


@register_coder
@dataclass(frozen=True)
class Ans(CoderSpec):
    """Order-0 ANS (the default coder): one frequency table per tensor, independent 1M-symbol chunks."""

    name = "ans"
    version = 1

    def encode(self, symbols, trellis=None) -> bytes:
        return encode(symbols)

    def decode(self, data, shape, dtype=np.int64, trellis=None) -> np.ndarray:
        return decode(data, math.prod(shape)).reshape(shape).astype(dtype, copy=False)
