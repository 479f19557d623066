"""What zoocodec offers, generated from its registries: methods with their parameters,
coders, zoo models, presets. Shown by `zoocodec methods` and `zoocodec zoo`.

A parameter's range is the rule its method's own `validate()` enforces: each parameter is
probed with a value no method accepts and the "must be ..." of the refusal is shown, so
the listing cannot drift from the code.
"""
from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any

from zoocodec.errors import SpecError
from zoocodec.pipeline import zoo

PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    # name: (compress options, what it is for); measured on the zoo by bench/presets.py
    "near-lossless": ({"method": "uniform:bits=8"}, "8 bits per output channel (the default)"),
    "balanced": ({"method": "dq:coder=ctx", "target_bpw": 5.0},
                 "dependent quantization + context coding, one step for the model at 5 bits/weight"),
    "small": ({"method": "dq:coder=ctx", "target_bpw": 3.0},
              "dependent quantization + context coding, one step for the model at 3 bits/weight"),
}

_PROBES = {int: -10**9, float: -1e9, str: "?", bool: None}


def _summary(doc: str | None) -> str:
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ")


def _probe(cls, name: str, kind: type) -> str:
    """The 'must be ...' that validate() answers to a value outside every range ('' if none)."""
    value = _PROBES.get(kind)
    if value is None:
        return ""
    try:
        cls(**{name: value}).validate()
    except (SpecError, TypeError, ValueError) as e:
        text = str(e)
        if " must be " in text:
            return text.split(" must be ", 1)[1].rsplit(", got ", 1)[0]
        if text.startswith("unknown "):  # a name looked up in another registry (coder, then=)
            return "one of " + text.split("(known: ", 1)[1].rstrip(")") if "(known: " in text else ""
    return ""


def _kind(hint) -> type | None:
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return next((a for a in args if a in (bool, int, float, str)), None)


def _type_name(hint) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        return " | ".join(getattr(a, "__name__", str(a)) for a in args) + " | none"
    return getattr(hint, "__name__", str(hint))


def methods() -> list[dict[str, Any]]:
    """Every registered method: name, version, what it does, parameters (type, default, range)."""
    from zoocodec.methods import REGISTRY  # noqa: PLC0415

    out = []
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        hints = typing.get_type_hints(cls)
        params = []
        for f in dataclasses.fields(cls):
            kind = _kind(hints[f.name])
            params.append({"name": f.name, "type": _type_name(hints[f.name]),
                           "default": None if f.default is dataclasses.MISSING else f.default,
                           "range": _probe(cls, f.name, kind) if kind else ""})
        doc = cls.__doc__ if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}(") else None
        out.append({"name": name, "version": cls.version, "lossless": cls.lossless,
                    "about": _summary(doc or sys.modules[cls.__module__].__doc__), "params": params})
    return out


def coders() -> list[dict[str, str]]:
    """Every symbol coder a method's `coder` can name."""
    from zoocodec.codecs import SYMBOL_CODERS  # noqa: PLC0415

    return [{"name": name, "about": _summary(sys.modules[enc.__module__].__doc__)}
            for name, (enc, _) in sorted(SYMBOL_CODERS.items())]


def zoo_models() -> list[dict[str, Any]]:
    """Every zoo entry, installed or not, with its tasks and how to install it."""
    return [{"name": name, "installed": zoo.installed(name), "tasks": list(e.get("tasks") or []),
             "format": e.get("format", ""), "about": e.get("about", ""), "install": e.get("install", "")}
            for name, e in zoo.registry().items()]
