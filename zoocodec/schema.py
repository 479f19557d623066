"""The JSON under the .zc header, checked before anything trusts it.

`parse` reads the header's text (nesting and NaN refused before the parser recurses); the
scalar checks and `spec_of` (a method spec's JSON: upgraded to the current version first,
then its parameters' JSON types, then its ranges) are what the typed header model
(zoocodec/header.py) is validated with. A violation raises Invalid('WHY'); the container
turns it into one ContainerError naming the file.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np

from zoocodec.errors import ContainerError, SpecError, ZoocodecError

MAX_DEPTH = 64  # our headers nest about 8 deep; json.loads recurses once per level


class Invalid(Exception):
    """A header field that is wrong; the container turns it into a ContainerError naming the file."""


def parse(path: Path, text: bytes) -> Any:
    """The header's JSON, refusing nesting beyond MAX_DEPTH before the parser recurses, and NaN/Infinity."""
    if _depth(text) > MAX_DEPTH:
        raise ContainerError(f"{path}: invalid header: nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, Invalid) as e:
        raise ContainerError(f"{path}: header is not valid JSON ({e})") from None
    except (RecursionError, MemoryError) as e:
        raise ContainerError(f"{path}: header is too deeply nested or too large ({type(e).__name__})") from None


def _no_constant(name: str):
    raise Invalid(f"{name} is not JSON")


_OTHER = bytes(b for b in range(256) if b not in b'[]{}"')


def _depth(text: bytes) -> int:
    """Deepest nesting of [ and { outside strings. Escaped backslashes, then escaped quotes, go
    first, so that quotes alone delimit the strings; then everything but brackets and quotes (a
    header of 37 KB is left with about 2 KB to scan), and a bracket counts where an even number
    of quotes precedes it."""
    marks = text.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _OTHER)
    a = np.frombuffer(marks, dtype=np.uint8)
    outside = (np.cumsum(a == ord('"'), dtype=np.int64) & 1) == 0
    step = (a == ord("[")).astype(np.int32) + (a == ord("{")) - (a == ord("]")) - (a == ord("}"))
    return int(np.cumsum(np.where(outside, step, 0)).max(initial=0))


def obj(v: Any, what: str) -> dict:
    if not isinstance(v, dict):
        raise Invalid(f"{what} is not an object")
    return v


def integer(v: Any, what: str, lo: int = 0, hi: int = 1 << 63) -> int:
    if type(v) is not int or not lo <= v < hi:
        raise Invalid(f"{what} is not an integer in [{lo}, {hi})")
    return v


def string(v: Any, what: str, optional: bool = False) -> str | None:
    if not (isinstance(v, str) or (optional and v is None)):
        raise Invalid(f"{what} is not a string")
    return v


def number(v: Any, what: str, optional: bool = False) -> None:
    if optional and v is None:
        return
    if type(v) not in (int, float) or not math.isfinite(v):
        raise Invalid(f"{what} is not a finite number")


def str_map(v: Any, what: str) -> None:
    if not all(isinstance(k, str) and isinstance(x, str) for k, x in obj(v, what).items()):
        raise Invalid(f"{what} is not an object of strings")


def spec_of(d: Any, what: str):
    """A method spec's JSON -> the MethodSpec: a registered method, upgraded from an older
    version first (so a parameter a later version removed is no error), then its parameters'
    JSON types checked (k=16, not "16" or 16.0), nested coders' too, then its ranges. Specs are
    immutable, so the tensors of a header that share a spec's JSON share one parse."""
    from zoocodec.registry import METHODS

    text = json.dumps(obj(d, what), sort_keys=True)
    try:
        spec = _spec(text)
        if METHODS.get(spec.name) is not type(spec):  # registered anew since it was cached (a test's toy)
            _spec.cache_clear()
            spec = _spec(text)
    except Invalid as e:
        raise Invalid(f"{what}: {e}") from None
    return spec


@functools.lru_cache(maxsize=1024)
def _spec(text: str):
    from zoocodec.methods import spec_from_dict  # the registry: methods import numpy only
    from zoocodec.registry import METHODS

    d = json.loads(text)
    cls = METHODS.get(d["method"]) if isinstance(d.get("method"), str) else None
    if cls is None:
        raise Invalid(f"unknown method {d.get('method')!r}")
    try:
        current = _upgraded(cls, d)
        _fields(cls, current, "")
        return spec_from_dict(current)
    except ZoocodecError as e:
        raise Invalid(str(e)) from None


def _upgraded(cls: type, d: dict) -> dict:
    """A spec's JSON at the current version of its class (Spec.upgrade); an upgrade that a forged
    parameter breaks is a SpecError like any other."""
    if type(d.get("version")) is int and d["version"] == cls.version:
        return d
    try:
        return cls.upgrade(d, d.get("version"))
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise SpecError(f"{cls.kind} {cls.name!r} version {d.get('version')!r} cannot be upgraded "
                        f"({type(e).__name__}: {e})") from None


def _fields(cls: type, d: dict, prefix: str) -> None:
    """The JSON types of a spec dataclass's fields (k=16, not "16" or 16.0), nested coder specs
    (upgraded first) too."""
    from zoocodec.registry import CODERS

    hints, fields = _hints(cls)
    for key, value in d.items():
        if key in (cls.kind, "version"):
            continue
        if key not in fields:
            raise Invalid(f"{prefix}{cls.__name__} has no parameter {key!r}")
        if isinstance(value, dict) and isinstance(value.get("coder"), str) and value["coder"] in CODERS:
            coder = CODERS[value["coder"]]
            _fields(coder, _upgraded(coder, value), f"{prefix}coder {value['coder']!r}: ")
        elif not _json_type_ok(hints[key], value):
            raise Invalid(f"{prefix}parameter {key}={value!r} is not of type {_type_name(hints[key])}")


@functools.cache
def _hints(cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    """A spec class's field types and names (resolved once: a header names a class per tensor)."""
    return typing.get_type_hints(cls), frozenset(f.name for f in dataclasses.fields(cls))


def _json_type_ok(hint: Any, value: Any) -> bool:
    """Scalars strictly (bool is no int, 16.0 is no int, "16" is no number); nested specs are their parser's."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_json_type_ok(a, value) for a in args)
    if origin is typing.Literal:
        return value in args and all(type(value) is type(a) for a in args if a == value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return type(value) is int
    if hint is float:
        return type(value) in (int, float) and math.isfinite(value)
    if hint is str:
        return type(value) is str
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
