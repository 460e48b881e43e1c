"""The statistics of the report: seed intervals, method differences, paired image-level tests.

Why these four. A reproducibility verdict compares numbers that scatter: across seeds (a few
runs per cell, so Student-t rather than normal intervals), and across test images (one run per
method still gives thousands of paired observations, the same images classified by both).
- `mean_ci`: the mean over seeds with its Student-t interval;
- `welch`: the difference of two methods' seed means with Welch's interval and two-sided p-value
  (unequal variances: two methods have no reason to scatter alike);
- `paired_bootstrap`: the accuracy difference of two runs on the same test images, with a
  percentile interval from resampling images (the same resampled images for both runs, so the
  pairing, and the strong correlation it brings, is kept);
- `mcnemar`: the exact two-sided McNemar test on the same pairs (a binomial test on the images
  that exactly one run classifies correctly).
`seeds_needed` answers the planning question of the report: how many seeds would resolve a given
difference to a fixed number (the paper's) at the observed seed scatter.

Degenerate inputs give NaN where a quantity is undefined (an interval from one seed) and the
limit where it is not (zero variance: a zero-width interval; no discordant pair: p = 1).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _st

NAN = float("nan")


def _values(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).ravel()


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval over the values (seeds) at `level`.

    n = 1: (value, nan, nan), one seed says nothing about the scatter; n = 0: all nan.
    """
    x = _values(values)
    n = len(x)
    if n == 0:
        return NAN, NAN, NAN
    mean = float(x.mean())
    if n == 1:
        return mean, NAN, NAN
    half = float(_st.t.ppf((1 + level) / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def clip_interval(low: float, high: float, lower: float = 0.0, upper: float = 100.0) -> tuple[float, float]:
    """An interval cut to the range its quantity can take (an accuracy: 0-100; a difference of
    accuracies: -100-100). A Student-t interval over two scattered seeds can reach [-108.8, 208.8];
    the clipped interval keeps its nominal coverage (the true value lies in the range anyway) and
    stops promising impossible values. nan stays nan."""
    return (low if low != low else min(max(low, lower), upper),
            high if high != high else min(max(high, lower), upper))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family of tests (nan entries: not tests, left nan
    and not counted in the family size m). Sorted ascending, p_(i) becomes
    max_{j<=i} min(1, (m - j + 1) p_(j)); rejecting where the adjusted p < alpha controls the
    family-wise error rate at alpha under any dependence between the tests."""
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(len(p), NAN)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    running = 0.0
    for rank, index in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out


def welch(a, b, level: float = 0.95) -> tuple[float, float, float, float]:
    """(diff, low, high, p): mean(a) - mean(b), Welch's interval at `level`, two-sided p-value.

    Needs two values on each side (else interval and p are nan). Both variances zero: the
    interval is the difference itself and p is 1 when it is 0, else 0 (a difference with no
    scatter at all; Welch's statistic is infinite).
    """
    a, b = _values(a), _values(b)
    if len(a) == 0 or len(b) == 0:
        return NAN, NAN, NAN, NAN
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, NAN, NAN, NAN
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se2 = va + vb
    if se2 == 0:
        return diff, diff, diff, 1.0 if diff == 0 else 0.0
    df = se2**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    se = math.sqrt(se2)
    half = float(_st.t.ppf((1 + level) / 2, df)) * se
    p = float(2 * _st.t.sf(abs(diff) / se, df))
    return diff, diff - half, diff + half, min(p, 1.0)


def _paired_correctness(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    if len(a) != len(b):
        raise ValueError(f"paired correctness needs the same images: {len(a)} vs {len(b)} values")
    return a, b


def paired_bootstrap(correct_a, correct_b, n_resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(diff, low, high) in accuracy points (0-100): accuracy(a) - accuracy(b) over the same
    images, with the percentile interval of `n_resamples` resamples of the images (each resample
    draws n images with replacement and scores both runs on those same images).

    Deterministic for a given `seed`. No images: all nan.
    """
    a, b = _paired_correctness(correct_a, correct_b)
    n = len(a)
    if n == 0:
        return NAN, NAN, NAN
    d = a.astype(np.int8) - b.astype(np.int8)  # -1, 0, 1 per image
    diff = 100.0 * float(d.mean())
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 4_000_000 // n)  # bounded memory: a 50,000-image test set resamples 80 at a time
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        means[start:start + rows] = d[rng.integers(0, n, size=(rows, n))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.percentile(100.0 * means, [100 * alpha, 100 * (1 - alpha)])
    return diff, float(low), float(high)


def seed_matched(pairs, n_resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float, float]:
    """(diff, low, high, p) of two methods run with the same seeds, image by image.

    `pairs`: one (correct_a, correct_b) per shared seed, the two runs of that seed on the same test
    images. diff = mean over the seed pairs of accuracy(a) - accuracy(b) (points); the interval is a
    paired bootstrap stratified by seed (each resample draws every seed pair's images with
    replacement, within that pair, and averages the pairs' differences); p is the exact McNemar
    test on the discordant images pooled over the seed pairs (b = images only a gets right, c =
    only b, summed over seeds; the matched-pairs Mantel-Haenszel statistic of the strata reduces
    to these sums). It speaks about these seeds and these images; Welch over the seeds is the
    test of seed-to-seed scatter.
    """
    pairs = [_paired_correctness(a, b) for a, b in pairs]
    pairs = [(a, b) for a, b in pairs if len(a)]
    if not pairs:
        return NAN, NAN, NAN, NAN
    diffs = [a.astype(np.int8) - b.astype(np.int8) for a, b in pairs]
    diff = 100.0 * float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    means = np.zeros(n_resamples)
    for d in diffs:
        n = len(d)
        chunk = max(1, 4_000_000 // n)
        for start in range(0, n_resamples, chunk):
            rows = min(chunk, n_resamples - start)
            means[start:start + rows] += d[rng.integers(0, n, size=(rows, n))].mean(axis=1)
    means *= 100.0 / len(diffs)
    alpha = (1 - level) / 2
    low, high = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return diff, float(low), float(high), mcnemar(np.concatenate([a for a, _ in pairs]),
                                                  np.concatenate([b for _, b in pairs]))


def mcnemar(correct_a, correct_b) -> float:
    """Exact two-sided McNemar p-value: among the images exactly one run gets right (b where
    only a is right, c where only b is), is the split b : c a fair coin? p = min(1, 2 P(X <=
    min(b, c))), X ~ Binomial(b + c, 1/2). No discordant pair: p = 1 (no evidence either way)."""
    a, b = _paired_correctness(correct_a, correct_b)
    only_a = int(np.count_nonzero(a & ~b))
    only_b = int(np.count_nonzero(~a & b))
    n = only_a + only_b
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * _st.binom.cdf(min(only_a, only_b), n, 0.5)))


def seeds_needed(std: float, delta: float = 1.0, alpha: float = 0.05, power: float = 0.8,
                 max_seeds: int = 10_000) -> float:
    """The smallest number of seeds n whose mean resolves a difference of `delta` points from a
    fixed number (the paper's) at seed standard deviation `std`: a two-sided one-sample t-test at
    `alpha` reaching `power` (exact, from the noncentral t distribution).

    nan when `std` is unknown (fewer than two seeds), 2 when it is 0 (the least that gives a
    std at all), inf beyond `max_seeds`.
    """
    if std is None or not np.isfinite(std) or std < 0 or delta <= 0:
        return NAN
    if std == 0:
        return 2.0
    effect = delta / std
    # The t-test needs at least the normal approximation's n (it has less power at any n): start there.
    z_n = ((_st.norm.ppf(1 - alpha / 2) + _st.norm.ppf(power)) / effect) ** 2
    for n in range(max(2, math.floor(z_n)), max_seeds + 1):
        df = n - 1
        t_crit = _st.t.ppf(1 - alpha / 2, df)
        nc = effect * math.sqrt(n)
        achieved = _st.nct.sf(t_crit, df, nc) + _st.nct.cdf(-t_crit, df, nc)
        if achieved >= power:
            return float(n)
    return math.inf
