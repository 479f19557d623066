"""The native coding engine: C++ coders built with the package (CMakeLists.txt).

The compiled module `_engine` releases the GIL and codes independent substreams on a
small thread pool. This module wraps it for the Python coders: damaged streams raise
ContainerError, and a checkout whose module is not built gets a one-line fix.

threads: 0 means ZOOCODEC_THREADS if set, else every hardware thread.
"""
from __future__ import annotations

from functools import cache

import numpy as np

from zoocodec.errors import ContainerError

RANS_MAX_ALPHABET = 1 << 16
SUBSTREAM = 1 << 16  # symbols per rANS substream: the unit of parallel decoding


@cache
def engine():
    try:
        from zoocodec.codecs.native import _engine
    except ImportError as e:  # pragma: no cover - only in an unbuilt checkout
        raise ImportError(
            f"zoocodec's native engine is not built ({e}): run `pip install -e .` "
            "or scripts/build_native.sh in the checkout"
        ) from None
    return _engine


def default_threads() -> int:
    return engine().default_threads()


def rans_encode(symbols: np.ndarray, nsym: int, *, chunk: int = SUBSTREAM, threads: int = 0,
                max_bits: int = 16, add: int = 0, prefix: bytes = b"") -> bytes:
    """uint8/uint16 symbols, each below `nsym` (<= 2**16) -> `prefix` + an order-0 rANS stream.

    max_bits caps the probability precision: 12 or less (256 symbols or fewer) takes the
    decoder's fastest path for a little size (0.2% on fp32 exponents). `add` is added to each
    symbol modulo its width as it is read (signed symbols minus their minimum, with no copy).
    `prefix` (a frame's own first bytes) is written first, so the result is copied once."""
    return engine().rans_encode(np.ascontiguousarray(symbols).ravel(), nsym, chunk, threads, max_bits, add, prefix)


def rans_normalise(counts: np.ndarray, max_bits: int = 16) -> tuple[np.ndarray, int]:
    """(uint32 frequencies summing to 2^L, L): the table rans_encode writes for symbols with
    these counts (two or more present), for an encoder elsewhere (the GPU's) to write the same."""
    return engine().rans_normalise(np.ascontiguousarray(counts, dtype=np.uint64), max_bits)


def rans_decode(data: bytes | memoryview, count: int, *, what: str = "rANS stream", threads: int = 0) -> np.ndarray:
    """A stream of `count` symbols -> uint8 (alphabet <= 256) or uint16 symbols."""
    return _checked(what, engine().rans_decode, data, count, threads)


def rans_encode_freqs(symbols: np.ndarray, freqs: np.ndarray, *, chunk: int = SUBSTREAM, threads: int = 0) -> bytes:
    """Symbols under an integer table the caller keeps (any sum, two or more non-zero):
    the substreams only. The engine rescales the table to a power of two in integers."""
    f = np.ascontiguousarray(freqs, dtype=np.int64)
    try:
        return engine().rans_encode_freqs(np.ascontiguousarray(symbols).ravel(), f, chunk, threads)
    except engine().CorruptStream as e:  # the table itself is unusable
        raise ValueError(f"rANS table: {e}") from None


def rans_decode_freqs(data: bytes | memoryview, freqs: np.ndarray, count: int, *, what: str = "rANS stream",
                      threads: int = 0) -> np.ndarray:
    """`count` symbols of rans_encode_freqs under the same table."""
    f = np.ascontiguousarray(freqs, dtype=np.int64)
    return _checked(what, engine().rans_decode_freqs, data, f, count, threads)


def ans_decode(data: bytes | memoryview, count: int, *, what: str = "entropy-coded payload",
               threads: int = 0) -> tuple[int, np.ndarray] | None:
    """(lo, uint8/uint16 indices) of an ans payload's rANS frame (codecs/ans.py), or None for
    the frames ans.py reads itself (packed, raw low bits)."""
    return _checked(what, engine().ans_decode, data, count, threads)


def ctx_decode(data: bytes | memoryview, count: int, *, what: str = "context-coded payload",
               threads: int = 0) -> np.ndarray | None:
    """`count` int64 symbols of a ctx payload (codecs/context.py) by the batched decoder's parser
    (ctx_frame.cpp), or None for order-0 symbols in a frame only ans.py reads."""
    return _checked(what, engine().ctx_decode, data, count, threads)


def _checked(what: str, fn, *args):
    eng = engine()
    try:
        return fn(*args)
    except eng.CorruptStream as e:
        raise ContainerError(f"corrupt {what}: {e}") from None
