"""Helpers shared by the conformance suites of methods and coders (tests/*/test_conformance.py)."""
from __future__ import annotations

from zoocodec.errors import ContainerError
from zoocodec.registry import Range


def refused_in_one_line(decode) -> None:
    """decode() refuses with a one-line ContainerError, or returns (a forgery it cannot tell)."""
    try:
        decode()
    except ContainerError as e:
        assert "\n" not in str(e), str(e)


def outside(r: Range):
    """A value the declared range refuses."""
    if r.choices:
        return "?"
    if r.registry:
        return "nope"
    if r.lo is not None:
        return r.lo if r.open_lo else r.lo - 1
    return r.hi if r.open_hi else r.hi + 1
