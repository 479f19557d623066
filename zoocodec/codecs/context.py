"""Context-modelled ANS coding of quantized weight matrices (coder `ctx`).

Trained weight matrices are not stationary: rows (output channels) and columns (input
features, or positions of a conv kernel) have their own scales, so a symbol's
distribution depends on where it sits. In the spirit of DeepCABAC's context models,
but static and fully vectorised:

1. View the symbols as a matrix (axis 0 x the rest). Give every row and every column
   an activity class, round(2 * log2(mean |symbol| + 1/2)); the classes are side info,
   coded order-0 (a few bits per row/column, about 0.01 bits/weight on minilm).
2. A symbol's context is its row class + column class, cut into K bins by integer
   arithmetic, so encoder and decoder agree on every machine.
3. Each context gets its own integer frequency table (stored) and its own ANS stream.
   The decoder decodes the classes, computes every context at once, then decodes each
   context's stream and scatters it: no loop over symbols.

The encoder tries rows only, columns only and both, with K in (2, 4, 8), and counts the
exact cost of tables and side info; where none beats plain order-0 coding (small or
stationary tensors) it stores the order-0 payload instead. So "ctx" is never larger than
"ans" by more than one byte.

Bitstream (varints as in codecs/wire.py):
  mode byte: 0 = contexts, 1 = order-0 (an ans payload follows)
  contexts: n, rows, layout (1 rows, 2 columns, 3 both), the class payloads (length +
  ans bytes each), bin origin lo (signed), bin width, K; per context with symbols:
  symbol origin (signed), alphabet size, frequency table; then the streams of those
  contexts framed as in codecs/wire.put_streams (count, lengths, uint32 words).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import ans
from zoocodec.codecs.base import CoderSpec, Order0, RateTable, counts_rate_table, register_coder
from zoocodec.codecs.wire import Reader, put_streams, put_svarint, put_uvarint

CTX, ORDER0 = 0, 1
ROWS, COLS = 1, 2
BINS = (2, 4, 8)
MAX_BINS = 64
MAX_CONTEXT_ALPHABET = 1 << 16
SMALL_TABLE = 1 << 12  # table precision for contexts with few symbols: cheaper to store


def view_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) of the 2-D view the contexts use: axis 0 x the rest (one row for 0-D/1-D)."""
    n = math.prod(shape)
    rows = shape[0] if len(shape) >= 2 and shape[0] > 0 else 1
    return rows, n // rows


def matrix_view(symbols: np.ndarray) -> np.ndarray:
    """The symbols in their 2-D view (view_shape)."""
    s = np.asarray(symbols)
    return s.reshape(view_shape(s.shape))


def activity_classes(abs_mean: np.ndarray) -> np.ndarray:
    """round(2 * log2(mean |symbol| + 1/2)): one class per half octave of scale."""
    return np.rint(2 * np.log2(abs_mean + 0.5)).astype(np.int64)


@dataclass
class Model:
    """A context model fitted to a symbol matrix: what the encoder stores and the rate RDOQ uses."""

    layout: int
    row_classes: np.ndarray
    col_classes: np.ndarray
    lo: int
    width: int
    bins: int

    def contexts(self, rows: int, cols: int) -> np.ndarray:
        """Context id per symbol (rows x cols), integer arithmetic only."""
        v = np.zeros((rows, cols), dtype=np.int64)
        if self.layout & ROWS:
            v += self.row_classes[:, None]
        if self.layout & COLS:
            v += self.col_classes[None, :]
        return np.clip(((v - self.lo) * self.bins) // self.width, 0, self.bins - 1)


def fit(m: np.ndarray, layout: int, bins: int) -> Model:
    """Classes from the matrix's row/column mean magnitudes; bins over the 2nd..98th percentile."""
    a = np.abs(m)
    rc = activity_classes(a.mean(axis=1)) if layout & ROWS else np.zeros(0, np.int64)
    cc = activity_classes(a.mean(axis=0)) if layout & COLS else np.zeros(0, np.int64)
    v = (rc[:, None] if layout & ROWS else 0) + (cc[None, :] if layout & COLS else 0)
    v = np.broadcast_to(v, m.shape)
    lo, hi = (int(x) for x in np.percentile(v, [2, 98], method="nearest"))
    return Model(layout, rc, cc, lo, max(hi - lo, 1), bins)


def _tables(m: np.ndarray, ctx: np.ndarray, bins: int):
    """Per context: (symbol origin, integer frequencies) or None when it holds no symbol."""
    lo = int(m.min())
    size = int(m.max()) - lo + 1
    counts = np.bincount((ctx * size + (m - lo)).ravel(), minlength=bins * size).reshape(bins, size)
    tables = []
    for c in range(bins):
        nz = np.flatnonzero(counts[c])
        if nz.size == 0:
            tables.append(None)
            continue
        row = counts[c, nz[0] : nz[-1] + 1]
        tables.append((lo + int(nz[0]), _freqs(row), row))
    return tables


def _freqs(counts: np.ndarray) -> np.ndarray:
    freqs = ans.quantized_freqs(counts)
    if counts.sum() < 1 << 16:  # a coarser table costs less than the precision it buys
        total = int(counts.sum())
        freqs = np.floor(counts * (SMALL_TABLE / total)).astype(np.int64)
        freqs[(counts > 0) & (freqs == 0)] = 1
    return freqs


def _table_bytes(origin: int, freqs: np.ndarray) -> bytes:
    out = bytearray()
    put_svarint(out, origin)
    put_uvarint(out, len(freqs))
    ans.put_table(out, freqs)
    return bytes(out)


def _estimate_bits(model: Model, m: np.ndarray) -> tuple[float, list]:
    """Ideal coded bits under the stored tables, plus tables and side info."""
    tables = _tables(m, model.contexts(*m.shape), model.bins)
    bits = 0.0
    for t in tables:
        if t is not None:
            _, freqs, counts = t
            nz = counts > 0
            bits += float(-(counts[nz] * np.log2(freqs[nz] / freqs.sum())).sum()) + 8 * len(_table_bytes(*t[:2]))
    bits += 8 * (len(ans.encode(model.row_classes)) + len(ans.encode(model.col_classes)))
    return bits, tables


def best_model(symbols: np.ndarray) -> Model | None:
    """The layout and bin count with the fewest estimated bits; None when order-0 is as good."""
    m = matrix_view(symbols).astype(np.int64)
    if m.size == 0 or m.min() == m.max() or int(m.max()) - int(m.min()) >= min(m.size, MAX_CONTEXT_ALPHABET):
        return None  # constant, or an alphabet too wide for per-context tables to pay off
    counts = np.unique(m, return_counts=True)[1]
    base = float(m.size * np.log2(m.size) - (counts * np.log2(counts)).sum()) + 8 * 2 * counts.size
    best, best_bits = None, base
    for layout in (ROWS, COLS, ROWS | COLS):
        if (layout & ROWS and m.shape[0] < 2) or (layout & COLS and m.shape[1] < 2):
            continue
        for bins in BINS:
            model = fit(m, layout, bins)
            bits = _estimate_bits(model, m)[0]
            if bits < best_bits:
                best, best_bits = model, bits
    return best


@dataclass(frozen=True)
class ContextModel:
    """The entropy model of `ctx`: per-symbol contexts from row/column activity classes."""

    model: Model

    def rates(self, symbols: np.ndarray) -> RateTable:
        m = matrix_view(symbols).astype(np.int64)
        return counts_rate_table(m, self.model.contexts(*m.shape), self.model.bins)

    def bits(self, symbols: np.ndarray) -> float:
        return _estimate_bits(self.model, matrix_view(symbols).astype(np.int64))[0]

    def refit(self, symbols: np.ndarray) -> ContextModel:
        return ContextModel(fit(matrix_view(symbols).astype(np.int64), self.model.layout, self.model.bins))


def entropy_model(symbols: np.ndarray) -> ContextModel | Order0:
    """The model `ctx` would code these symbols with (order-0 where contexts do not pay)."""
    model = best_model(symbols)
    return Order0() if model is None else ContextModel(model)


def encode(symbols: np.ndarray) -> bytes:
    """Symbols (their shape gives the matrix view) -> bytes; never more than 1 byte over order-0."""
    model = best_model(symbols)
    order0 = bytes([ORDER0]) + ans.encode(symbols)
    if model is None:
        return order0
    m = matrix_view(symbols).astype(np.int64)
    ctx = model.contexts(*m.shape)
    out = bytearray([CTX])
    put_uvarint(out, m.size)
    put_uvarint(out, m.shape[0])
    out.append(model.layout)
    for classes in (model.row_classes, model.col_classes):
        if classes.size:
            payload = ans.encode(classes)
            put_uvarint(out, len(payload))
            out += payload
    put_svarint(out, model.lo)
    put_uvarint(out, model.width)
    put_uvarint(out, model.bins)
    streams = []
    flat, cflat = m.ravel(), ctx.ravel()
    for c, table in enumerate(_tables(m, ctx, model.bins)):
        if table is None:
            continue
        origin, freqs, _ = table
        out += _table_bytes(origin, freqs)
        if len(freqs) == 1:
            streams.append(b"")
            continue
        streams.append(ans.encode_stream(flat[cflat == c] - origin, freqs))
    put_streams(out, streams)
    return bytes(out) if len(out) < len(order0) else order0


def decode(data: bytes | memoryview, count: int) -> np.ndarray:
    """Bytes -> int64 symbols (flat); `count` is the number the caller expects."""
    r = Reader(data, "context-coded payload")
    mode = r.byte()
    if mode == ORDER0:
        return ans.decode(r.rest(), count)
    if mode != CTX:
        raise r.fail(f"unknown mode {mode}")
    n = r.uvarint()
    if n != count:
        raise r.fail(f"holds {n} symbols, expected {count}")
    rows = r.uvarint(limit=max(n, 1))
    if rows == 0 or n % rows:
        raise r.fail(f"{rows} rows do not divide {n} symbols")
    cols = n // rows
    layout = r.byte()
    if layout not in (ROWS, COLS, ROWS | COLS):
        raise r.fail(f"unknown context layout {layout}")
    row_classes = _classes(r, rows) if layout & ROWS else np.zeros(0, np.int64)
    col_classes = _classes(r, cols) if layout & COLS else np.zeros(0, np.int64)
    lo = r.svarint()
    width = r.uvarint(limit=1 << 20)
    bins = r.uvarint(limit=MAX_BINS)
    if width < 1 or bins < 1:
        raise r.fail(f"bin width {width} / count {bins}")
    ctx = Model(layout, row_classes, col_classes, lo, width, bins).contexts(rows, cols).ravel()
    counts = np.bincount(ctx, minlength=bins)
    tables = []
    for c in np.flatnonzero(counts):
        origin = r.svarint()
        size = r.uvarint(limit=ans.MAX_ALPHABET)
        if size < 1:
            raise r.fail("empty alphabet")
        tables.append((c, origin, ans.read_table(r, size)))
    streams = r.streams(len(tables))
    r.done()
    out = np.empty(n, dtype=np.int64)
    for (c, origin, freqs), data in zip(tables, streams, strict=True):
        where = ctx == c
        if len(freqs) == 1:
            if len(data):
                raise r.fail("a one-symbol context holds coded bits")
            out[where] = origin
            continue
        out[where] = ans.decode_stream(data, freqs, int(counts[c]), r) + origin
    return out


def _classes(r: Reader, count: int) -> np.ndarray:
    length = r.uvarint(limit=len(r.data))
    classes = ans.decode(r.take(length), count)
    if classes.size and np.abs(classes).max() > 256:
        raise r.fail("activity class out of range")
    return classes


@register_coder
@dataclass(frozen=True)
class Ctx(CoderSpec):
    """Context-modelled ANS: row/column activity contexts, never more than a byte above `ans`."""

    name = "ctx"
    version = 1
    context_model = True

    def encode(self, symbols, trellis=None) -> bytes:
        return encode(symbols)

    def decode(self, data, shape, dtype=np.int64, trellis=None) -> np.ndarray:
        return decode(data, math.prod(shape)).reshape(shape).astype(dtype, copy=False)

    def model(self, symbols, trellis=None) -> ContextModel | Order0:
        return entropy_model(symbols)
