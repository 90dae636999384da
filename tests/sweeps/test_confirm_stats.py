"""The statistics of `sweeps confirm` against scipy.stats called directly, and the
coverage of the difference's bootstrap CI under the null."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sweeps.confirm_stats import compare, friedman, holm, mean_ci, summarize


def test_summary_and_paired_comparison_match_numpy_and_scipy() -> None:
    rng = np.random.default_rng(3)
    best = rng.normal(1.0, 0.1, 10)
    other = best + rng.normal(0.05, 0.02, 10)
    s = summarize(other)
    assert s.mean == pytest.approx(other.mean(), rel=1e-15)
    assert s.std == pytest.approx(other.std(ddof=1), rel=1e-15)
    assert s.ci_low < s.mean < s.ci_high
    c = compare(other, best)
    diff = other - best
    assert c.diff_mean == pytest.approx(diff.mean(), rel=1e-15)
    assert c.p_value == stats.wilcoxon(other, best).pvalue
    assert c.wins == int((diff < 0).sum()) and c.losses == int((diff > 0).sum())
    assert (c.diff_ci_low, c.diff_ci_high) == mean_ci(diff)
    assert c.diff_ci_low < c.diff_mean < c.diff_ci_high


def test_identical_values_give_zero_difference_and_no_nan() -> None:
    values = [0.5, 0.25, 0.125, 1.0, 2.0, 4.0, 8.0]
    c = compare(values, list(values))
    assert c.identical and c.diff_mean == c.diff_ci_low == c.diff_ci_high == 0.0
    assert c.p_value == 1.0 and c.wins == c.losses == 0
    assert friedman([values, values, values]) == 1.0
    assert summarize([3.0] * 4) == summarize([3.0] * 4)  # a point CI, no warning, no NaN
    assert summarize([3.0] * 4).ci_low == summarize([3.0] * 4).ci_high == 3.0


@pytest.mark.filterwarnings("error")  # resamples without a finite t* are left out quietly
def test_fewer_than_six_seeds_give_no_p_value() -> None:
    c = compare([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.5, 1.0, 1.5, 2.0])
    assert c.p_value is None and c.diff_ci_low > 0
    assert friedman([[1.0] * 5, [2.0] * 5, [3.0] * 5]) is None


def test_holm_adjustment_known_values() -> None:
    assert holm([0.01, None, 0.04, 0.03]) == [0.03, None, 0.06, 0.06]
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_friedman_is_scipys() -> None:
    rng = np.random.default_rng(5)
    groups = [rng.normal(m, 1, 8) for m in (0.0, 0.3, 1.0)]
    assert friedman(groups) == stats.friedmanchisquare(*groups).pvalue


@pytest.mark.slow
def test_difference_ci_covers_zero_in_95_percent_of_null_pairs() -> None:
    rng = np.random.default_rng(12345)
    covered = 0
    for _ in range(1000):
        c = compare(rng.normal(size=10), rng.normal(size=10), n_resamples=999)
        covered += c.diff_ci_low <= 0 <= c.diff_ci_high
    assert 930 <= covered <= 970, covered
