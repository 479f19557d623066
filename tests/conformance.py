"""Helpers shared by the conformance suites of methods and coders (tests/*/test_conformance.py)."""
from __future__ import annotations

import numpy as np

from zoocodec.errors import ContainerError
from zoocodec.kernels.backend import to_numpy
from zoocodec.methods import Quantized
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
    if r.each:
        return ()
    if r.lo is not None:
        return r.lo if r.open_lo else r.lo - 1
    return r.hi if r.open_hi else r.hi + 1


def same(a: Quantized, b: Quantized) -> bool:
    """The same symbols, side info, side arrays and reconstruction bytes (on any device)."""
    sa, sb = ({k: to_numpy(v) for k, v in q.symbols.items()} for q in (a, b))
    arrays_a, arrays_b = ({k: bytes(v) for k, v in q.arrays.items()} for q in (a, b))
    ra, rb = to_numpy(a.recon), to_numpy(b.recon)
    return (sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and np.array_equal(sa[k], sb[k]) for k in sa)
            and a.side == b.side and arrays_a == arrays_b and ra.dtype == rb.dtype and ra.tobytes() == rb.tobytes())
