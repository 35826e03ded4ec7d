"""Intervals and tests for the probes: percentile bootstraps (scipy) over the sampled unit, and exact McNemar.

A text is the unit of a counterfactual probe (its variants are not independent of one another), so a flip rate
is a ratio of sums over texts and is resampled by text; a paired difference is resampled by text or pair.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Boot:
    """Bootstrap settings: evaluate.bootstrap_samples, evaluate.confidence, recipe.seed."""

    n_resamples: int
    confidence: float
    seed: int


def _interval(data: tuple[np.ndarray, ...], statistic, value: float, boot: Boot) -> tuple[float, float]:
    if len(data[0]) < 2 or all(np.ptp(d) == 0 for d in data):
        return value, value  # one unit, or no spread: nothing to resample
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        warnings.simplefilter("ignore", category=getattr(stats, "DegenerateDataWarning", RuntimeWarning))
        res = stats.bootstrap(data, statistic, paired=True, vectorized=True, method="percentile",
                              n_resamples=boot.n_resamples, confidence_level=boot.confidence,
                              rng=np.random.default_rng(boot.seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return value, value
    return low, high


def estimate(value: float, low: float, high: float, n: int) -> dict:
    return {"value": float(value), "ci_low": float(low), "ci_high": float(high), "n": int(n)}


def mean_estimate(x, boot: Boot) -> dict:
    """The mean of per-unit values, with its interval."""
    x = np.asarray(x, dtype=float)
    value = float(x.mean())
    return estimate(value, *_interval((x,), lambda a, axis=-1: a.mean(axis=axis), value, boot), len(x))


def ratio_estimate(numerator, denominator, boot: Boot) -> dict:
    """sum(numerator) / sum(denominator) over units (e.g. flipped variants / variants per text), resampled by
    unit."""
    num, den = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    value = float(num.sum() / den.sum())
    return estimate(value, *_interval((num, den), lambda a, b, axis=-1: a.sum(axis=axis) / b.sum(axis=axis),
                                      value, boot), len(num))


def mcnemar_p(a, b) -> float:
    """Exact two-sided McNemar test that two paired 0/1 outcomes have the same rate (binomial on the discordant
    pairs); 1.0 when there is none."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def wilcoxon_p(diff) -> float:
    """Wilcoxon signed-rank test that paired differences centre on zero; 1.0 when every difference is zero."""
    diff = np.asarray(diff, dtype=float)
    if not np.any(diff != 0):
        return 1.0
    return float(stats.wilcoxon(diff, zero_method="wilcox").pvalue)
