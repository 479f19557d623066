"""Context-adaptive binary arithmetic coding of quantized levels (coder "cabac").

In the spirit of DeepCABAC (MPEG NNR): each level is binarised (significant, sign,
greater-than-1..6 flags, Exp-Golomb rest) and every bin is coded with an adaptive
probability (two estimators, fast and slow, in integers) chosen by its context: the
dependent quantizer's state (for `dq`), the sign of the left neighbour, and the
expected magnitude from the activity class of the row and of the column (sent as side
information, a few bits per row and column). The C++ core (native/cabac.cpp) cuts a
tensor into substreams of whole rows (about 2^16 weights each) that encode and decode
in parallel with the GIL released; with more than one substream the stream also sets
every context's starting probability, so a cut costs little.

The level matrix handed to the C++ coder is the walk of the dependent quantizer (rows
are walks): the 2-D view for trellis axis 1, its transpose for axis 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoocodec.codecs.base import CoderSpec, RateTable, register_coder
from zoocodec.codecs.context import matrix_view, view_shape
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels.rdoq import NEXT_STATE
from zoocodec.registry import ints

NONE, DQ4 = 0, 1  # the C++ coder's trellis kinds (2 is NNR's 8-state machine, for benchmarks)
# Bucket thresholds of the expected |level| in 1/16 (native/cabac.cpp kThresholds).
THRESHOLDS = np.array([1, 3, 6, 10, 14, 19, 25, 32, 41, 52, 66, 84, 106, 134, 170, 215, 272, 344, 435, 550, 696,
                       880, 1113])
MAX_LEVEL = 1 << 29


def _engine():
    from zoocodec.codecs.native import engine  # compiled module, loaded on first use

    return engine()


def walk(symbols: np.ndarray, trellis: int | None) -> np.ndarray:
    """int32 level matrix in the quantizer's walk order (rows are walks)."""
    m = matrix_view(np.asarray(symbols))
    if trellis == 0:
        m = m.T
    if m.size and (m.max() > MAX_LEVEL or m.min() < -MAX_LEVEL):
        raise SpecError("cabac: levels beyond 2^29 in magnitude")
    return np.ascontiguousarray(m, dtype=np.int32)


def encode_levels(levels: np.ndarray, trellis: int, substream: int, threads: int = 0) -> bytes:
    """An int32 walk matrix -> bytes (trellis: 0 none, 1 four-state per row, 2 NNR eight-state)."""
    return _engine().cabac_encode(np.ascontiguousarray(levels, dtype=np.int32), trellis, substream, threads)


def decode_levels(data: bytes | memoryview, count: int, threads: int = 0) -> np.ndarray:
    """Bytes -> `count` int32 levels (flat, walk order); ContainerError when damaged."""
    eng = _engine()
    try:
        return eng.cabac_decode(data, count, threads)
    except eng.CorruptStream as e:
        raise ContainerError(f"corrupt cabac stream: {e}") from None


def check_stream(data: bytes | memoryview, shape, trellis: int | None) -> tuple[int, int]:
    """The 2-D view of `shape` (a symbols shape) when `data` is a cabac stream of its walk matrix
    (trellis None: none; 0 or 1: the dq walks along axis 0 or 1); ContainerError otherwise."""
    view = view_shape(tuple(shape))
    eng = _engine()
    try:
        rows, kind = eng.cabac_stream_info(data)
    except eng.CorruptStream as e:
        raise ContainerError(f"corrupt cabac stream: {e}") from None
    if math.prod(shape) and (rows, kind) != (view[1] if trellis == 0 else view[0], NONE if trellis is None else DQ4):
        raise ContainerError(f"cabac: a stream of {rows} rows (trellis {kind}) for shape {tuple(shape)}")
    return view


def level_costs(levels: np.ndarray, trellis: int, substream: int, threads: int = 0) -> np.ndarray:
    """Bits each level costs when coded in order (float32, flat, walk order)."""
    return _engine().cabac_costs(np.ascontiguousarray(levels, dtype=np.int32), trellis, substream, threads)


def _classes(mean_abs: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(2 * np.log2(mean_abs + 0.5) + 0.5), -2, 62).astype(np.int64)


def buckets(m: np.ndarray) -> np.ndarray:
    """The C++ coder's activity bucket per level of walk matrix `m` (for rate tables)."""
    rows, cols = m.shape
    a = np.abs(m.astype(np.float64))
    g = int(_classes(np.array([a.mean()]))[0])
    e = np.full(m.shape, g, dtype=np.int64)
    if cols >= 16 and rows > 1:
        e += (_classes(a.mean(axis=1)) - g)[:, None]
    if rows >= 16:
        e += (_classes(a.mean(axis=0)) - g)[None, :]
    e = np.clip(e, -16, 36)
    pred = np.where(e >= 0, 16.0 * 2.0 ** (e // 2), 16.0 / 2.0 ** ((-e + 1) // 2))
    pred = np.floor(np.where(e & 1, np.floor(pred) * 181 / 128, pred))
    return np.searchsorted(THRESHOLDS, np.minimum(pred, 2047), side="right")


def states(m: np.ndarray) -> np.ndarray:
    """The 4-state machine's state before each level of walk matrix `m` (rows restart at 0)."""
    table = np.asarray(NEXT_STATE, dtype=np.int64)
    out = np.empty(m.shape, dtype=np.int64)
    s = np.zeros(m.shape[0], dtype=np.int64)
    for j in range(m.shape[1]):
        out[:, j] = s
        s = table[s, m[:, j] & 1]
    return out


@dataclass(frozen=True)
class CabacModel:
    """Rates of the cabac coder: -log2 p(level | activity bucket, quantizer state), counted.

    The coder adapts as it goes; this static table is what rate-distortion decisions
    use (they need the price of levels not chosen). `bits` is the coder's own cost.
    """

    trellis: int | None
    substream: int

    def rates(self, symbols: np.ndarray) -> RateTable:
        s = np.asarray(symbols)
        m = walk(s, self.trellis).astype(np.int64)
        ctx = buckets(m)
        nstates = 4 if self.trellis is not None else 1
        st = states(m) if self.trellis is not None else np.zeros(m.shape, dtype=np.int64)
        if m.size == 0:
            return RateTable(np.zeros(s.shape, np.int64), 0, np.zeros((1, nstates, 1)))
        lo = int(m.min())
        size = int(m.max()) - lo + 1
        contexts = len(THRESHOLDS) + 1
        key = (ctx * nstates + st) * size + (m - lo)
        counts = np.bincount(key.ravel(), minlength=contexts * nstates * size).reshape(contexts, nstates, size)
        counts = counts.astype(np.float64)
        total = counts.sum(axis=2, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            bits = -np.log2(counts / np.maximum(total, 1))
        worst = np.where(np.isfinite(bits), bits, 0).max(axis=2, keepdims=True) + 1
        bits = np.where(np.isfinite(bits), bits, worst)
        return RateTable((ctx.T if self.trellis == 0 else ctx).reshape(s.shape), lo, bits)

    def bits(self, symbols: np.ndarray) -> float:
        m = walk(symbols, self.trellis)
        return 8.0 * len(encode_levels(m, NONE if self.trellis is None else DQ4, self.substream))

    def refit(self, symbols: np.ndarray) -> CabacModel:
        return self


@register_coder
@dataclass(frozen=True)
class Cabac(CoderSpec):
    """Context-adaptive binary arithmetic coding (native, multi-threaded); `substream` weights per substream."""

    name = "cabac"
    version = 1
    context_model = True

    ranges = {"substream": ints(1, 1 << 30, text="1..2^30 weights")}
    examples = ("cabac(substream=100)",)

    substream: int = 1 << 16

    def encode(self, symbols, trellis=None) -> bytes:
        return encode_levels(walk(symbols, trellis), NONE if trellis is None else DQ4, self.substream)

    def decode(self, data, shape, dtype=np.int64, trellis=None) -> np.ndarray:
        count = math.prod(shape)
        view = check_stream(data, shape, trellis)
        flat = decode_levels(data, count)
        m = flat.reshape(view[::-1]).T if trellis == 0 else flat.reshape(view)
        return m.reshape(shape).astype(dtype, copy=False)

    def model(self, symbols, trellis=None) -> CabacModel:
        return CabacModel(trellis, self.substream)
