"""Coder `flags`: 0/1 matrices (pruning masks) by per-row density classes.

Rows are ranked by their count of ones and cut into up to 8 classes (kernels/prune.py);
the class of each row is coded order-0 (`ans`), and each class's flags, packed 8 to a
byte, are one ANS stream under the exact byte model of independent flags at the class's
density (7 bits, 0 and 128 meaning all zeros / all ones with no coded bits). So a mask
costs about sum over classes of n_c H(p_c), below n H(p) where rows differ.

Bitstream: k (classes), k density bytes, then k + 1 substreams (codecs/wire.put_streams):
the row classes (empty when k = 1) and each class's packed flags.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import ans
from zoocodec.codecs.base import CoderSpec, RateTable, counts_rate_table, register_coder
from zoocodec.codecs.context import matrix_view, view_shape
from zoocodec.codecs.wire import Reader, put_streams, put_uvarint
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels import prune as K

MAX_CLASSES = 8


def _freqs(p128: int) -> np.ndarray:
    return np.array(K.byte_freqs(p128), dtype=np.int64)


def _density(kept: int, n: int) -> int:
    return 0 if kept == 0 else 128 if kept == n else int(np.clip(round(128 * kept / n), 1, 127))


@dataclass(frozen=True)
class FlagsModel:
    """Per-row-class Bernoulli model of a 0/1 matrix."""

    k: int

    def _classes(self, m: np.ndarray) -> np.ndarray:
        return K.row_classes(m != 0, self.k, np)

    def rates(self, symbols: np.ndarray) -> RateTable:
        m = matrix_view(symbols).astype(np.int64)
        return counts_rate_table(m, np.broadcast_to(self._classes(m)[:, None], m.shape), self.k)

    def bits(self, symbols: np.ndarray) -> float:
        m = matrix_view(symbols) != 0
        classes = self._classes(m)
        total = 0.0
        for c in range(self.k):
            flags = m[classes == c]
            p = flags.mean() if flags.size else 0.0
            if 0 < p < 1:
                total += flags.size * float(-(p * math.log2(p) + (1 - p) * math.log2(1 - p)))
        return total

    def refit(self, symbols: np.ndarray) -> FlagsModel:
        return self


@register_coder
@dataclass(frozen=True)
class Flags(CoderSpec):
    name = "flags"
    version = 1
    alphabet = "flags"

    def model(self, symbols, trellis=None) -> FlagsModel:
        m = matrix_view(symbols) != 0
        return FlagsModel(max(1, min(MAX_CLASSES, len(np.unique(m.sum(axis=1))))))

    def encode(self, symbols, trellis=None) -> bytes:
        m = matrix_view(np.asarray(symbols))
        if m.size and (m.min() < 0 or m.max() > 1):
            raise SpecError("flags: the coder takes 0/1 symbols only")
        mask = m != 0
        k = self.model(mask).k if mask.shape[0] else 1
        classes = K.row_classes(mask, k, np)
        streams, densities = [ans.encode(classes) if k > 1 else b""], []
        for c in range(k):
            flags = mask[classes == c].ravel()
            p128 = _density(int(flags.sum()), flags.size)
            densities.append(p128)
            streams.append(ans.encode_stream(K.pack(flags, np), _freqs(p128)) if 0 < p128 < 128 else b"")
        out = bytearray()
        put_uvarint(out, k)
        out += bytes(densities)
        put_streams(out, streams)
        return bytes(out)

    def decode(self, data, shape, dtype=np.int64, trellis=None) -> np.ndarray:
        rows, cols = view_shape(tuple(shape))
        r = Reader(data, "flags payload")
        k = r.uvarint(limit=MAX_CLASSES)
        densities = list(r.take(k))
        if k < 1 or max(densities) > 128:
            raise r.fail(f"{k} classes with densities {densities}")
        streams = r.streams(k + 1)
        r.done()
        classes = ans.decode(streams[0], rows) if k > 1 else np.zeros(rows, dtype=np.int64)
        if classes.size and (classes.min() < 0 or classes.max() >= k):
            raise ContainerError("corrupt flags payload: row class out of range")
        mask = np.zeros((rows, cols), dtype=bool)
        for c, (p128, stream) in enumerate(zip(densities, streams[1:], strict=True)):
            members = classes == c
            n = int(members.sum()) * cols
            if p128 in (0, 128):
                if len(stream):
                    raise r.fail("a class of fixed density holds coded bits")
                mask[members] = p128 == 128
                continue
            packed = ans.decode_stream(stream, _freqs(p128), -(-n // 8), r)
            mask[members] = K.unpack(packed.astype(np.uint8), n, np).reshape(-1, cols)
        return mask.reshape(shape).astype(dtype)
