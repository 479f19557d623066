"""95% intervals for metric deltas, from the paired inputs both models ran on.

The compressed model and the original run on the same inputs, so a delta is judged by
its paired differences, not by two independent accuracies:

- per-input 0/1 outcomes (top-1, top-5, agreement): Newcombe's hybrid score interval for
  a difference of paired proportions (Newcombe 1998, method 10; recommended by
  Fagerland, Lydersen and Laake 2013), and the exact McNemar test of the flips;
- per-input values (KL, cosine, relative L2) and statistics of the whole set (Spearman):
  a paired bootstrap over inputs (both models get the same resampled inputs),
  percentile interval, a fixed seed so equal outputs give equal intervals;
- inputs in groups (several views of one photo, the tokens of one document): the
  bootstrap resamples whole groups;
- perplexity, exp of the mean per-token NLL: a paired bootstrap of the difference of the
  two perplexities (over groups where given).

A minimum over inputs gets no interval (a bootstrap cannot move it below the sample's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
_CHUNK = 200  # bootstrap resamples per batch (bounds memory on 10,000 inputs)


@dataclass(frozen=True)
class Interval:
    low: float | None
    high: float | None
    method: str
    p_value: float | None = None  # exact McNemar, for 0/1 outcomes


@dataclass(frozen=True)
class Paired:
    """One metric of a model (`x`) and of the reference (`r`), per input, on the same inputs.

    kind: "mean" (per-input values, averaged), "binary" (per-input 0/1, averaged),
    "spearman" (rank correlation of the per-input values with `target`), "min",
    "perplexity" (exp of the mean of per-token NLLs).
    """

    kind: str
    x: np.ndarray
    r: np.ndarray
    target: np.ndarray | None = None
    groups: np.ndarray | None = None  # group id per input: resample groups, not inputs

    def _stat(self, v: np.ndarray) -> float:
        if self.kind == "spearman":
            from scipy.stats import spearmanr

            return float(spearmanr(v, self.target).statistic)
        if self.kind == "perplexity":
            return float(np.exp(np.mean(v, dtype=np.float64)))
        return float(v.min()) if self.kind == "min" else float(v.mean())

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def value(self) -> float:
        return self._stat(self.x)

    @property
    def baseline(self) -> float:
        return self._stat(self.r)

    def interval(self) -> Interval:
        """The 95% interval of value - baseline."""
        if self.kind == "min":
            return Interval(None, None, "none (a minimum)")
        if self.kind == "binary" and self.groups is None:
            return newcombe(self.x.astype(bool), self.r.astype(bool))
        if self.kind == "spearman":
            return _bootstrap_spearman(self.x, self.r, self.target)
        if self.kind == "perplexity":
            return bootstrap_perplexity(self.x, self.r, self.groups)
        d = np.asarray(self.x, dtype=np.float64) - np.asarray(self.r, dtype=np.float64)
        return bootstrap_mean(d, self.groups)


def wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _z() -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + CONFIDENCE / 2))


def newcombe(x: np.ndarray, r: np.ndarray) -> Interval:
    """Interval of mean(x) - mean(r) for paired 0/1 outcomes, and the exact McNemar p-value."""
    from scipy.stats import binomtest

    n = len(x)
    a, b = int((x & r).sum()), int((~x & r).sum())  # b: right before, wrong now
    c, d = int((x & ~r).sum()), int((~x & ~r).sum())  # c: wrong before, right now
    p1, p2 = (a + b) / n, (a + c) / n
    z = _z()
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(margins) if margins else 0.0
    delta = p2 - p1
    low = delta - math.sqrt(max((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0.0))
    high = delta + math.sqrt(max((u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2, 0.0))
    p = binomtest(c, b + c, 0.5).pvalue if b + c else 1.0
    # a difference of proportions cannot leave [-p1, 1 - p1]
    return Interval(max(low, -p1), min(high, 1 - p1), "Newcombe paired score; exact McNemar", float(p))


def _percentiles(samples: np.ndarray) -> tuple[float, float]:
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_mean(d: np.ndarray, groups: np.ndarray | None = None, resamples: int = RESAMPLES,
                   seed: int = SEED) -> Interval:
    """Percentile bootstrap interval of mean(d), resampling inputs (or whole groups of inputs)."""
    if groups is None:
        sums, sizes = d, np.ones(len(d))
    else:
        ids = np.unique(groups, return_inverse=True)[1]
        sums, sizes = np.bincount(ids, weights=d), np.bincount(ids).astype(np.float64)
    if not np.any(d != d[0]):  # every difference equal: nothing to resample
        return Interval(float(d[0]), float(d[0]), "paired bootstrap" + (" over groups" if groups is not None else ""))
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, resamples, _CHUNK):
        idx = rng.integers(0, len(sums), (min(_CHUNK, resamples - start), len(sums)))
        out.append(sums[idx].sum(1) / sizes[idx].sum(1))
    low, high = _percentiles(np.concatenate(out))
    return Interval(low, high, "paired bootstrap" + (" over groups" if groups is not None else ""))


def bootstrap_perplexity(x: np.ndarray, r: np.ndarray, groups: np.ndarray | None = None,
                         resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """Percentile bootstrap interval of exp(mean x) - exp(mean r), per-token NLLs of two models on
    the same tokens, resampling tokens (or whole groups: the tokens of one document)."""
    how = "paired bootstrap" + (" over groups" if groups is not None else "")
    x, r = np.asarray(x, dtype=np.float64), np.asarray(r, dtype=np.float64)
    if np.array_equal(x, r):
        return Interval(0.0, 0.0, how)
    ids = np.unique(groups, return_inverse=True)[1] if groups is not None else np.arange(len(x))
    sx, sr = np.bincount(ids, weights=x), np.bincount(ids, weights=r)
    sizes = np.bincount(ids).astype(np.float64)
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, resamples, _CHUNK):
        idx = rng.integers(0, len(sizes), (min(_CHUNK, resamples - start), len(sizes)))
        n = sizes[idx].sum(1)
        out.append(np.exp(sx[idx].sum(1) / n) - np.exp(sr[idx].sum(1) / n))
    low, high = _percentiles(np.concatenate(out))
    return Interval(low, high, how)


def _rowwise_spearman(v: np.ndarray, target: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    a, b = rankdata(v, axis=1), rankdata(target, axis=1)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def _bootstrap_spearman(x: np.ndarray, r: np.ndarray, target: np.ndarray, resamples: int = RESAMPLES,
                        seed: int = SEED) -> Interval:
    if np.array_equal(x, r):
        return Interval(0.0, 0.0, "paired bootstrap")
    rng = np.random.default_rng(seed)
    n, out = len(x), []
    for start in range(0, resamples, _CHUNK):
        idx = rng.integers(0, n, (min(_CHUNK, resamples - start), n))
        out.append(_rowwise_spearman(x[idx], target[idx]) - _rowwise_spearman(r[idx], target[idx]))
    low, high = _percentiles(np.concatenate(out))
    return Interval(low, high, "paired bootstrap")


def loss_bounds(delta_low: float | None, delta_high: float | None, baseline: float,
                lower_is_better: bool) -> tuple[float | None, float | None]:
    """A delta interval as an interval of the loss (zoocodec.eval's definition: relative to
    |baseline|, absolute where the baseline is 0), as (optimistic, pessimistic)."""
    if delta_low is None or delta_high is None:
        return None, None
    scale = abs(baseline) or 1.0
    if lower_is_better:
        return delta_low / scale, delta_high / scale
    return -delta_high / scale, -delta_low / scale


def verdict(loss_low: float | None, loss_high: float | None, budget: float, n: int) -> str:
    """'within', 'over', or 'not resolvable with N inputs' for a loss budget (a fraction):
    within when the pessimistic bound is, over when the whole interval lies above the
    budget or the interval is no wider than it, unresolvable otherwise."""
    if loss_high is None or loss_low is None:
        return f"not resolvable with {n} inputs"
    if loss_high <= budget:
        return "within"
    if loss_low > budget or loss_high - loss_low <= budget:
        return "over"
    return f"not resolvable with {n} inputs"
