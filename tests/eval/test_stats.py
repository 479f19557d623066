"""Intervals of paired metric deltas: known cases, coverage by simulation, grouped inputs."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import binomtest

from zoocodec.eval import stats
from zoocodec.eval.stats import Paired


def _paired_counts(a, b, c, d):
    """0/1 outcomes with a both right, b reference only, c model only, d both wrong."""
    x = np.array([1] * a + [0] * b + [1] * c + [0] * d, bool)
    r = np.array([1] * a + [1] * b + [0] * c + [0] * d, bool)
    return x, r


def test_agreement_interval_is_the_wilson_bound_and_mcnemar_is_exact():
    # 10 flips among 1,000 inputs, none the other way: agreement 0.99 vs the reference's 1
    x, r = _paired_counts(990, 10, 0, 0)
    iv = stats.newcombe(x, r)
    low, _ = stats.wilson(990, 1000, stats._z())
    assert iv.low == pytest.approx(low - 1) and -0.01 < iv.high < 0  # the model flips, surely
    assert iv.p_value == pytest.approx(2 * 0.5 ** 10)  # exact McNemar: all 10 discordant one way
    assert stats.newcombe(*_paired_counts(900, 30, 20, 50)).p_value == pytest.approx(binomtest(20, 50).pvalue)


def test_newcombe_covers_the_true_difference():
    """Simulated paired outcomes: the 95% interval covers the true difference about 95% of the time."""
    rng = np.random.default_rng(1)
    n, p_b, p_c, hits = 500, 0.03, 0.01, 0
    for _ in range(400):
        u = rng.random(n)
        b, c = int((u < p_b).sum()), int(((u >= p_b) & (u < p_b + p_c)).sum())
        a = int(rng.binomial(n - b - c, 0.95))
        iv = stats.newcombe(*_paired_counts(a, b, c, n - a - b - c))
        hits += iv.low <= p_c - p_b <= iv.high
    assert 0.92 <= hits / 400 <= 0.99


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40), st.integers(0, 40), st.integers(0, 40))
def test_newcombe_interval_holds_the_estimate(a, b, c, d):
    if a + b + c + d == 0:
        return
    x, r = _paired_counts(a, b, c, d)
    iv = stats.newcombe(x, r)
    delta, p1 = x.mean() - r.mean(), r.mean()
    assert -p1 - 1e-12 <= iv.low <= delta + 1e-12 <= iv.high + 2e-12 <= 1 - p1 + 3e-12
    assert 0 <= iv.p_value <= 1


def test_bootstrap_mean_matches_the_normal_interval():
    d = np.random.default_rng(2).normal(0.01, 0.05, 4000)
    iv = stats.bootstrap_mean(d)
    half = 1.96 * d.std() / math.sqrt(len(d))
    assert iv.low == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert iv.high == pytest.approx(d.mean() + half, abs=0.15 * half)
    assert stats.bootstrap_mean(d) == iv  # fixed seed: the same interval every time


def test_groups_are_resampled_whole():
    """Four identical views of each input carry no more information than one: the grouped
    interval matches the one-view interval; treating views as independent would halve it."""
    d = np.random.default_rng(3).exponential(0.01, 300)
    one = stats.bootstrap_mean(d)
    four = np.repeat(d, 4)
    grouped = stats.bootstrap_mean(four, groups=np.repeat(np.arange(300), 4))
    naive = stats.bootstrap_mean(four)
    assert grouped.high - grouped.low == pytest.approx(one.high - one.low, rel=0.15)
    assert naive.high - naive.low < 0.7 * (one.high - one.low)


def test_spearman_delta_and_identical_outputs():
    rng = np.random.default_rng(4)
    human = rng.random(400)
    ref = human + 0.3 * rng.normal(size=400)
    noisy = ref + 0.3 * rng.normal(size=400)
    p = Paired("spearman", noisy, ref, human)
    iv = p.interval()
    assert p.value < p.baseline and iv.low < p.value - p.baseline < iv.high < 0.05
    assert Paired("spearman", ref, ref, human).interval() == stats.Interval(0.0, 0.0, "paired bootstrap")
    assert Paired("min", noisy, ref).interval().low is None


def test_loss_bounds_and_verdicts():
    # higher is better (top-1 0.97): a delta in [-0.002, 0.001] is a loss in [-0.1%, 0.2%] of 0.97
    low, high = stats.loss_bounds(-0.002, 0.001, 0.97, lower_is_better=False)
    assert low == pytest.approx(-0.001 / 0.97) and high == pytest.approx(0.002 / 0.97)
    assert stats.loss_bounds(0.001, 0.004, 0.0, lower_is_better=True) == (0.001, 0.004)  # KL: absolute
    assert stats.verdict(0.001, 0.004, 0.005, 90) == "within"
    assert stats.verdict(0.004, 0.006, 0.005, 90) == "over"
    assert stats.verdict(0.0, 0.006, 0.005, 90) == "not resolvable with 90 inputs"
    assert stats.verdict(-0.01, 0.004, 0.005, 90) == "within"  # wide, but its worst end is within
    assert stats.verdict(0.006, 0.02, 0.005, 90) == "over"  # wide, but all of it above the budget
