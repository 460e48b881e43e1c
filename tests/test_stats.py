"""benchmarks.reporting.stats against scipy.stats on random inputs, and the degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from benchmarks.reporting.stats import mcnemar, mean_ci, paired_bootstrap, seeds_needed, welch


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_mean_ci_matches_scipy_t_interval(seed, level):
    rng = np.random.default_rng(seed)
    values = rng.normal(70, 2, size=int(rng.integers(2, 8)))
    mean, low, high = mean_ci(values, level)
    expected = st.t.interval(level, len(values) - 1, loc=values.mean(), scale=st.sem(values))
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx(expected, rel=1e-12)


def test_mean_ci_one_seed_zero_variance_and_empty():
    mean, low, high = mean_ci([84.2])
    assert mean == 84.2 and math.isnan(low) and math.isnan(high)
    assert mean_ci([5.0, 5.0, 5.0]) == (5.0, 5.0, 5.0)
    assert all(math.isnan(v) for v in mean_ci([]))


@pytest.mark.parametrize("seed", range(6))
def test_welch_matches_scipy(seed):
    rng = np.random.default_rng(100 + seed)
    a = rng.normal(80, rng.uniform(0.2, 3), size=int(rng.integers(2, 7)))
    b = rng.normal(79, rng.uniform(0.2, 3), size=int(rng.integers(2, 7)))
    diff, low, high, p = welch(a, b)
    ref = st.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert p == pytest.approx(ref.pvalue, rel=1e-10)
    assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-10)


@pytest.mark.filterwarnings("ignore:Precision loss")  # scipy, on the zero-variance side
def test_welch_degenerate_cases():
    diff, low, high, p = welch([80.0], [78.0, 79.0])  # one seed: a difference, no interval
    assert diff == pytest.approx(1.5) and all(math.isnan(v) for v in (low, high, p))
    assert welch([80.0, 80.0], [78.0, 78.0]) == (2.0, 2.0, 2.0, 0.0)  # no scatter at all
    assert welch([80.0, 80.0], [80.0, 80.0]) == (0.0, 0.0, 0.0, 1.0)
    # one side without scatter is ordinary Welch (the other side's variance carries it)
    diff, low, high, p = welch([80.0, 80.0, 80.0], [78.0, 79.0, 80.0])
    assert p == pytest.approx(st.ttest_ind([80.0] * 3, [78.0, 79.0, 80.0], equal_var=False).pvalue)


@pytest.mark.parametrize("seed", range(3))
def test_paired_bootstrap_agrees_with_scipy_bootstrap(seed):
    rng = np.random.default_rng(seed)
    n = 800
    a = rng.random(n) < 0.7
    b = np.where(rng.random(n) < 0.8, a, rng.random(n) < 0.6)  # correlated, as two models on one test set
    diff, low, high = paired_bootstrap(a, b, n_resamples=4000, seed=seed)
    assert diff == pytest.approx(100 * (a.mean() - b.mean()))
    ref = st.bootstrap((a.astype(float), b.astype(float)), lambda x, y, axis: 100 * (x.mean(axis) - y.mean(axis)),
                       paired=True, vectorized=True, n_resamples=4000, method="percentile",
                       rng=np.random.default_rng(seed + 7)).confidence_interval
    width = ref.high - ref.low
    assert low < diff < high
    # two Monte Carlo estimates of the same percentiles: close, not equal
    assert low == pytest.approx(ref.low, abs=0.08 * width)
    assert high == pytest.approx(ref.high, abs=0.08 * width)
    # the paired interval is narrower than an unpaired one would be (the pairing is kept)
    se_unpaired = 100 * math.sqrt(a.var() / n + b.var() / n)
    assert high - low < 2 * 1.96 * se_unpaired


def test_paired_bootstrap_deterministic_and_degenerate():
    rng = np.random.default_rng(0)
    a, b = rng.random(300) < 0.5, rng.random(300) < 0.5
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)  # identical runs: no difference in any resample
    assert all(math.isnan(v) for v in paired_bootstrap([], []))
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap(a, b[:-1])


@pytest.mark.parametrize("seed", range(6))
def test_mcnemar_matches_scipy_binomtest(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    a = rng.random(n) < 0.6
    b = np.where(rng.random(n) < rng.uniform(0.5, 0.95), a, rng.random(n) < 0.5)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    expected = st.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert mcnemar(a, b) == pytest.approx(expected, rel=1e-12)
    assert mcnemar(b, a) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_hand_worked_and_no_discordant_pairs():
    a = np.array([True] * 5 + [True, False] * 3)
    b = np.array([False] * 5 + [True, False] * 3)
    assert mcnemar(a, b) == pytest.approx(2 / 32)  # 5 : 0 discordant -> 2 * (1/2)^5
    assert mcnemar(a, a) == 1.0
    assert mcnemar([True, False], [False, True]) == 1.0  # 1 : 1 -> capped at 1


def test_seeds_needed_matches_the_noncentral_t_power():
    # one-sample t-test, effect size 1 (delta = std): 10 seeds (as tabulated, e.g. G*Power)
    assert seeds_needed(1.0) == 10
    assert seeds_needed(2.0) == 34  # effect size 0.5
    for std in (0.3, 0.8, 1.7):
        n = int(seeds_needed(std))
        power = lambda k: (st.nct.sf(st.t.ppf(0.975, k - 1), k - 1, math.sqrt(k) / std)  # noqa: E731
                           + st.nct.cdf(-st.t.ppf(0.975, k - 1), k - 1, math.sqrt(k) / std))
        assert power(n) >= 0.8 and (n == 2 or power(n - 1) < 0.8)
    assert seeds_needed(0.0) == 2
    assert math.isnan(seeds_needed(float("nan")))
