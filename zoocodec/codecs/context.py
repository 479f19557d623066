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
   The decoder (native/ctx_frame.cpp) decodes the classes, each context's stream, then puts
   every symbol in its place a block at a time.

Min-max groups (`uniform:bits=B,group=G,zero=true`, GGUF's Q4_1, HQQ) have a second
structure: every group of G weights along a row holds its lowest and highest level, so the
levels 0 and 2^B-1 occur in every group. Order-0 coding pays for them as if they might not.
The group-ends layout codes, per group, the position of the first lowest and the first
highest level (G when the group has none), then every other symbol in one of four contexts:
before or after each of those positions (before the first lowest level that level cannot
occur). The contexts again follow from side info the decoder reads first. On smollm2's
Q4_1 layers this is 3.811 bits/weight against order-0's 3.854 (-1.1%, 2 bits per group of 32).

The encoder tries rows only, columns only and both, with K in (2, 4, 8), and the group ends
with G in (16, 32, 64, 128, 256), and counts the exact cost of tables and side info; where
none beats plain order-0 coding (small or stationary tensors) it stores the order-0 payload
instead. So "ctx" is never larger than "ans" by more than one byte.

Bitstream (varints as in codecs/wire.py):
  mode byte: 0 = contexts, 1 = order-0 (an ans payload follows), 2 = group ends
  contexts: n, rows, layout (1 rows, 2 columns, 3 both), the class payloads (length +
  ans bytes each), bin origin lo (signed), bin width, K; per context with symbols:
  symbol origin (signed), alphabet size, frequency table; then the streams of those
  contexts framed as in codecs/wire.put_streams (count, lengths, uint32 words).
  group ends: n, rows, G, the lowest level (signed), highest minus lowest, the first
  positions of the lowest and of the highest level per group (length + ans bytes each,
  row by row), then the four contexts' tables and streams as above.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import ans, native
from zoocodec.codecs.base import (
    CoderSpec,
    Order0,
    RateTable,
    context_counts,
    counts_bits,
    counts_rate_table,
    register_coder,
)
from zoocodec.codecs.wire import put_streams, put_svarint, put_uvarint

CTX, ORDER0, ENDS = 0, 1, 2
ROWS, COLS = 1, 2
BINS = (2, 4, 8)
GROUPS = (16, 32, 64, 128, 256)  # the group-ends layout's group sizes
MAX_CONTEXT_ALPHABET = 1 << 16


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
        """Context id per symbol (rows x cols), integer arithmetic only: each (row class, column class)
        pair's context computed once, then gathered (one pass over the matrix, where the arithmetic
        on whole matrices made six)."""
        pair, r, c = self._pairs(rows, cols)
        return np.take(pair[r], c, axis=1)

    def counts(self, m: np.ndarray, lo: int, size: int) -> np.ndarray:
        """(bins, size) counts of the levels of `m` (int64, lo .. lo + size - 1) by context, without
        the matrix of contexts (native: one pass over the levels)."""
        pair, r, c = self._pairs(*m.shape)
        out = np.empty((self.bins, size), dtype=np.int64)
        native.engine().ctx_count_levels(np.ascontiguousarray(m), r, c, pair, lo, out)
        return out

    def _pairs(self, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(context of each pair of row and column classes, each row's class index, each column's)."""
        rc = self.row_classes if self.layout & ROWS else np.zeros(rows, np.int64)
        cc = self.col_classes if self.layout & COLS else np.zeros(cols, np.int64)
        rows_of, r = np.unique(rc, return_inverse=True)
        cols_of, c = np.unique(cc, return_inverse=True)
        return self.pair_contexts(rows_of, cols_of), r.astype(np.int64), c.astype(np.int64)

    def pair_contexts(self, rows_of: np.ndarray, cols_of: np.ndarray) -> np.ndarray:
        """The context of each pair of a row class and a column class (rows_of x cols_of; the classes of
        an axis the layout leaves out read as 0)."""
        rv = rows_of if self.layout & ROWS else np.zeros_like(rows_of)
        cv = cols_of if self.layout & COLS else np.zeros_like(cols_of)
        return np.clip(((rv[:, None] + cv[None, :] - self.lo) * self.bins) // self.width, 0, self.bins - 1)


@dataclass
class ClassCounts:
    """A matrix's levels counted once by (row class, column class): any Model's counts by context are
    sums of these cells, so best_model reads the matrix once for its nine candidates instead of nine times."""

    rows_of: np.ndarray
    cols_of: np.ndarray
    lo: int
    cells: np.ndarray  # (row classes x column classes, levels from lo)

    @staticmethod
    def of(m: np.ndarray, classes: tuple[np.ndarray, np.ndarray], lo: int, size: int,
           limit: int | None = None) -> ClassCounts | None:
        """The counts (levels lo .. lo + size - 1), or None where there would be more than `limit` cells
        (best_model's: the matrix's size, past which summing cells costs more than a pass over it)."""
        rows_of, r = np.unique(classes[0], return_inverse=True)
        cols_of, c = np.unique(classes[1], return_inverse=True)
        if limit is not None and rows_of.size * cols_of.size * size > limit:
            return None
        cells = np.empty((rows_of.size * cols_of.size, size), dtype=np.int64)
        index = np.arange(cells.shape[0], dtype=np.int64).reshape(rows_of.size, -1)
        native.engine().ctx_count_levels(np.ascontiguousarray(m), r.astype(np.int64), c.astype(np.int64), index, lo,
                                         cells)
        return ClassCounts(rows_of, cols_of, lo, cells)

    def counts(self, model: Model) -> np.ndarray:
        """(bins, size) counts of the matrix's levels by the model's contexts: Model.counts without the pass."""
        out = np.zeros((model.bins, self.cells.shape[1]), dtype=np.int64)
        np.add.at(out, model.pair_contexts(self.rows_of, self.cols_of).ravel(), self.cells)
        return out


def fit(m: np.ndarray, layout: int, bins: int, classes: tuple[np.ndarray, np.ndarray] | None = None) -> Model:
    """Classes from the matrix's row/column mean magnitudes (`classes`: matrix_classes(m), given when
    several models are fitted to one matrix); bins over the 2nd..98th percentile."""
    rows_of, cols_of = classes or matrix_classes(m, layout)
    rc = rows_of if layout & ROWS else np.zeros(0, np.int64)
    cc = cols_of if layout & COLS else np.zeros(0, np.int64)
    lo, hi = _class_percentiles(rc, cc, m.shape)
    return Model(layout, rc, cc, lo, max(hi - lo, 1), bins)


def matrix_classes(m: np.ndarray, layout: int = ROWS | COLS) -> tuple[np.ndarray, np.ndarray]:
    """The activity class of each row and of each column of `m` (those `layout` asks for; empty otherwise)."""
    a = np.abs(m)
    return (activity_classes(a.mean(axis=1)) if layout & ROWS else np.zeros(0, np.int64),
            activity_classes(a.mean(axis=0)) if layout & COLS else np.zeros(0, np.int64))


def _class_percentiles(rc: np.ndarray, cc: np.ndarray, shape: tuple[int, int]) -> tuple[int, int]:
    """np.percentile(v, [2, 98], method="nearest") of v = row class + column class at every position
    (either may be absent), from the classes' histograms: v has rows x cols entries but only as many
    distinct values as classes, and sorting a copy of it was a fifth of fitting a model."""
    rows, cols = shape
    low, counts = 0, np.ones(1, np.int64)
    for classes in (rc, cc):
        if classes.size:
            first = int(classes.min())
            counts = np.convolve(counts, np.bincount(classes - first))
            low += first
    counts = counts * (rows * cols // int(counts.sum()))  # (a class of one axis alone repeats along the other)
    at = np.around((rows * cols - 1) * (np.asarray([2, 98]) / 100)).astype(np.intp)  # (NumPy's own index)
    return tuple(low + int(i) for i in np.searchsorted(np.cumsum(counts), at, side="right"))


KNOWN = 4  # the group-ends layout's context of the positions its side info gives (coded by none)


@dataclass
class Ends:
    """The group-ends model fitted to a symbol matrix: per group of `group` symbols along a row, the
    position of its first lowest and first highest level (`group` where it has none)."""

    group: int
    lo: int
    hi: int
    first_lo: np.ndarray  # (rows, groups)
    first_hi: np.ndarray
    bins = KNOWN + 1

    def contexts(self, rows: int, cols: int) -> np.ndarray:
        """Context per symbol: +1 before its group's first lowest level, +2 before its first highest
        (where that level cannot occur), KNOWN at those two positions."""
        pos = np.arange(cols) % self.group
        first_lo, first_hi = self._spread(self.first_lo, cols), self._spread(self.first_hi, cols)
        ctx = (pos < first_lo).astype(np.int64) + 2 * (pos < first_hi)
        ctx[(pos == first_lo) | (pos == first_hi)] = KNOWN
        return ctx

    def _spread(self, per_group: np.ndarray, cols: int) -> np.ndarray:
        """A (rows, groups) array repeated over each group's columns: (rows, cols)."""
        return np.repeat(per_group, self.group, axis=1)[:, :cols]


def fit_ends(m: np.ndarray, group: int) -> Ends:
    """The first lowest and highest level of each group of `group` symbols along the rows."""
    rows, cols = m.shape
    lo, hi = int(m.min()), int(m.max())
    groups = -(-cols // group)
    padded = np.full((rows, groups * group), lo - 1, dtype=np.int64)
    padded[:, :cols] = m
    v = padded.reshape(rows, groups, group)
    return Ends(group, lo, hi, _first(v == lo, group), _first(v == hi, group))


def _first(hit: np.ndarray, group: int) -> np.ndarray:
    return np.where(hit.any(axis=2), hit.argmax(axis=2), group)


def _ends_models(m: np.ndarray):
    """Group-ends models worth pricing: from the largest group down, while most groups hold both ends (a
    smaller group holds them less often)."""
    rows, cols = m.shape
    for group in sorted((g for g in GROUPS if g <= cols), reverse=True):
        model = fit_ends(m, group)
        if np.mean((model.first_lo < group) & (model.first_hi < group)) < 0.5:
            return
        yield model


def _tables(m: np.ndarray, ctx: np.ndarray, bins: int):
    """Per context: (symbol origin, integer frequencies) or None when it holds no symbol."""
    if m.size == 0:  # (group ends whose every position the side info gives)
        return [None] * bins
    lo, counts = context_counts(m, ctx, bins)
    return _tables_of(counts, lo)


def _tables_of(counts: np.ndarray, lo: int):
    """_tables from the counts (contexts x levels from lo)."""
    tables = []
    for c in range(counts.shape[0]):
        nz = np.flatnonzero(counts[c])
        if nz.size == 0:
            tables.append(None)
            continue
        row = counts[c, nz[0] : nz[-1] + 1]
        tables.append((lo + int(nz[0]), _freqs(row), row))
    return tables


def _freqs(counts: np.ndarray) -> np.ndarray:
    """A context's table at the precision the `ans` coder's own tables take (native.rans_normalise:
    the coarsest within 0.05% of 16 bits' cost). A 2^16-slot table of 4-bit levels cost as much to
    build as 50K symbols to decode, and its slots miss the first-level cache where 2^12 fit."""
    if np.count_nonzero(counts) < 2:  # (no stream: the one symbol is implied)
        return ans.quantized_freqs(counts)
    return native.rans_normalise(counts)[0].astype(np.int64)


def _table_bytes(origin: int, freqs: np.ndarray) -> bytes:
    out = bytearray()
    put_svarint(out, origin)
    put_uvarint(out, len(freqs))
    ans.put_table(out, freqs)
    return bytes(out)


def _estimate_bits(model: Model | Ends, m: np.ndarray, counts: ClassCounts | None = None) -> float:
    """Ideal coded bits under the stored tables, plus tables and side info (`counts`: the matrix's
    ClassCounts, where best_model took them)."""
    if isinstance(model, Ends):
        ctx = model.contexts(*m.shape)
        free = ctx != KNOWN
        tables = _tables(m[free], ctx[free], KNOWN)
        side = (model.first_lo, model.first_hi)
    else:
        if counts is not None:
            tables = _tables_of(counts.counts(model), counts.lo)
        elif m.size:
            lo = int(m.min())
            tables = _tables_of(model.counts(m, lo, int(m.max()) - lo + 1), lo)
        else:
            tables = [None] * model.bins
        side = (model.row_classes, model.col_classes)
    bits = 0.0
    for t in tables:
        if t is not None:
            _, freqs, counts = t
            nz = counts > 0
            bits += float(-(counts[nz] * np.log2(freqs[nz] / freqs.sum())).sum()) + 8 * len(_table_bytes(*t[:2]))
    return bits + 8 * sum(len(ans.encode(a)) for a in side)


def best_model(symbols: np.ndarray) -> Model | Ends | None:
    """The layout and bin count, or group-ends group, with the fewest estimated bits; None when order-0 is as
    good."""
    m = matrix_view(symbols).astype(np.int64)
    lo, hi = (int(m.min()), int(m.max())) if m.size else (0, 0)
    if m.size == 0 or lo == hi or hi - lo >= min(m.size, MAX_CONTEXT_ALPHABET):
        return None  # constant, or an alphabet too wide for per-context tables to pay off
    counts = np.bincount(np.subtract(m, lo, dtype=np.int64).ravel())  # (np.unique's counts, without its sort)
    base = counts_bits(counts) + 8 * 2 * np.count_nonzero(counts)  # order-0, with 2 table bytes a level
    best, best_bits = None, base
    classes = matrix_classes(m)
    cells = ClassCounts.of(m, classes, lo, hi - lo + 1, limit=m.size)
    for layout in (ROWS, COLS, ROWS | COLS):
        if (layout & ROWS and m.shape[0] < 2) or (layout & COLS and m.shape[1] < 2):
            continue
        for bins in BINS:
            model = fit(m, layout, bins, classes)
            bits = _estimate_bits(model, m, cells)
            if bits < best_bits:
                best, best_bits = model, bits
    for model in _ends_models(m):
        bits = _estimate_bits(model, m)
        if bits < best_bits:
            best, best_bits = model, bits
    return best


@dataclass(frozen=True)
class ContextModel:
    """The entropy model of `ctx`: per-symbol contexts from row/column activity classes."""

    model: Model | Ends

    def rates(self, symbols: np.ndarray) -> RateTable:
        m = matrix_view(symbols).astype(np.int64)
        return counts_rate_table(m, self.model.contexts(*m.shape), self.model.bins)

    def bits(self, symbols: np.ndarray) -> float:
        return _estimate_bits(self.model, matrix_view(symbols).astype(np.int64))

    def refit(self, symbols: np.ndarray) -> ContextModel:
        m = matrix_view(symbols).astype(np.int64)
        if isinstance(self.model, Ends):
            return ContextModel(fit_ends(m, self.model.group))
        return ContextModel(fit(m, self.model.layout, self.model.bins))


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
    out = encode_with(model, symbols)
    return out if len(out) < len(order0) else order0


def encode_with(model: Model | Ends, symbols: np.ndarray) -> bytes:
    """The payload of these symbols under `model` (encode: under the best one, or order-0)."""
    m = matrix_view(symbols).astype(np.int64)
    ctx = model.contexts(*m.shape)
    out = bytearray([ENDS if isinstance(model, Ends) else CTX])
    put_uvarint(out, m.size)
    put_uvarint(out, m.shape[0])
    if isinstance(model, Ends):
        put_uvarint(out, model.group)
        put_svarint(out, model.lo)
        put_uvarint(out, model.hi - model.lo)
        side = (model.first_lo, model.first_hi)
        free = ctx != KNOWN
        m, ctx, bins = m[free], ctx[free], KNOWN
    else:
        out.append(model.layout)
        side = tuple(c for c in (model.row_classes, model.col_classes) if c.size)
        bins = model.bins
    for a in side:
        payload = ans.encode(a)
        put_uvarint(out, len(payload))
        out += payload
    if not isinstance(model, Ends):
        put_svarint(out, model.lo)
        put_uvarint(out, model.width)
        put_uvarint(out, model.bins)
    _put_streams(out, m.ravel(), ctx.ravel(), bins)
    return bytes(out)


def _put_streams(out: bytearray, flat: np.ndarray, ctx: np.ndarray, bins: int) -> None:
    """Each context's table (those with symbols), then their ANS streams."""
    streams = []
    for c, table in enumerate(_tables(flat, ctx, bins)):
        if table is None:
            continue
        origin, freqs, _ = table
        out += _table_bytes(origin, freqs)
        streams.append(b"" if len(freqs) == 1 else ans.encode_stream(flat[ctx == c] - origin, freqs))
    put_streams(out, streams)


def decode(data: bytes | memoryview, count: int) -> np.ndarray:
    """Bytes -> int64 symbols (flat); `count` is the number the caller expects. The native parser
    (native/ctx_frame.cpp) is the one the batched decode uses: each context's stream decodes on the
    thread pool, then the symbols are put in their places a block at a time."""
    out = native.ctx_decode(data, count)
    if out is None:  # order-0 symbols in a frame ans.py reads (packed, or raw low bits)
        return ans.decode(memoryview(data)[1:], count)
    return out


@register_coder
@dataclass(frozen=True)
class Ctx(CoderSpec):
    """Context-modelled ANS: row/column activity contexts, never more than a byte above `ans`."""

    name = "ctx"
    version = 1
    context_model = True
    gpu_decode = True  # each context's stream on the rANS kernel, then a stable sort by context (kernels/decode.py)

    def encode(self, symbols, trellis=None) -> bytes:
        return encode(symbols)

    def decode(self, data, shape, dtype=np.int64, trellis=None) -> np.ndarray:
        return decode(data, math.prod(shape)).reshape(shape).astype(dtype, copy=False)

    def model(self, symbols, trellis=None) -> ContextModel | Order0:
        return entropy_model(symbols)
