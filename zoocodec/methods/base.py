"""Method specs: frozen, versioned dataclasses, one registry, parsed from text or JSON.

A spec says how one tensor is coded (quantizer, its parameters, the coder of its
symbols). Its dict form goes into the container header and into every results row.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import re
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from zoocodec.errors import SpecError

REGISTRY: dict[str, type[MethodSpec]] = {}


def register(cls: type[MethodSpec]) -> type[MethodSpec]:
    REGISTRY[cls.name] = cls
    return cls


@dataclass
class TensorData:
    """One tensor as the methods see it: its native bits and its dtype name.

    bfloat16 has no NumPy dtype, so it travels as its uint16 bit pattern.
    """

    name: str
    dtype: str
    array: np.ndarray

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def float64(self) -> np.ndarray:
        if self.dtype == "bfloat16":
            return (self.array.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return self.array.astype(np.float64)


FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


def from_float64(values: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values -> the native array of `dtype` (bfloat16 as rounded uint16 bits)."""
    if dtype == "bfloat16":
        f32 = values.astype(np.float32).view(np.uint32)
        rounded = f32 + np.uint32(0x7FFF) + ((f32 >> np.uint32(16)) & np.uint32(1))  # nearest-even
        return (rounded >> np.uint32(16)).astype(np.uint16)
    return values.astype(dtype)


@dataclass
class Encoded:
    """What a method produces for one tensor.

    side: small JSON-able parameters for the header; segments: named byte payloads;
    recon: the reconstruction the decoder will return (native dtype), for statistics.
    """

    side: dict[str, Any]
    segments: dict[str, bytes]
    recon: np.ndarray


@dataclass(frozen=True)
class MethodSpec:
    """Base of all method specs. Subclasses set `name`, `version` and their fields."""

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    lossless: ClassVar[bool] = False

    def encode(self, t: TensorData) -> Encoded:
        raise NotImplementedError

    def decode(self, side: dict, segments: dict[str, memoryview], shape: tuple[int, ...], dtype: str) -> np.ndarray:
        raise NotImplementedError

    def validate(self) -> None:
        """Raise SpecError for parameters outside their range."""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "version": self.version, **dataclasses.asdict(self)}

    def __str__(self) -> str:
        params = ",".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items() if v is not None)
        return f"{self.name}:{params}" if params else self.name


def default_bits(spec: MethodSpec) -> None:
    """The quantizers' step-or-bits convention: neither given means 8 bits (call in __post_init__)."""
    if spec.bits is None and spec.step is None:
        object.__setattr__(spec, "bits", 8)


def check_step_or_bits(spec: MethodSpec) -> None:
    """Exactly one of step (a positive number) and bits (2..16)."""
    if spec.step is not None and spec.bits is not None:
        raise SpecError(f"{spec.name}: give either step or bits, not both")
    if spec.step is not None and not (np.isfinite(spec.step) and spec.step > 0):
        raise SpecError(f"{spec.name}: step must be a positive number, got {spec.step}")
    if spec.bits is not None and not 2 <= spec.bits <= 16:
        raise SpecError(f"{spec.name}: bits must be 2..16, got {spec.bits}")


def spec_from_dict(d: dict[str, Any]) -> MethodSpec:
    """The inverse of MethodSpec.to_dict; rejects unknown methods, versions and fields."""
    if not isinstance(d, dict) or not isinstance(d.get("method"), str):
        raise SpecError(f"not a method spec: {d!r}")
    cls = _lookup(d["method"])
    if d.get("version") != cls.version:
        raise SpecError(
            f"method {cls.name!r} version {d.get('version')!r} is not supported "
            f"(this zoocodec reads version {cls.version})"
        )
    params = {k: v for k, v in d.items() if k not in ("method", "version")}
    return _build(cls, params)


def parse_spec(text: str | MethodSpec) -> MethodSpec:
    """'uniform', 'uniform:bits=6', 'uniform:step=0.002,coder=ans' -> a spec."""
    if isinstance(text, MethodSpec):
        text.validate()
        return text
    name, _, rest = text.strip().partition(":")
    cls = _lookup(name.strip())
    hints = typing.get_type_hints(cls)
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq:
            raise SpecError(f"method parameter {item!r} in {text!r} is not KEY=VALUE")
        if key not in hints or key in ("name", "version", "lossless"):
            raise SpecError(f"method {cls.name!r} has no parameter {key!r} (has: {', '.join(_fields(cls))})")
        params[key] = _convert(value.strip(), hints[key], key, cls.name)
    return _build(cls, params)


def _lookup(name: str) -> type[MethodSpec]:
    if name not in REGISTRY:
        raise SpecError(f"unknown method {name!r} (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _build(cls, params: dict[str, Any]) -> MethodSpec:
    unknown = set(params) - set(_fields(cls))
    if unknown:
        raise SpecError(f"method {cls.name!r} has no parameter {sorted(unknown)[0]!r} (has: {', '.join(_fields(cls))})")
    try:
        spec = cls(**params)
    except TypeError as e:
        raise SpecError(f"bad parameters for method {cls.name!r}: {e}") from None
    spec.validate()
    return spec


def _convert(value: str, hint, key: str, method: str):
    types_ = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if value.lower() in ("none", "null") and type(None) in typing.get_args(hint):
        return None
    for t in types_:
        try:
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
    raise SpecError(f"parameter {key}={value!r} of method {method!r} is not a valid {hint}")


class Overrides:
    """Per-tensor specs chosen by name pattern; the first pattern that matches wins.

    Patterns are shell globs ('*embeddings*') or regular expressions ('re:layer\\.[0-5]\\.').
    """

    def __init__(self, rules: list[tuple[str, MethodSpec]] | dict[str, Any] | None = None):
        items = rules.items() if isinstance(rules, dict) else (rules or [])
        self.rules: list[tuple[str, re.Pattern, MethodSpec]] = []
        for pattern, spec in items:
            regex = pattern[3:] if pattern.startswith("re:") else fnmatch.translate(pattern)
            try:
                compiled = re.compile(regex)
            except re.error as e:
                raise SpecError(f"bad override pattern {pattern!r}: {e}") from None
            self.rules.append((pattern, compiled, parse_spec(spec)))

    @classmethod
    def parse(cls, texts: list[str]) -> Overrides:
        """['PATTERN=SPEC', ...] as given on the command line."""
        rules = []
        for text in texts:
            pattern, eq, spec = text.partition("=")
            if not eq or not pattern:
                raise SpecError(f"override {text!r} is not PATTERN=SPEC")
            rules.append((pattern, spec))
        return cls(rules)

    def match(self, name: str) -> MethodSpec | None:
        for pattern, compiled, spec in self.rules:
            if (compiled.search(name) if pattern.startswith("re:") else compiled.match(name)):
                return spec
        return None

    def to_list(self) -> list[list]:
        return [[p, s.to_dict()] for p, _, s in self.rules]
