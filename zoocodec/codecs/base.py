"""The coder layer: registered, versioned coder specs, and the entropy models they fit.

Three layers code a tensor: a method quantizes (zoocodec/methods), an entropy
model prices symbols, a coder turns symbols into bytes and back. This module holds the
last two contracts.

A **coder** is a frozen dataclass registered in `CODERS` (registry.py) under its `name`,
with a `version`, its parameters as fields and their declared ranges. It appears in a method spec as text
(`uniform:coder=ctx`, `uniform:coder=video-hevc(crf=18,preset=medium)`) and in the
spec's JSON as a nested dict (`{"method": "dq", ..., "coder": {"coder": "ctx",
"version": 1}}`). It has four operations:

    encode(symbols, trellis=None) -> bytes
    decode(data, shape, dtype=np.int64, trellis=None) -> array of `shape`
    model(symbols, trellis=None) -> EntropyModel      (fitted to the symbols)
    describe(data) -> dict                             (header info for inspect; {} for most)

`symbols` is an integer array with its shape: a method hands over the matrix or tensor
it quantized, so a coder may build contexts from rows, columns or neighbours; the
decoder gets the same shape back from the method. `trellis` is None for independent
levels, or the axis (of the 2-D view rows x rest) along which a dependent quantizer's
4-state machine walks (kernels/rdoq.NEXT_STATE): a coder may use the state as a context,
because the decoder derives it from the levels it has already decoded. A coder is the only
code that frames streams (tables, chunk lengths, substreams) and is self-describing:
`decode` validates every field of untrusted bytes and raises ContainerError. A coder whose
`lossy` is true returns, from decode, symbols that may differ from the encoded ones (lossy
video); methods then measure their reconstruction from the decoded symbols.

An **entropy model** is fitted to symbols and answers, cheaply and vectorised:

    rates(symbols) -> RateTable   bits per (context, [dq state,] level) and each symbol's context
    bits(symbols) -> float        estimated coded bits of these symbols, model tables included
    refit(symbols) -> model       the same structure (contexts, layout) fitted to new symbols

RDOQ, dependent quantization, bit allocation and automatic mode price symbols only
through these. A model's parameters are serialised by its coder into the stream.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from zoocodec.errors import SpecError
from zoocodec.registry import CODERS, Spec, build, text_params

register_coder = CODERS.register


@dataclass(frozen=True)
class RateTable:
    """Bits of each level in each context, for rate-distortion decisions.

    ctx: int64 context id per symbol (the symbols' shape); bits: float64
    [contexts, states, level - origin], states 1 (no dependence on a quantizer state) or
    4 (dq: the state of kernels/rdoq.NEXT_STATE before the level). Levels outside the
    table cost its most expensive entry in that context plus one bit.
    """

    ctx: np.ndarray
    origin: int
    bits: np.ndarray

    @property
    def stateless(self) -> np.ndarray:
        """bits[context, level - origin] of state 0 (for quantizers without a state)."""
        return self.bits[:, 0, :]


class EntropyModel(Protocol):
    def rates(self, symbols: np.ndarray) -> RateTable: ...

    def bits(self, symbols: np.ndarray) -> float: ...

    def refit(self, symbols: np.ndarray) -> EntropyModel: ...


def counts_rate_table(symbols: np.ndarray, ctx: np.ndarray, contexts: int) -> RateTable:
    """Rates -log2 p(level | context) from the symbols' own counts per context.

    Levels a context never saw cost as much as its rarest one plus one bit: a finite
    penalty, so that a greedy pass may still move to them.
    """
    s = np.asarray(symbols, dtype=np.int64)
    if s.size == 0:
        return RateTable(ctx, 0, np.zeros((max(contexts, 1), 1, 1)))
    lo, counts = context_counts(s, ctx, contexts)
    counts = counts.astype(np.float64)
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = -np.log2(counts / np.maximum(total, 1))
    worst = np.where(np.isfinite(bits), bits, 0).max(axis=1, keepdims=True) + 1
    bits = np.where(np.isfinite(bits), bits, worst)
    return RateTable(ctx, lo, bits[:, None, :])


def context_counts(symbols: np.ndarray, ctx: np.ndarray, contexts: int) -> tuple[int, np.ndarray]:
    """(lo, counts[context, level - lo]) of non-empty integer symbols and their contexts (the same shape)."""
    lo = int(symbols.min())
    size = int(symbols.max()) - lo + 1
    at = np.multiply(ctx, size, dtype=np.int64)  # (in place from here: one temporary the size of the matrix, not three)
    at += symbols
    at -= lo
    return lo, np.bincount(at.ravel(), minlength=contexts * size).reshape(contexts, size)


def order0_bits(symbols: np.ndarray) -> float:
    """Empirical order-0 entropy of the symbols in bits (no table): n log2 n - sum c log2 c."""
    s = np.asarray(symbols).ravel()
    if s.size == 0:
        return 0.0
    lo, hi = int(s.min()), int(s.max())
    if hi - lo < 1 << 26:
        return counts_bits(np.bincount(np.subtract(s, lo, dtype=np.int64)))  # (in int64: int8 - lo would wrap)
    return counts_bits(np.unique(s, return_counts=True)[1])


def counts_bits(counts: np.ndarray) -> float:
    """order0_bits from the symbols' counts, in the order of their values (zeros allowed)."""
    counts = counts[counts > 0]
    n = int(counts.sum())
    return float(n * math.log2(n) - (counts * np.log2(counts)).sum())


@dataclass(frozen=True)
class Order0:
    """The order-0 model: one distribution for every symbol (what `ans` codes with)."""

    def rates(self, symbols: np.ndarray) -> RateTable:
        s = np.asarray(symbols)
        return counts_rate_table(s, np.zeros(s.shape, dtype=np.int64), 1)

    def bits(self, symbols: np.ndarray) -> float:
        return order0_bits(symbols)

    def refit(self, symbols: np.ndarray) -> Order0:
        return self


@dataclass(frozen=True)
class CoderSpec(Spec):
    """Base of all coders. Subclasses set `name`, `version`, their fields, their `ranges`
    (registry.py) and these capabilities:"""

    kind = "coder"
    # encode takes signed symbols of any width as they are (others get int64), and
    # decode(dtype=None) gives the narrowest signed type that holds them
    narrows: ClassVar[bool] = False
    # the symbols it is made for: "levels" (signed integers), "flags" (0 and 1) or "bits"
    # (a tensor's bits as unsigned integers of its width: the bit-exact coders)
    alphabet: ClassVar[str] = "levels"
    # its entropy model conditions on contexts (neighbour activity, the dq state): automatic mode
    # prices these coders against each other where the user named none (tuning/auto.py)
    context_model: ClassVar[bool] = False
    # the GPU decoder (kernels/decode.py) reads its payloads, where the method's fused()
    # describes them: `compress --decode-on gpu` keeps to these coders
    gpu_decode: ClassVar[bool] = False
    # encode takes the symbols on a CUDA device too (a CuPy array) and codes them there: only
    # its bytes cross to the host (MethodSpec.code and pipeline/batch.py leave them there)
    gpu_encode: ClassVar[bool] = False
    examples: ClassVar[tuple[str, ...]] = ()  # its other modes, for the conformance suite (tests/codecs)

    @classmethod
    def parse(cls, text: str) -> CoderSpec:
        return parse_coder(text)

    @property
    def lossy(self) -> bool:
        return False

    def encode(self, symbols: np.ndarray, trellis: int | None = None) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes | memoryview, shape: tuple[int, ...], dtype=np.int64,
               trellis: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def model(self, symbols: np.ndarray, trellis: int | None = None) -> EntropyModel:
        return Order0()

    def describe(self, data: bytes | memoryview) -> dict[str, Any]:
        return {}

    def for_gpu(self) -> CoderSpec:
        """This coder in the mode whose payloads the GPU decoder decodes itself (`--decode-on gpu`
        with a coder the user did not name); itself where it has no other."""
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"coder": self.name, "version": self.version, **dataclasses.asdict(self)}

    def __str__(self) -> str:
        default = type(self)()
        params = ",".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                          if getattr(self, f.name) != getattr(default, f.name))
        return f"{self.name}({params})" if params else self.name


CAPABILITIES = ("narrows", "context_model", "gpu_decode", "gpu_encode")


def coder_from_dict(d: Any) -> CoderSpec:
    """The inverse of CoderSpec.to_dict; rejects unknown coders, newer versions and unknown fields
    (older versions are upgraded)."""
    cls, params = CODERS.from_dict(d)
    return build(cls, params)


def parse_coder(text: str | CoderSpec | dict) -> CoderSpec:
    """'ans', 'ctx', 'video-hevc(crf=18,preset=medium)' (or a spec, or its dict) -> a coder spec."""
    if isinstance(text, CoderSpec):
        text.validate()
        return text
    if isinstance(text, dict):
        return coder_from_dict(text)
    if not isinstance(text, str):
        raise SpecError(f"not a coder: {text!r}")
    name, paren, rest = text.strip().partition("(")
    if paren and not rest.endswith(")"):
        raise SpecError(f"coder {text!r}: parameters go in parentheses, e.g. video-hevc(crf=18)")
    cls = CODERS.lookup(name.strip())
    return build(cls, text_params(cls, rest[:-1] if paren else "", text))
