"""bench/bench_coding.py's translation of NNCodec's levels: NNCodec's quantization indices <-> the
levels its coder codes under its 8-state machine, and cabac round-tripping them exactly."""
from __future__ import annotations

import importlib

import numpy as np


def _bench():
    return importlib.import_module("bench_coding")  # bench/ is on sys.path (conftest.py)


def test_indices_and_levels_translate_both_ways_and_code_exactly():
    b = _bench()
    k = np.rint(np.random.default_rng(0).laplace(0, 3, (40, 3, 3, 3))).astype(np.int32)
    v = b.unhalve(k)
    # unhalve gives indices NNCodec could have produced (even ones wherever the state is even)
    assert np.array_equal(b.halve(v.astype(np.int32)), k)
    coded = b.cabac.encode_levels(b.matrix(k), b.NNR8, 1 << 16, 1)
    assert np.array_equal(b.cabac.decode_levels(coded, k.size, 2).reshape(k.shape), k)
