"""One registry for methods and coders: names, versions, declared capabilities and ranges.

A method (methods/base.py) and a coder (codecs/base.py) are both a `Spec`: a frozen
dataclass with a `name`, a `version` and its parameters as fields, registered under its
name in `METHODS` or `CODERS` (a name registered twice is refused). What the rest of the
code needs to know about a spec is declared on its class, never found by probing:

- capabilities, as class attributes (MethodSpec lists the methods' ones);
- `ranges`: {field: Range}, the valid values of each parameter. `validate()` checks them,
  `zoocodec methods` shows them and the table in docs/methods.md is generated from them
  (catalog.py), so the three cannot disagree. A field typed as a coder accepts any
  registered coder; rules that tie fields together go in `check()`;
- `upgrades`: {v: function} taking the parameters of version v to those of v + 1, so the
  JSON of an older spec is upgraded on reading; only versions newer than the code are refused.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from zoocodec.errors import SpecError


@dataclass(frozen=True)
class Range:
    """The valid values of one parameter: numbers between `lo` and `hi` (integers only when
    `integer`; a non-empty tuple of such numbers when `each`), one of `choices`, or the names
    of a registry (`registry`: "method" for the spec text of an inner method, "coder").
    `text` is how it reads where the bounds alone would not say it well. None is always
    accepted where the field allows it."""

    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    open_lo: bool = False
    open_hi: bool = False
    choices: tuple[str, ...] = ()
    registry: str = ""
    each: bool = False
    text: str = ""

    def holds(self, value: Any) -> bool:
        if self.each:
            one = dataclasses.replace(self, each=False)
            return isinstance(value, (tuple, list)) and len(value) > 0 and all(one.holds(v) for v in value)
        if self.choices:
            return value in self.choices
        if self.registry == "method":
            return isinstance(value, str) and value.partition(":")[0].strip() in METHODS
        if self.registry == "coder":
            return isinstance(value, Spec) and value.name in CODERS
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if self.integer else numbers.Real):
            return False
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.open_lo else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.open_hi else value <= self.hi)

    def __str__(self) -> str:
        if self.text:
            return self.text
        if self.registry == "method":
            return "a method spec: " + ", ".join(sorted(METHODS))
        if self.choices or self.registry:
            return "one of " + ", ".join(self.choices or sorted(REGISTRIES[self.registry]))
        if self.integer and self.hi is not None:
            return f"{self.lo}..{self.hi}"
        if self.hi is None:
            return f"{'>' if self.open_lo else '>='} {self.lo}"
        return f"in {'(' if self.open_lo else '['}{self.lo}, {self.hi}{')' if self.open_hi else ']'}"


def ints(lo: int, hi: int | None = None, text: str = "") -> Range:
    """Integers lo..hi (no upper bound when hi is None)."""
    return Range(lo, hi, integer=True, text=text)


def interval(lo: float | None, hi: float | None, bounds: str = "[]") -> Range:
    """Real numbers between lo and hi; `bounds` "(]" etc. says which ends are open."""
    return Range(lo, hi, open_lo=bounds[0] == "(", open_hi=bounds[1] == ")")


def positive() -> Range:
    return Range(0, None, open_lo=True, text="a positive number")


def one_of(*choices: str) -> Range:
    return Range(choices=tuple(choices))


METHOD_TEXT = Range(registry="method")  # a wrapper's inner method as spec text (prune:then=...)
ANY_CODER = Range(registry="coder")


@dataclass(frozen=True)
class Spec:
    """Base of method and coder specs: declared ranges, checks, upgrades, text parameters."""

    kind: ClassVar[str] = ""  # "method" or "coder": the registry, and the key naming the spec in its JSON
    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    ranges: ClassVar[Mapping[str, Range]] = {}
    upgrades: ClassVar[Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {}

    def validate(self) -> None:
        """Raise SpecError for a parameter outside its declared range, or a rule check() breaks."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            r = range_of(type(self), f.name)
            if r is not None and not r.holds(value):
                raise SpecError(f"{self.name}: {f.name} must be {r}, got {value!r}")
            if isinstance(value, Spec):
                value.validate()
        self.check()

    def check(self) -> None:
        """Rules between parameters that their ranges alone cannot state (e.g. step or bits, not both)."""

    @classmethod
    def upgrade(cls, d: dict[str, Any], from_version: int) -> dict[str, Any]:
        """The JSON of version `from_version` of this spec -> that of the current version, by the
        declared `upgrades`, one version at a time. SpecError for versions newer than this code,
        or older than any upgrade reaches. On a base class (MethodSpec.upgrade) the JSON's own
        method or coder name picks the class."""
        if not cls.name:
            name = d.get(cls.kind) if isinstance(d, dict) else None
            return REGISTRIES[cls.kind].lookup(name if isinstance(name, str) else repr(name)).upgrade(d, from_version)
        if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
            raise SpecError(f"{cls.kind} {cls.name!r}: version {from_version!r} is not a version")
        if from_version > cls.version:
            raise SpecError(f"{cls.kind} {cls.name!r} version {from_version} is newer than this zoocodec "
                            f"(it reads versions up to {cls.version}): upgrade zoocodec")
        params = {k: v for k, v in d.items() if k not in (cls.kind, "version")}
        for v in range(from_version, cls.version):
            if v not in cls.upgrades:
                raise SpecError(f"{cls.kind} {cls.name!r} version {from_version} is not supported "
                                f"(this zoocodec reads versions {min(cls.upgrades, default=cls.version)}.."
                                f"{cls.version})")
            params = cls.upgrades[v](dict(params))
        return {cls.kind: cls.name, "version": cls.version, **params}

    @classmethod
    def parse(cls, text: str) -> Spec:
        """A spec of this kind from its text (codecs/base.parse_coder, methods/base.parse_spec)."""
        raise NotImplementedError


def range_of(cls: type[Spec], field: str) -> Range | None:
    """The declared range of a field; a field typed as a coder accepts every registered coder."""
    if field in cls.ranges:
        return cls.ranges[field]
    return ANY_CODER if field in spec_fields(cls) else None


@functools.cache
def spec_fields(cls) -> frozenset[str]:
    """The fields of `cls` that hold a nested spec (a coder)."""
    hints = typing.get_type_hints(cls)
    return frozenset(f.name for f in dataclasses.fields(cls)
                     if isinstance(hints.get(f.name), type) and issubclass(hints[f.name], Spec))


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


class Registry(Mapping[str, type]):
    """The registered classes of one kind, by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, type] = {}

    def register(self, cls: type[Spec]) -> type[Spec]:
        """Class decorator. Refuses a second class under one name, and ranges for fields that do not exist."""
        if not cls.name:
            raise TypeError(f"{cls.__qualname__}: a registered {self.kind} needs a name")
        old = self._classes.get(cls.name)
        if old is not None:
            raise ValueError(f"{self.kind} {cls.name!r} is registered twice: by {old.__module__}.{old.__qualname__} "
                             f"and by {cls.__module__}.{cls.__qualname__}")
        unknown = set(cls.ranges) - set(field_names(cls))
        if unknown:
            raise TypeError(f"{self.kind} {cls.name!r} declares ranges for fields it lacks: {sorted(unknown)}")
        self._classes[cls.name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove a registration (test fixtures register toy methods for one test)."""
        del self._classes[name]

    def __getitem__(self, name: str) -> type:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def lookup(self, name: str) -> type:
        if name not in self._classes:
            raise SpecError(f"unknown {self.kind} {name!r} (known: {', '.join(sorted(self._classes))})")
        return self._classes[name]

    def from_dict(self, d: Any) -> tuple[type, dict[str, Any]]:
        """(class, parameters at its current version) of a spec's JSON; older versions are upgraded."""
        if not isinstance(d, dict) or not isinstance(d.get(self.kind), str):
            raise SpecError(f"not a {self.kind} spec: {d!r}")
        cls = self.lookup(d[self.kind])
        version = d.get("version")
        if version != cls.version:
            d = cls.upgrade(d, version)
        return cls, {k: v for k, v in d.items() if k not in (self.kind, "version")}


METHODS = Registry("method")
CODERS = Registry("coder")
REGISTRIES = {"method": METHODS, "coder": CODERS}


def build(cls: type[Spec], params: dict[str, Any]) -> Spec:
    """cls(**params), validated; a wrong field or type is a SpecError (from a damaged or forged header)."""
    unknown = set(params) - set(field_names(cls))
    if unknown:
        raise SpecError(f"{cls.kind} {cls.name!r} has no parameter {sorted(unknown)[0]!r} "
                        f"(has: {', '.join(field_names(cls)) or 'none'})")
    try:
        spec = cls(**params)
        spec.validate()
    except TypeError as e:
        raise SpecError(f"bad parameters for {cls.kind} {cls.name!r}: {e}") from None
    return spec


def text_params(cls: type[Spec], text: str, whole: str) -> dict[str, Any]:
    """'a=1,b=video-hevc(crf=1)' -> {a: 1, b: a coder}, each value converted to its field's type."""
    hints = typing.get_type_hints(cls)
    names = field_names(cls)
    params = {}
    for key, value in split_params(text, whole):
        if key not in names:
            raise SpecError(f"{cls.kind} {cls.name!r} has no parameter {key!r} (has: {', '.join(names) or 'none'})")
        params[key] = convert(value, hints[key], key, cls.name)
    return params


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
    """Text -> the field's type (int, float, str, bool, a nested spec, or None where allowed)."""
    types_ = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if value.lower() in ("none", "null") and type(None) in typing.get_args(hint):
        return None
    for t in types_:
        try:
            if isinstance(t, type) and issubclass(t, Spec):
                return t.parse(value)
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
