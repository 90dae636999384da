"""The statistics of `sweeps confirm`, on per-seed values (scipy.stats; no torch, no stores).

Every candidate was trained on the same seeds, so values[i] of two candidates share seed i
(init, shuffling and data): comparisons are paired. Lower is better (a loss).

  - per candidate: mean, sample standard deviation, a 95% bootstrap CI of the mean
    (`scipy.stats.bootstrap`, BCa);
  - each candidate against the best (lowest mean): per-seed differences candidate − best,
    their mean with a 95% bootstrap CI, wins (seeds where the candidate is strictly
    better), the two-sided Wilcoxon signed-rank p-value (`scipy.stats.wilcoxon`),
    Holm-adjusted over the comparisons;
  - the Friedman test (`scipy.stats.friedmanchisquare`) over all candidates when there
    are three or more.

With fewer than MIN_SEEDS_FOR_TESTS seeds no p-value is computed: a two-sided Wilcoxon on
five pairs cannot go below 0.0625, so a test could never say anything. Values equal on
every seed are "identical": difference exactly 0, CI [0, 0], p = 1, never a NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

CONFIDENCE = 0.95
MIN_SEEDS_FOR_TESTS = 6
N_RESAMPLES = 9999  # scipy's default; the CI's Monte Carlo error is then well under its width
BOOTSTRAP_SEED = 0  # fixed: the same values give the same CI on every run


@dataclass(frozen=True)
class Summary:
    """One candidate's values over the seeds."""

    mean: float
    std: float | None  # None with a single seed
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Comparison:
    """A candidate against the best: differences candidate − best, seed by seed."""

    diff_mean: float
    diff_ci_low: float
    diff_ci_high: float
    wins: int  # seeds where the candidate is strictly better (lower)
    losses: int  # seeds where it is strictly worse
    identical: bool  # equal to the best on every seed
    p_value: float | None  # Wilcoxon signed-rank, two-sided; None below MIN_SEEDS_FOR_TESTS
    p_holm: float | None = None


def mean_ci(
    values: ArrayLike, *, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """A 95% studentized bootstrap (bootstrap-t) CI of the mean; [v, v] when every value
    is v.

    scipy.stats.bootstrap draws the resamples and evaluates t* = (mean* − mean) / se* on
    them; the interval is mean − t*₀.₉₇₅·se … mean − t*₀.₀₂₅·se. Its percentile and BCa
    intervals are narrower than their level at the seed counts confirmations use (they
    cover about 89% at 10 seeds of normal data); bootstrap-t covers about 95% there.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values")
    mean = float(data.mean())
    if data.size == 1 or np.all(data == data[0]):  # no spread: nothing to resample
        return mean, mean
    se = float(data.std(ddof=1) / np.sqrt(data.size))

    def studentized(x: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(all="ignore"):  # a resample of one repeated value: t* is not finite
            spread = x.std(axis=axis, ddof=1) / np.sqrt(data.size)
            return np.asarray((x.mean(axis=axis) - mean) / spread)

    # scipy summarizes the resampled t* too (their spread, their percentile interval),
    # non-finite ones included, which only their filtering below keeps out: its warnings
    # about them say nothing of the interval computed here.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            (data,),
            studentized,
            n_resamples=n_resamples,
            method="percentile",  # only its resampled t* are used
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
    t = res.bootstrap_distribution
    t = t[np.isfinite(t)]
    t_low, t_high = np.quantile(t, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return mean - float(t_high) * se, mean - float(t_low) * se


def summarize(values: ArrayLike, **bootstrap: int) -> Summary:
    """Mean, standard deviation (ddof=1) and the bootstrap CI of the mean."""
    data = np.asarray(values, dtype=np.float64)
    low, high = mean_ci(data, **bootstrap)
    std = float(data.std(ddof=1)) if data.size > 1 else None
    return Summary(float(data.mean()), std, low, high)


def compare(candidate: ArrayLike, best: ArrayLike, **bootstrap: int) -> Comparison:
    """`candidate` against `best`, paired seed by seed (the same order)."""
    a = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(best, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.size} and {b.size}")
    diff = a - b
    wins, losses = int((diff < 0).sum()), int((diff > 0).sum())
    if not diff.any():
        p = 1.0 if diff.size >= MIN_SEEDS_FOR_TESTS else None
        return Comparison(0.0, 0.0, 0.0, 0, 0, True, p)
    low, high = mean_ci(diff, **bootstrap)
    p_value = None
    if diff.size >= MIN_SEEDS_FOR_TESTS:
        p_value = float(stats.wilcoxon(a, b).pvalue)
    return Comparison(float(diff.mean()), low, high, wins, losses, False, p_value)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the p-values given (None stays None).

    The k-th smallest of m p-values is multiplied by m − k + 1, kept monotone and capped
    at 1 (scipy.stats offers only the Benjamini–Hochberg/Yekutieli adjustments).
    """
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    m = len(present)
    for k, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[i] = running
    return adjusted


def friedman(values: Sequence[Sequence[float]]) -> float | None:
    """Friedman's p-value over ≥ 3 candidates' paired values (None: fewer candidates or
    seeds than tests need); 1.0 when every candidate is identical on every seed."""
    if len(values) < 3 or len(values[0]) < MIN_SEEDS_FOR_TESTS:
        return None
    data = np.asarray(values, dtype=np.float64)
    if np.all(data == data[0]):
        return 1.0
    p = float(stats.friedmanchisquare(*data).pvalue)
    return p if np.isfinite(p) else 1.0
