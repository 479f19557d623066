"""Magnitude pruning before any quantizer (Han et al.; NCTM): `prune`.

    prune:sparsity=0.9,then=uniform:step=0.002
    prune:sparsity=0.5,per_row=true,then=uniform:bits=6;per_tensor=false

`then` names the inner method as spec text whose own parameters are separated by ';'
(',' already separates prune's parameters). The zero mask is coded on its own: rows are
ranked by their kept count into up to 8 classes (class per row coded by the spec's
coder); each class's flags are packed 8 to a byte and ANS-coded with the byte model of
independent flags at the class's density (7-bit, stored in the header), so the mask costs
about sum over classes of n_c H(p_c), below n H(sparsity) where rows differ.
The inner method codes only the kept weights: a 1-D vector of them (global pruning), or a
rows x k matrix (per_row, the same count kept in every row, so per-channel steps still
apply). A pruned tensor therefore costs the mask plus (1 - sparsity) of the weights'
symbols, and the inner quantizer never spends symbols on the pruned zeros.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import symbol_coder
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels import prune as K
from zoocodec.methods.base import Encoded, MethodSpec, TensorData, parse_spec, register, spec_from_dict
from zoocodec.methods.dither import matrix_view
from zoocodec.methods.transform import pack_streams, unpack_streams

MASK_CLASSES = 8


def _model(p128: int):
    import constriction  # noqa: PLC0415

    freqs = np.array(K.byte_freqs(p128), dtype=np.int64)
    return constriction.stream.model.Categorical(freqs.astype(np.float64) / float(freqs.sum()), perfect=False)


def encode_mask(mask: np.ndarray, classes_coder) -> tuple[bytes, list[int]]:
    """Bool mask (rows, cols) -> payload and each class's density in 128ths (0 and 128: no bits)."""
    import constriction  # noqa: PLC0415

    k = min(MASK_CLASSES, len(np.unique(mask.sum(axis=1))))
    classes = K.row_classes(mask, k, np)
    streams, densities = [classes_coder(classes) if k > 1 else b""], []
    for c in range(k):
        flags = mask[classes == c].ravel()
        kept = int(flags.sum())
        p128 = 0 if kept == 0 else 128 if kept == flags.size else int(np.clip(round(128 * kept / flags.size), 1, 127))
        densities.append(p128)
        if 0 < p128 < 128:
            coder = constriction.stream.stack.AnsCoder()
            coder.encode_reverse(K.pack(flags, np).astype(np.int32), _model(p128))
            streams.append(coder.get_compressed().astype("<u4").tobytes())
        else:
            streams.append(b"")
    return pack_streams(streams), densities


def decode_mask(data, densities, rows: int, cols: int, classes_decoder) -> np.ndarray:
    import constriction  # noqa: PLC0415

    k = len(densities) if isinstance(densities, list) else 0
    if not 1 <= k <= MASK_CLASSES or not all(isinstance(p, int) and 0 <= p <= 128 for p in densities):
        raise ContainerError(f"prune: bad mask densities {densities!r}")
    streams = unpack_streams(data, k + 1, "prune mask")
    classes = classes_decoder(streams[0], rows) if k > 1 else np.zeros(rows, dtype=np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= k):
        raise ContainerError("prune: mask row class out of range")
    mask = np.zeros((rows, cols), dtype=bool)
    for c, (p128, data_c) in enumerate(zip(densities, streams[1:])):
        members = classes == c
        n = int(members.sum()) * cols
        if p128 in (0, 128):
            if len(data_c):
                raise ContainerError("prune: mask class with a fixed density holds coded bits")
            mask[members] = p128 == 128
            continue
        if len(data_c) % 4:
            raise ContainerError("prune: mask stream is not a whole number of words")
        try:
            words = np.frombuffer(data_c, dtype="<u4").astype(np.uint32)
            packed = constriction.stream.stack.AnsCoder(words).decode(_model(p128), -(-n // 8))
        except Exception as e:  # constriction reports damaged streams in its own ways
            raise ContainerError(f"prune: corrupt mask stream ({e})") from None
        mask[members] = K.unpack(packed.astype(np.uint8), n, np).reshape(-1, cols)
    return mask


@register
@dataclass(frozen=True)
class Prune(MethodSpec):
    name = "prune"
    version = 1

    sparsity: float = 0.5
    then: str = "uniform"
    per_row: bool = False
    coder: str = "ans"

    def __post_init__(self):
        object.__setattr__(self, "then", str(self.inner).replace(",", ";"))

    @property
    def inner(self) -> MethodSpec:
        if not isinstance(self.then, str):
            raise SpecError(f"prune: then must be a method spec text, got {self.then!r}")
        spec = parse_spec(self.then.replace(";", ","))
        if isinstance(spec, Prune):
            raise SpecError("prune: the inner method cannot be prune again")
        return spec

    def validate(self) -> None:
        if not 0 <= self.sparsity <= 1:
            raise SpecError(f"prune: sparsity must be in [0, 1], got {self.sparsity}")
        symbol_coder(self.coder)

    def _view(self, shape) -> tuple[int, int]:
        return matrix_view(tuple(shape), per_row=self.per_row)

    def _kept_shape(self, shape, kept: int) -> tuple[int, ...]:
        rows, cols = self._view(shape)
        return (rows, kept // rows) if self.per_row and rows > 1 else (kept,)

    def encode(self, t: TensorData) -> Encoded:
        shape = t.array.shape
        rows, cols = self._view(shape)
        if self.per_row:
            mask = K.row_mask(np.abs(t.float64()).reshape(rows, cols), self.sparsity, np).reshape(shape)
        else:
            mask = K.magnitude_mask(t.float64(), self.sparsity, np)
        kept = int(mask.sum())
        values = t.array[mask].reshape(self._kept_shape(shape, kept))
        inner = self.inner.encode(TensorData(t.name, t.dtype, values))
        recon = np.zeros_like(t.array)
        recon[mask] = inner.recon.ravel()
        mask_rows, mask_cols = matrix_view(shape, per_row=True)
        payload, densities = encode_mask(mask.reshape(mask_rows, mask_cols), symbol_coder(self.coder)[0])
        segments = {"mask": payload}
        segments.update({"then." + k: v for k, v in inner.segments.items()})
        side = {"kept": kept, "mask_densities": densities, "then": inner.side, "then_spec": self.inner.to_dict()}
        return Encoded(side, segments, recon)

    def decode(self, side, segments, shape, dtype):
        n = int(np.prod(shape))
        rows, cols = self._view(shape)
        kept = side.get("kept")
        if not isinstance(kept, int) or not 0 <= kept <= n or (self.per_row and rows and kept % rows):
            raise ContainerError(f"prune: bad kept count {kept!r} for shape {tuple(shape)}")
        try:
            inner = spec_from_dict(side.get("then_spec"))
        except SpecError as e:
            raise ContainerError(f"prune: inner spec: {e}") from None
        if inner != self.inner:
            raise ContainerError(f"prune: inner spec {inner} does not match the method's {self.inner}")
        mask_rows, mask_cols = matrix_view(tuple(shape), per_row=True)
        mask = decode_mask(segments["mask"], side.get("mask_densities"), mask_rows, mask_cols,
                           symbol_coder(self.coder)[1]).ravel()
        if int(mask.sum()) != kept:
            raise ContainerError(f"prune: mask keeps {int(mask.sum())} weights, side info says {kept}")
        inner_segments = {k[5:]: v for k, v in segments.items() if k.startswith("then.")}
        values = inner.decode(side.get("then"), inner_segments, self._kept_shape(shape, kept), dtype)
        out = np.zeros(n, dtype=values.dtype)
        out[mask] = values.ravel()
        return out.reshape(shape)
