"""k-means weight sharing (Gong et al. 2014; Han et al., Deep Compression).

k = 2..256 shared values per problem; a problem is the whole tensor (`per=tensor`), one
output channel (`per=channel`, rows of the 2-D view), or `block` consecutive weights of
the flattened tensor (`per=block`; a shorter last block is its own problem). Stored:
the codebooks (sorted, float32 or float16 as `codebook` says, little-endian, problem by
problem) and the indices, entropy-coded with `coder` as one stream. With float16, the
indices are re-assigned to the rounded codebook, so the decoder's output is exactly the
encoder's reconstruction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import CoderSpec
from zoocodec.codecs.ans import Ans
from zoocodec.errors import ContainerError, NonFiniteError, SpecError
from zoocodec.kernels import kmeans as K
from zoocodec.kernels.backend import stack_rows, to_numpy
from zoocodec.methods import arrays
from zoocodec.methods.arrays import NATIVE_KINDS, all_finite, from_float64
from zoocodec.methods.base import MethodSpec, Quantized, TensorData, nested_coder, register
from zoocodec.methods.lossless import native_dtype
from zoocodec.registry import ints, one_of

PER = ("tensor", "channel", "block")


def float32(t: TensorData) -> np.ndarray:
    """The values as float32 without a float64 copy (every tensor dtype but float64 converts exactly)."""
    if t.dtype == "bfloat16":
        bits = t.array.astype(np.uint32)
        bits <<= 16
        return bits.view(np.float32)
    return t.array.astype(np.float32, copy=False)


CODEBOOK = {"float32": "<f4", "float16": "<f2"}


def problems(shape: tuple[int, ...], per: str, block: int) -> list[tuple[int, int]]:
    """(count, size) of each batch of equal problems, in the flat order of the tensor."""
    numel = int(np.prod(shape))
    if numel == 0:
        return []
    if per == "channel" and len(shape) >= 2:
        return [(shape[0], numel // shape[0])]
    if per == "block":
        full, rest = divmod(numel, block)
        return [(full, block)] * (full > 0) + [(1, rest)] * (rest > 0)
    return [(1, numel)]


@register
@dataclass(frozen=True)
class KMeans(MethodSpec):
    name = "kmeans"
    version = 2
    upgrades = {1: nested_coder}
    ranges = {"k": ints(2, 256), "per": one_of(*PER), "block": ints(1), "iters": ints(0, 1000),
              "codebook": one_of(*CODEBOOK)}
    gpu = True
    gpu_decode = True
    examples = ("kmeans:k=4,per=channel,codebook=float16", "kmeans:k=8,per=block,block=100")

    k: int = 16
    per: str = "tensor"
    block: int = 4096
    iters: int = 20
    seed: int = 0
    codebook: str = "float32"
    coder: CoderSpec = Ans()

    def quantize(self, t: TensorData, xp=np) -> Quantized:
        return self.quantize_many([t], xp)[0]

    def batch_key(self, t: TensorData):
        """Every tensor under one k-means spec: problems of one size, from any tensors, run as one batch."""
        return "problems" if t.array.size else None

    def quantize_many(self, ts: list[TensorData], xp=np, recon: bool = True) -> list[Quantized]:
        """k-means of every problem of `ts`: each problem seeded as if alone (k-means++ per tensor
        and part, on the host), then one Lloyd batch per problem size (kernels/kmeans.py: a
        problem's result does not depend on the batch it runs in)."""
        parts = []  # (tensor, size, values (count, size) float32, initial centroids)
        for i, t in enumerate(ts):
            if not all_finite(t):
                raise NonFiniteError(f"kmeans: tensor {t.name!r} holds NaN or Inf")
            x, start = float32(t).ravel(), 0  # no float64 copy
            for count, size in problems(t.array.shape, self.per, self.block):
                part = x[start : start + count * size].reshape(count, size)
                start += count * size
                parts.append((i, size, part, K.kmeanspp_init(part, self.k, self.seed)))
        device = xp is not np and all(t.dtype in NATIVE_KINDS for t in ts)
        books = [[] for _ in ts]
        indices = [[] for _ in ts]
        results, bad = {}, []
        for size in dict.fromkeys(size for _, size, _, _ in parts):  # sizes in order of appearance
            group = [p for p in parts if p[1] == size]
            x = stack_rows([p[2] for p in group], xp)
            c = K.lloyd(x, xp.asarray(np.concatenate([p[3] for p in group])), self.iters)
            if self.codebook == "float16":
                with np.errstate(over="ignore"):  # (an overflow is refused below, by name)
                    c16 = c.astype(xp.float16)
                owner = np.repeat([p[0] for p in group], [p[2].shape[0] for p in group])  # tensor of each problem
                finite = to_numpy(xp.isfinite(c16).all(axis=1))
                bad += [int(i) for i, ok in zip(owner, finite, strict=True) if not ok]
                c = c16.astype(xp.float32)
            if not bad:
                results[size] = (c, K.assign_any(x, c), x) if device else (to_numpy(c), to_numpy(K.assign_any(x, c)))
        if bad:  # the first such tensor in the model's order, as one at a time would report
            raise SpecError(f"kmeans: a centroid of {ts[min(bad)].name!r} overflows float16; use codebook=float32")
        if device:
            return self._device_results(ts, parts, results, xp, recon)
        row = {size: 0 for size in results}
        for i, size, part, _ in parts:  # back to each tensor, in its own part order
            c, idx = results[size]
            r, n = row[size], part.shape[0]
            books[i].append(c[r : r + n])
            indices[i].append(idx[r : r + n].ravel())
            row[size] = r + n
        return [self._host_result(t, bs, ids) for t, bs, ids in zip(ts, books, indices, strict=True)]

    def _device_results(self, ts, parts, results, xp, recon: bool) -> list[Quantized]:
        """Each tensor's indices, lookups and statistics from the device's centroids and
        assignments (float32 and bfloat16 tensors): the indices stay there (coded there by a
        coder that encodes on the GPU), the reconstruction is made and measured there
        (kernels/stats.cu: arrays.error_stats' floats) and comes back only when asked for; only
        the codebooks (k values a problem) come to the host. The same Quantized as the host's."""
        from zoocodec.kernels.stats import error_stats_device

        row = {size: 0 for size in results}
        pieces = [[] for _ in ts]  # (centroids, indices, values) of each part, in the tensor's order
        for i, size, part, _ in parts:
            c, idx, x = results[size]
            r, n = row[size], part.shape[0]
            pieces[i].append((c[r : r + n], idx[r : r + n], x[r : r + n]))
            row[size] = r + n

        def flat(arrays):
            return xp.concatenate([a.ravel() for a in arrays]) if len(arrays) > 1 else arrays[0].ravel()

        out = []
        for t, ps in zip(ts, pieces, strict=True):
            if not ps:
                out.append(self._host_result(t, [], []))
                continue
            sym = flat([idx for _, idx, _ in ps]).astype(xp.int16)  # k <= 256; flat, as the host's
            values = flat([xp.take_along_axis(c, idx, axis=1) for c, idx, _ in ps])
            stats, bits = error_stats_device(flat([x for _, _, x in ps]), values, t.dtype, recon)
            book = np.concatenate([to_numpy(c).ravel() for c, _, _ in ps])
            out.append(Quantized({"indices": sym}, {"problems": int(book.size // self.k)},
                                 {"codebook": book.astype(CODEBOOK[self.codebook]).tobytes()},
                                 None if bits is None else bits.view(t.array.dtype).reshape(t.array.shape), stats))
        return out

    def _host_result(self, t: TensorData, bs: list, ids: list) -> Quantized:
        book = np.concatenate([b.ravel() for b in bs]) if bs else np.zeros(0, np.float32)
        sym = np.concatenate(ids).astype(np.int16) if ids else np.zeros(0, np.int16)  # k <= 256
        recon = self._gather(book, sym, t.array.shape, t.dtype)
        return Quantized({"indices": sym}, {"problems": int(book.size // self.k)},
                         {"codebook": book.astype(CODEBOOK[self.codebook]).tobytes()}, recon)

    def symbol_dtype(self, stream, dtype):
        return None  # indices of any integer type

    def _gather(self, book: np.ndarray, sym: np.ndarray, shape, dtype: str) -> np.ndarray:
        """The native array of each weight's codebook value (problem p's indices look into
        book[p*k:(p+1)*k]), a block of weights at a time."""
        out = np.empty(sym.size, dtype=native_dtype(dtype))
        book, flat, step = book.astype(np.float64), sym.reshape(-1), arrays.BLOCK_BYTES // 8
        start, first = 0, 0
        for count, size in problems(shape, self.per, self.block):
            for lo in range(0, count * size, step):
                hi = min(lo + step, count * size)
                p = first + np.arange(lo, hi) // size
                out[start + lo : start + hi] = from_float64(book[p * self.k + flat[start + lo : start + hi]], dtype)
            start, first = start + count * size, first + count
        return out.reshape(shape)

    def fused(self, side, arrays, shape, dtype):
        """Codebook lookup of the indices (zoocodec.plan.Lookup); damaged side data is left to
        dequantize(), which names it."""
        from zoocodec.plan import Lookup

        probs = problems(shape, self.per, self.block)
        n = sum(c for c, _ in probs)
        book = np.frombuffer(arrays.get("codebook", b""), dtype=CODEBOOK[self.codebook])
        if not probs or book.size != n * self.k or side.get("problems") != n \
                or not np.isfinite(book).all():
            return None
        return Lookup("indices", book.astype(np.float64), self.k, probs[0][1])

    def dequantize(self, q, shape, dtype):
        count = int(np.prod(shape))
        n_problems = sum(c for c, _ in problems(shape, self.per, self.block))
        book = np.frombuffer(q.arrays.get("codebook", b""), dtype=CODEBOOK[self.codebook])
        if book.size != n_problems * self.k or q.side.get("problems") != n_problems:
            raise ContainerError(f"kmeans codebook holds {book.size} values, expected {n_problems} x {self.k}")
        if not np.isfinite(book).all():
            raise ContainerError("kmeans codebook is not finite")
        sym = q.symbols["indices"]
        if sym.size != count:
            raise ContainerError(f"kmeans: {sym.size} indices for {count} weights")
        if sym.size and (sym.min() < 0 or sym.max() >= self.k):
            raise ContainerError(f"kmeans index out of range 0..{self.k - 1}")
        return self._gather(book, sym, shape, dtype)
