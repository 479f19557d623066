"""The `ans` coder's rANS frame encoded on the GPU (rans_encode.cu): the symbols stay on the
device and only the compressed bytes come back, the very bytes codecs/ans.encode writes.

The steps are the native CPU encoder's (codecs/native/rans.h has the format): a histogram of
the symbols' offsets from their minimum (on the device), the quantized frequencies (on the host,
by the native encoder's own normalise: native.rans_normalise), then every 2^16-symbol substream coded
from its last symbol back with its 8 interleaved states, one thread per state: the 8 threads of a
substream push their renormalisation words together, in the order the CPU's encoder pushes them
(a ballot gives each emitting lane its place), and a second kernel packs each substream's states
and words into one buffer. Frames the GPU does not write (no symbols, alphabets wider than 2^16,
and any frame larger than its symbol count, where ans.encode weighs its packed zstd frame) are
handed to ans.encode on the host, so the bytes are always ans.encode's.

`encode_emulated` runs the kernels' algorithm in NumPy, lane by lane in the same groups: the
test that the device path writes the CPU's bytes on a machine without a GPU.
"""
from __future__ import annotations

import functools
import logging
import threading

import numpy as np

from zoocodec.codecs import ans, native
from zoocodec.codecs.wire import put_svarint, put_uvarint
from zoocodec.kernels.backend import cuda_source, to_numpy

log = logging.getLogger("zoocodec.gpu")
LANES = 8
STATE_LO = 1 << 16
HIST_SHARED = 8192  # alphabets up to this size are counted in shared memory first (32 KiB)


def substreams(n: int, chunk: int = native.SUBSTREAM) -> tuple[np.ndarray, np.ndarray]:
    """(symbols, lanes) of each substream of n symbols."""
    parts = -(-n // chunk)
    m = np.minimum(chunk, n - np.arange(parts, dtype=np.int64) * chunk)
    return m, np.where(m >= 4096, LANES, 1)


def frame(lo: int, n: int, nsym: int, L: int, freq: np.ndarray | None, lengths: np.ndarray, body) -> bytes:
    """ans.encode's rANS frame (mode, lo, k = 0) around a native stream: count, alphabet,
    precision, table (zero runs collapsed), substream size and lengths, then `body` (the
    substreams' bytes in order). L == 0: the one symbol, no body."""
    out = bytearray([ans.ANS])
    put_svarint(out, lo)
    out.append(0)
    put_uvarint(out, n)
    put_uvarint(out, nsym)
    out.append(L)
    if L == 0:
        put_uvarint(out, 0)  # the only symbol: lo itself
        return bytes(out)
    ans.put_table(out, freq)
    put_uvarint(out, native.SUBSTREAM)
    for length in lengths.tolist():
        put_uvarint(out, length)
    head = len(out)
    out += b"\0" * len(body)
    memoryview(out)[head:] = memoryview(body).cast("B")
    return bytes(out)


def _table(freq: np.ndarray) -> np.ndarray:
    """freq | start << 16 by symbol (each below 2^16: two or more symbols present)."""
    start = np.concatenate([np.zeros(1, np.uint64), np.cumsum(freq, dtype=np.uint64)[:-1]]).astype(np.uint32)
    return freq.astype(np.uint32) | start << np.uint32(16)


# ---- the device path ----------------------------------------------------------------------

KINDS = {"int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64", "uint8": "u8", "uint16": "u16",
         "uint32": "u32"}


def encode(symbols) -> bytes:
    """ans.encode(symbols) for integer symbols on a CUDA device, coded there: the histogram's
    counts and the substreams' lengths and bytes come back, not the symbols. Runs on this
    thread's own stream on the symbols' device (a coding worker of pipeline/batch.py, after
    the symbols' stream is done); each `get` waits for that stream."""
    import cupy  # GPU only

    s = symbols.ravel()
    n = int(s.size)
    kind = KINDS.get(s.dtype.name)
    if n == 0 or kind is None:
        return ans.encode(cupy.asnumpy(s))
    with s.device, _stream():
        lo, hi = (int(v) for v in cupy.stack([s.min().astype(cupy.int64), s.max().astype(cupy.int64)]).get())
        nsym = hi - lo + 1
        if nsym > native.RANS_MAX_ALPHABET:  # raw low bits: the host frame
            return ans.encode(cupy.asnumpy(s))
        if nsym == 1:
            return _unless_larger(frame(lo, n, 1, 0, None, np.zeros(0, np.int64), b""), s)
        mod = _module()
        counts = cupy.zeros(nsym, dtype=cupy.uint64)
        threads = 256
        blocks = int(min(4096, -(-n // threads)))
        mod.get_function(f"rans_histogram_{kind}")(
            (blocks,), (threads,), (s, np.uint64(n), np.int64(lo), np.uint32(nsym), counts),
            shared_mem=4 * nsym if nsym <= HIST_SHARED else 0)
        freq, L = native.rans_normalise(counts.get())
        m, lanes = substreams(n)
        parts = m.size
        words = cupy.empty(n, dtype=cupy.uint16)
        states = cupy.empty(parts * LANES, dtype=cupy.uint32)
        count = cupy.empty(parts, dtype=cupy.uint32)
        per_block = 16  # substreams per block of 128 threads
        table = cupy.asarray(_table(freq))
        mod.get_function(f"rans_encode_{kind}")(
            (-(-parts // per_block),), (per_block * LANES,),
            (s, np.uint64(n), np.int64(lo), np.uint64(native.SUBSTREAM), table, np.uint32(nsym), np.int32(L), words,
             states, count))
        lengths = 4 * lanes + 2 * count.get().astype(np.int64)
        total = int(lengths.sum())
        if total > n:  # the frame would be longer than n bytes: ans.encode weighs its packed frame
            return ans.encode(cupy.asnumpy(s))
        offset = np.concatenate([np.zeros(1, np.int64), np.cumsum(lengths)[:-1]]).astype(np.uint64)
        body = cupy.empty(total, dtype=cupy.uint8)
        offsets = cupy.asarray(offset)
        mod.get_function("rans_gather")((parts,), (256,), (words, states, count, offsets, np.uint64(n),
                                                            np.uint64(native.SUBSTREAM), body))
        return _unless_larger(frame(lo, n, nsym, L, freq, lengths, cupy.asnumpy(body)), s)


def encode_checked(symbols) -> bytes:
    """encode() where this device's encoder wrote ans.encode's bytes on a probe (checked once
    per device and process), else ans.encode of a host copy: a file is never written by an
    encoder that disagrees with the CPU's (a warning says so)."""
    device = symbols.device.id
    with _probe_lock:
        if device not in _probed:
            _probed[device] = _probe(symbols.device)
    return encode(symbols) if _probed[device] else ans.encode(symbols.get())


_probed: dict[int, bool] = {}
_probe_lock = threading.Lock()


def _probe(device) -> bool:
    import cupy  # GPU only

    g = np.random.default_rng(25)
    # full substreams, partial groups, a one-state substream, an alphabet wider than a byte
    cases = (np.clip(np.rint(g.laplace(0, 12, 2 * native.SUBSTREAM + 4100)), -127, 127).astype(np.int8),
             np.rint(g.laplace(0, 3, 3001)).astype(np.int16), np.rint(g.laplace(0, 20, 70001)).astype(np.int16))
    with device:
        bad = [c.dtype.name for c in cases if encode(cupy.asarray(c)) != ans.encode(c)]
    if bad:
        log.warning("zoocodec: the GPU rANS encoder disagrees with the CPU's on a %s probe: ans payloads are "
                    "encoded on the host", bad[0])
    return not bad


def _unless_larger(coded: bytes, symbols) -> bytes:
    """The frame, or where it is longer than the symbol count, ans.encode's choice (its packed
    frame may be smaller)."""
    return coded if len(coded) <= symbols.size else ans.encode(to_numpy(symbols))


_local = threading.local()


def _stream():
    """This thread's non-blocking stream (coding workers run side by side)."""
    import cupy  # GPU only

    key = cupy.cuda.Device().id
    streams = _local.__dict__.setdefault("streams", {})
    if key not in streams:
        streams[key] = cupy.cuda.Stream(non_blocking=True)
    return streams[key]


@functools.cache
def _module():
    import cupy  # GPU only

    return cupy.RawModule(code=cuda_source("rans_encode.cu"), options=("-std=c++17",))


# ---- the kernels' algorithm in NumPy ------------------------------------------------------

def encode_emulated(symbols: np.ndarray) -> bytes:
    """encode()'s algorithm on the host: np.bincount for the histogram kernel, and the encode
    and gather kernels transliterated (each substream's 8 lanes one vector, a group at a time,
    the words placed as the ballot places them)."""
    s = np.ascontiguousarray(symbols).ravel()
    n = s.size
    if n == 0 or s.dtype.name not in KINDS:
        return ans.encode(s)
    lo, hi = int(s.min()), int(s.max())
    nsym = hi - lo + 1
    if nsym > native.RANS_MAX_ALPHABET:
        return ans.encode(s)
    if nsym == 1:
        return _unless_larger(frame(lo, n, 1, 0, None, np.zeros(0, np.int64), b""), s)
    idx = (s.astype(np.int64) - lo).astype(np.uint32)
    freq, L = native.rans_normalise(np.bincount(idx, minlength=nsym))
    fc = _table(freq)
    m, lanes = substreams(n)
    bodies = [_encode_substream(idx[i * native.SUBSTREAM: i * native.SUBSTREAM + int(mi)], int(k), fc, L)
              for i, (mi, k) in enumerate(zip(m, lanes, strict=True))]
    lengths = np.array([len(b) for b in bodies], dtype=np.int64)
    if int(lengths.sum()) > n:
        return ans.encode(s)
    return _unless_larger(frame(lo, n, nsym, L, freq, lengths, b"".join(bodies)), s)


def _encode_substream(idx: np.ndarray, K: int, fc: np.ndarray, L: int) -> bytes:
    """One substream as the encode kernel's K threads code it (then gather's bytes)."""
    m = idx.size
    words = np.zeros(m, dtype=np.uint16)
    x = np.full(K, STATE_LO, dtype=np.uint64)
    top = m
    lane = np.arange(K)
    below = (1 << lane) - 1  # the lanes below each lane, as a ballot mask

    def step(j: int, active: np.ndarray) -> None:
        nonlocal top
        e = fc[idx[np.minimum(j + lane, m - 1)]].astype(np.uint64)
        f, start = e & 0xFFFF, e >> 16
        out = active & (x >= (f << np.uint64(32 - L)))
        ballot = int(np.sum(out.astype(np.int64) << lane))
        c = bin(ballot).count("1")
        for k in np.flatnonzero(out):
            words[top - c + bin(ballot & int(below[k])).count("1")] = x[k] & 0xFFFF
        top -= c
        y = np.where(out, x >> np.uint64(16), x)
        q = y // np.where(active, f, 1)
        x[:] = np.where(active, (q << np.uint64(L)) + (y - q * f) + start, x)

    if K == 1:
        for j in range(m - 1, -1, -1):
            step(j, np.ones(1, bool))
    else:
        r = m % K
        j = m - r
        if r:
            step(j, lane < r)
        while j > 0:
            j -= K
            step(j, np.ones(K, bool))
    return x.astype("<u4").tobytes() + words[top:].astype("<u2").tobytes()
