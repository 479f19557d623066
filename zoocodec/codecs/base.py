"""The coder layer: registered, versioned coder specs, and the entropy models they fit.

Three layers code a tensor (STYLE.md): a method quantizes (zoocodec/methods), an entropy
model prices symbols, a coder turns symbols into bytes and back. This module holds the
last two contracts.

A **coder** is a frozen dataclass registered in `CODERS` under its `name`, with a
`version` and its parameters as fields. It appears in a method spec as text
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
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from zoocodec.errors import SpecError

CODERS: dict[str, type[CoderSpec]] = {}


def register_coder(cls: type[CoderSpec]) -> type[CoderSpec]:
    CODERS[cls.name] = cls
    return cls


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
    lo = int(s.min())
    size = int(s.max()) - lo + 1
    counts = np.bincount((ctx * size + (s - lo)).ravel(), minlength=contexts * size)
    counts = counts.reshape(contexts, size).astype(np.float64)
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = -np.log2(counts / np.maximum(total, 1))
    worst = np.where(np.isfinite(bits), bits, 0).max(axis=1, keepdims=True) + 1
    bits = np.where(np.isfinite(bits), bits, worst)
    return RateTable(ctx, lo, bits[:, None, :])


def order0_bits(symbols: np.ndarray) -> float:
    """Empirical order-0 entropy of the symbols in bits (no table): n log2 n - sum c log2 c."""
    s = np.asarray(symbols).ravel()
    if s.size == 0:
        return 0.0
    lo, hi = int(s.min()), int(s.max())
    if hi - lo < 1 << 26:
        counts = np.bincount(s.astype(np.int64) - lo)  # (int8 - lo would wrap past 127)
        counts = counts[counts > 0]
    else:
        counts = np.unique(s, return_counts=True)[1]
    return float(s.size * math.log2(s.size) - (counts * np.log2(counts)).sum())


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
class CoderSpec:
    """Base of all coders. Subclasses set `name`, `version` and their fields."""

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    # encode takes signed symbols of any width as they are (others get int64), and
    # decode(dtype=None) gives the narrowest signed type that holds them
    narrows: ClassVar[bool] = False

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

    def validate(self) -> None:
        """Raise SpecError for parameters outside their range."""

    def to_dict(self) -> dict[str, Any]:
        return {"coder": self.name, "version": self.version, **dataclasses.asdict(self)}

    def __str__(self) -> str:
        default = type(self)()
        params = ",".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                          if getattr(self, f.name) != getattr(default, f.name))
        return f"{self.name}({params})" if params else self.name


def coder_from_dict(d: Any) -> CoderSpec:
    """The inverse of CoderSpec.to_dict; rejects unknown coders, versions and fields."""
    if not isinstance(d, dict) or not isinstance(d.get("coder"), str):
        raise SpecError(f"not a coder spec: {d!r}")
    cls = _lookup(d["coder"])
    if d.get("version") != cls.version:
        raise SpecError(f"coder {cls.name!r} version {d.get('version')!r} is not supported "
                        f"(this zoocodec reads version {cls.version})")
    return _build(cls, {k: v for k, v in d.items() if k not in ("coder", "version")})


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
    cls = _lookup(name.strip())
    hints = typing.get_type_hints(cls)
    params = {}
    for key, value in split_params(rest[:-1] if paren else "", text):
        if key not in hints or key in ("name", "version"):
            raise SpecError(f"coder {cls.name!r} has no parameter {key!r} (has: {', '.join(_fields(cls)) or 'none'})")
        params[key] = convert(value, hints[key], key, cls.name)
    return _build(cls, params)


def split_params(text: str, whole: str) -> list[tuple[str, str]]:
    """'a=1,b=video-hevc(crf=1,preset=fast)' -> [(a, 1), (b, video-hevc(...))]: commas inside () stay."""
    items, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            raise SpecError(f"unbalanced parentheses in {whole!r}")
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise SpecError(f"unbalanced parentheses in {whole!r}")
    items.append(cur)
    out = []
    for item in filter(None, (i.strip() for i in items)):
        key, eq, value = item.partition("=")
        if not eq:
            raise SpecError(f"parameter {item!r} in {whole!r} is not KEY=VALUE")
        out.append((key.strip().replace("-", "_"), value.strip()))
    return out


def convert(value: str, hint, key: str, owner: str):
    """Text -> the field's type (int, float, str, bool, a coder, or None where allowed)."""
    types_ = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if value.lower() in ("none", "null") and type(None) in typing.get_args(hint):
        return None
    for t in types_:
        try:
            if isinstance(t, type) and issubclass(t, CoderSpec):
                return parse_coder(value)
            if t is bool:
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                continue
            if t in (int, float, str):
                return t(value)
        except ValueError:
            continue
    raise SpecError(f"parameter {key}={value!r} of {owner!r} is not a valid {getattr(hint, '__name__', hint)}")


def _lookup(name: str) -> type[CoderSpec]:
    if name not in CODERS:
        raise SpecError(f"unknown coder {name!r} (known: {', '.join(sorted(CODERS))})")
    return CODERS[name]


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _build(cls, params: dict[str, Any]) -> CoderSpec:
    unknown = set(params) - set(_fields(cls))
    if unknown:
        raise SpecError(f"coder {cls.name!r} has no parameter {sorted(unknown)[0]!r}")
    try:
        spec = cls(**params)
        spec.validate()
    except TypeError as e:  # a field of the wrong type (from a damaged or forged header)
        raise SpecError(f"bad parameters for coder {cls.name!r}: {e}") from None
    return spec
