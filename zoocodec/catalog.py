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
    # name: (compress options, what it is for); measured on the zoo by bench/bench_presets.py
    "near-lossless": ({"method": "uniform:bits=8"}, "8 bits per output channel (the default)"),
    "balanced": ({"method": "dq:coder=ctx", "target_bpw": 5.0},
                 "dependent quantization + context coding, one step for the model at 5 bits/weight"),
    "small": ({"method": "dq:coder=ctx", "target_bpw": 3.0},
              "dependent quantization + context coding, one step for the model at 3 bits/weight"),
}

_PROBES = {int: -10**9, float: -1e9, str: "?"}


def _summary(doc: str | None) -> str:
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ")


def _doc(cls) -> str:
    """The class docstring, else its module's (dataclasses invent a signature docstring)."""
    own = cls.__doc__ if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}(") else None
    return _summary(own or sys.modules[cls.__module__].__doc__)


def _refusal(cls, name: str, value: Any) -> str | None:
    """validate()'s refusal of cls(name=value), or None when accepted."""
    try:
        cls(**{name: value}).validate()
    except (SpecError, TypeError, ValueError) as e:
        return str(e)
    return None


def _range(cls, name: str, hint) -> str:
    """The rule validate() enforces on one parameter: for a coder, the coders it accepts; for
    a number or text, the "must be ..." it answers to a value outside every range."""
    from zoocodec.codecs import CODERS, CoderSpec  # noqa: PLC0415

    kinds = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if any(isinstance(k, type) and issubclass(k, CoderSpec) for k in kinds):
        return "one of " + ", ".join(n for n, c in CODERS.items() if _refusal(cls, name, c()) is None)
    kind = next((k for k in kinds if k in _PROBES), None)
    text = _refusal(cls, name, _PROBES[kind]) if kind else None
    if not text:
        return ""
    if " must be " in text:
        return text.split(" must be ", 1)[1].rsplit(", got ", 1)[0]
    if "(known: " in text:  # a name looked up in another registry (then=)
        return "one of " + text.split("(known: ", 1)[1].rstrip(")")
    return ""


def _type_name(hint) -> str:
    from zoocodec.codecs import CoderSpec  # noqa: PLC0415

    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    names = ["coder" if isinstance(a, type) and issubclass(a, CoderSpec) else getattr(a, "__name__", str(a))
             for a in args]
    return " | ".join(names) + (" | none" if type(None) in typing.get_args(hint) else "")


def _params(cls) -> list[dict[str, Any]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if default is not None and not isinstance(default, (bool, int, float, str)):
            default = str(default)  # a nested spec, e.g. a coder
        out.append({"name": f.name, "type": _type_name(hints[f.name]), "default": default,
                    "range": _range(cls, f.name, hints[f.name])})
    return out


def methods() -> list[dict[str, Any]]:
    """Every registered method: name, version, what it does, parameters (type, default, range)."""
    from zoocodec.methods import REGISTRY  # noqa: PLC0415

    return [{"name": name, "version": cls.version, "lossless": cls.lossless, "about": _doc(cls),
             "params": _params(cls)} for name, cls in sorted(REGISTRY.items())]


def coders() -> list[dict[str, Any]]:
    """Every registered coder a method's `coder=` can name, with its own parameters."""
    from zoocodec.codecs import CODERS  # noqa: PLC0415

    return [{"name": name, "version": cls.version, "about": _doc(cls), "params": _params(cls)}
            for name, cls in sorted(CODERS.items())]


def zoo_models() -> list[dict[str, Any]]:
    """Every zoo entry, installed or not, with its tasks and how to install it."""
    return [{"name": name, "installed": zoo.installed(name), "tasks": list(e.get("tasks") or []),
             "format": e.get("format", ""), "about": e.get("about", ""), "install": e.get("install", "")}
            for name, e in zoo.registry().items()]
