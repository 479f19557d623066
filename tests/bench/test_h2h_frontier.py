"""The head-to-head's equal-quality maths on rows made by hand: fronts, interpolation, bounds."""
from __future__ import annotations

import importlib

import pytest


def _mods():
    return importlib.import_module("bench_h2h_run"), importlib.import_module("bench_h2h_frontier")


def _row(tool: str, nbytes: int, loss_high: float, kl: float, loss: float | None = None):
    run, _ = _mods()
    r = run.Row(tool, f"{nbytes}", nbytes, params=1000, bytes_in=4000, encode_s=1.0, decode_s=0.5)
    r.quality = {"loss_pct": loss_high if loss is None else loss, "loss_low_pct": 0.0, "loss_high_pct": loss_high,
                 "distortion": kl, "inputs": 100}
    return r


def test_bits_at_interpolates_along_the_front_and_says_how():
    _, f = _mods()
    rows = [_row("t", 1000, 0.05, 1e-4), _row("t", 500, 0.4, 1e-3), _row("t", 250, 2.0, 1e-2),
            _row("t", 600, 1.0, 5e-3)]  # dominated: more bytes than the 0.4% point at a worse loss
    assert [b for _, b in f.front(rows, f.loss_key)] == [8.0, 4.0, 2.0]
    assert f.bits_at(rows, f.loss_key, 0.4) == (4.0, "measured")
    bits, how = f.bits_at(rows, f.loss_key, 1.2)
    assert (bits, how) == (pytest.approx(4.0 - 2.0 * 0.8 / 1.6), "interpolated")
    assert f.bits_at(rows, f.loss_key, 5.0) == (2.0, "upper bound")
    assert f.bits_at(rows, f.loss_key, 0.01) == (None, "not reached")


def test_compare_takes_zoocodecs_best_tool_against_nncodec():
    _, f = _mods()
    rows = [_row("NNCodec", 1000, 0.1, 1e-4), _row("NNCodec", 500, 1.0, 1e-3),
            _row("zoocodec a", 400, 0.1, 1e-4), _row("zoocodec a", 200, 1.0, 1e-3),
            _row("zoocodec b", 300, 0.1, 1e-4), _row("zoocodec b", 250, 1.0, 1e-3)]
    c = f.compare(rows)
    points = {p["target"]: p for p in c["points"]}
    assert points["loss 0.1%"]["zoocodec_tool"] == "zoocodec b"
    assert points["loss 0.1%"]["size_ratio"] == pytest.approx(1000 / 300)
    assert points["loss 1.0%"]["zoocodec_tool"] == "zoocodec a"
    assert points["loss 1.0%"]["size_ratio"] == pytest.approx(2.5)
    assert points["loss 0.5%"]["zoocodec_how"] == "interpolated"
    assert c["columns"][3:] == ["fid 1000", "fid 500"]  # NNCodec's own fidelities follow the budgets


def test_a_budget_inside_every_interval_is_said_unresolvable():
    _, f = _mods()
    rows = [_row("zoocodec a", 400, loss_high=0.6, kl=1e-4, loss=0.05)]  # point within 0.1%, bound not
    rows[0].quality["loss_low_pct"] = -0.5
    assert f.unresolvable(rows, 0.1) == "not resolvable with 100 inputs"
    assert f.unresolvable(rows, 1.0) is None
