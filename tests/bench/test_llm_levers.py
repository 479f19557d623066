"""bench/bench_llm_levers.py: a configuration label names DataAware's act_order and sweeps, or refuses."""
from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(("label", "settings"), [
    ("default", {}),
    ("order=natural cd=0", {"act_order": False, "sweeps": 0}),
    ("order=act cd=1", {"act_order": True, "sweeps": 1}),
])
def test_settings(label, settings):
    assert importlib.import_module("bench_llm_levers").settings(label) == settings


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="order=act"):
        importlib.import_module("bench_llm_levers").settings("damp=0.1")
