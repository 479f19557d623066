"""Product and residual quantization (Gong et al. 2014).

The tensor's 2-D view (rows x rest; 1-D tensors are one row) is cut into sub-vectors of
`m` consecutive weights of a row (rows zero-padded to a multiple of m * groups). The
columns form `groups` groups; all sub-vectors of a group share one codebook of `k`
vectors (groups = 1: one codebook for the tensor; groups = cols / m: Gong's PQ, one
codebook per column segment). With `stages` > 1 each further stage quantizes the
residual of the ones before (residual quantization) with codebooks of its own.

Stored: codebooks (stages x groups x k x m, float32 or float16, little-endian) and the
indices (stage, group, row, sub-vector order) entropy-coded with `coder` as one stream.
Bits per weight before coding: stages * log2(k) / m.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import CoderSpec
from zoocodec.codecs.ans import Ans
from zoocodec.errors import ContainerError, NonFiniteError, SpecError
from zoocodec.kernels import pq as P
from zoocodec.methods.arrays import from_float64
from zoocodec.methods.base import MethodSpec, Quantized, TensorData, nested_coder, register
from zoocodec.methods.kmeans import CODEBOOK
from zoocodec.registry import ints, one_of


@register
@dataclass(frozen=True)
class PQ(MethodSpec):
    name = "pq"
    version = 2
    upgrades = {1: nested_coder}
    ranges = {"m": ints(1, 64), "k": ints(2, 4096), "groups": ints(1, 65536), "stages": ints(1, 8),
              "iters": ints(0, 1000), "codebook": one_of(*CODEBOOK)}
    examples = ("pq:m=2,k=16,groups=2,stages=2,codebook=float16",)

    m: int = 4
    k: int = 256
    groups: int = 1
    stages: int = 1
    iters: int = 20
    seed: int = 0
    codebook: str = "float32"
    coder: CoderSpec = Ans()

    def _geometry(self, shape) -> tuple[int, int, int, int]:
        """(rows, cols, padded cols, sub-vectors per row and group)."""
        rows = shape[0] if len(shape) >= 2 else 1
        numel = int(np.prod(shape))
        cols = numel // rows if rows else 0
        width = self.m * self.groups
        padded = -(-cols // width) * width
        return rows, cols, padded, padded // width

    def _vectors(self, w2: np.ndarray, padded: int) -> np.ndarray:
        """(rows, cols) -> (groups, rows * per_group, m), zero-padded."""
        rows, cols = w2.shape
        wp = np.zeros((rows, padded), dtype=np.float32)
        wp[:, :cols] = w2
        per = padded // (self.m * self.groups)
        return wp.reshape(rows, self.groups, per, self.m).transpose(1, 0, 2, 3).reshape(self.groups, rows * per, self.m)

    def _matrix(self, v: np.ndarray, rows: int, cols: int, padded: int) -> np.ndarray:
        per = padded // (self.m * self.groups)
        return v.reshape(self.groups, rows, per, self.m).transpose(1, 0, 2, 3).reshape(rows, padded)[:, :cols]

    def quantize(self, t: TensorData, xp=np) -> Quantized:
        w = t.float64()
        if not np.isfinite(w).all():
            raise NonFiniteError(f"pq: tensor {t.name!r} holds NaN or Inf")
        rows, cols, padded, _ = self._geometry(w.shape)
        v = self._vectors(w.reshape(rows, cols).astype(np.float32), padded)
        residual = v
        books, indices = [], []
        for s in range(self.stages):
            c, idx = P.pq_kmeans(residual, self.k, iters=self.iters, seed=self.seed + s)
            if self.codebook == "float16":
                c16 = c.astype(np.float16)
                if not np.isfinite(c16).all():
                    raise SpecError(f"pq: a centroid of {t.name!r} overflows float16; use codebook=float32")
                c = c16.astype(np.float32)
                idx = P.assign(residual, c)
            books.append(c)
            indices.append(idx.astype(np.int64))
            residual = residual - np.take_along_axis(c, indices[-1][:, :, None], axis=1)
        book = np.stack(books)
        sym = np.stack(indices)
        recon = from_float64(self._reconstruct(book, sym, w.shape), t.dtype)
        return Quantized({"indices": sym.ravel()}, {}, {"codebook": book.astype(CODEBOOK[self.codebook]).tobytes()},
                         recon)

    def _reconstruct(self, book: np.ndarray, sym: np.ndarray, shape) -> np.ndarray:
        rows, cols, padded, _ = self._geometry(shape)
        total = np.zeros(sym.shape[1:] + (self.m,), dtype=np.float64)
        for s in range(self.stages):  # stage by stage, in the same order as the encoder
            total += np.take_along_axis(book[s].astype(np.float64), sym[s][:, :, None], axis=1)
        return self._matrix(total, rows, cols, padded).reshape(shape)

    def dequantize(self, q, shape, dtype):
        rows, cols, padded, per = self._geometry(shape)
        n = rows * per
        book = np.frombuffer(q.arrays.get("codebook", b""), dtype=CODEBOOK[self.codebook])
        expected = self.stages * self.groups * self.k * self.m
        if book.size != expected:
            raise ContainerError(f"pq codebook holds {book.size} values, expected {expected}")
        sym = q.symbols["indices"]
        if sym.size != self.stages * self.groups * n:
            raise ContainerError(f"pq: {sym.size} indices, expected {self.stages * self.groups * n}")
        if sym.size and (sym.min() < 0 or sym.max() >= self.k):
            raise ContainerError(f"pq index out of range 0..{self.k - 1}")
        book = book.reshape(self.stages, self.groups, self.k, self.m)
        sym = sym.reshape(self.stages, self.groups, n)
        return from_float64(self._reconstruct(book, sym, shape), dtype)
