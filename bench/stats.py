"""Statistics for comparing runs, used by boards and `bench compare` alike: the paired two-level
bootstrap over seeds and test examples (when per-example predictions exist), the paired t-test over
seeds (when they do not, and for metrics with no per-example form), Holm's correction, and the
half-width of a mean's Student t interval (the boards' ± values), clipped to a metric's range.

    >>> t = paired_t([1.0, 2.0, 3.0, 4.0])
    >>> round(t.mean, 3), round(t.low, 3), round(t.high, 3), round(t.p, 3)
    (2.5, 0.446, 4.554, 0.03)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedT:
    """Mean of paired differences, its two-sided `level` interval (Student t, n - 1 degrees of
    freedom) and the p-value of "the mean difference is 0". With one pair (or none) the interval
    and p-value are NaN. With n >= 2 identical differences the t statistic is undefined: every
    difference 0 gives p = 1, identical non-zero ones p = NaN (untestable: nothing is significant
    without spread; the per-example bootstrap can still test them)."""

    mean: float
    low: float
    high: float
    p: float
    n: int
    sd: float  # standard deviation of the differences (ddof 1)
    level: float = 0.95


def paired_t(diffs: Sequence[float], level: float = 0.95) -> PairedT:
    """The paired t-test on `diffs` (one difference per pair, e.g. per seed: a - b)."""
    if not 0 < level < 1:
        raise ValueError(f"level = {level!r}: must be in (0, 1)")
    xs = [float(d) for d in diffs]
    n = len(xs)
    nan = math.nan
    if n == 0:
        return PairedT(nan, nan, nan, nan, 0, nan, level)
    mean = sum(xs) / n
    if n == 1:
        return PairedT(mean, nan, nan, nan, 1, nan, level)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    se = sd / math.sqrt(n)
    if se <= 1e-12 * max(1.0, abs(mean)):  # identical differences, up to floating-point rounding
        return PairedT(mean, mean, mean, 1.0 if abs(mean) <= 1e-12 else nan, n, sd, level)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * se
    p = 2 * stats.t.sf(abs(mean / se), n - 1)
    return PairedT(mean, float(mean - half), float(mean + half), float(p), n, sd, level)


def t_halfwidth(std: Any, n: Any, confidence: float = 0.95) -> Any:
    """Half-width of the Student t confidence interval of a mean: t(1/2 + confidence/2, n-1) * std /
    sqrt(n); NaN for fewer than two values."""
    n = np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = stats.t.ppf(0.5 + confidence / 2, np.where(n >= 2, n - 1, np.nan))
        return q * np.asarray(std, float) / np.sqrt(n)


def clip_interval(mean: Any, half: Any, low: float = 0.0, high: float = 1.0) -> tuple[Any, Any]:
    """(lower, upper) bounds of mean ± half, kept within [low, high] (accuracy cannot leave [0, 1])."""
    mean, half = np.asarray(mean, float), np.asarray(half, float)
    return np.clip(mean - half, low, high), np.clip(mean + half, low, high)


@dataclass(frozen=True)
class PairedBootstrap:
    """Mean difference of paired per-example outcomes (A - B), its percentile `level` interval and
    a two-sided p-value, from `replicates` two-level bootstrap resamples."""

    mean: float
    low: float
    high: float
    p: float
    seeds: int
    examples: int
    replicates: int
    level: float = 0.95


def paired_bootstrap(
    diff: np.ndarray, replicates: int = 4000, level: float = 0.95, seed: int = 0
) -> PairedBootstrap:
    """Two-level paired bootstrap of `diff` (seeds x examples: A's minus B's per-example outcome,
    e.g. correct 1 / wrong 0, of runs that share a seed).

    Each replicate resamples the seeds (rows) with replacement, then the test examples (columns)
    with replacement, the same examples for every seed: the test set is one sample shared by all
    seeds, so a difference carried by a few images stays a few images however many seeds repeat
    it. The statistic is the mean over the resampled cells; p = 2 min(P*(T <= 0), P*(T >= 0)) with
    the +1 correction, so it is never 0 and is 1 for identical outcomes. Deterministic for `seed`.

    >>> d = np.zeros((3, 100)); d[:, 7] = 1     # A is right on one image B gets wrong, every seed
    >>> b = paired_bootstrap(d)
    >>> round(b.mean, 4), b.p > 0.05
    (0.01, True)
    """
    d = np.asarray(diff, float)
    if d.ndim != 2 or 0 in d.shape:
        raise ValueError(f"diff: expected a non-empty seeds x examples array, got shape {d.shape}")
    s, n = d.shape
    rng = np.random.default_rng(seed)
    stats_ = np.empty(replicates)
    for start in range(0, replicates, 500):  # chunks keep replicates x examples small in memory
        k = min(500, replicates - start)
        w_seed = rng.multinomial(s, np.full(s, 1 / s), size=k)  # how often each seed is drawn
        w_ex = rng.multinomial(n, np.full(n, 1 / n), size=k)  # how often each example is drawn
        stats_[start : start + k] = np.einsum("ks,sn,kn->k", w_seed, d, w_ex) / (s * n)
    lo, hi = np.quantile(stats_, [0.5 - level / 2, 0.5 + level / 2])
    p = min(
        1.0,
        2 * min((1 + np.sum(stats_ <= 0)) / (replicates + 1), (1 + np.sum(stats_ >= 0)) / (replicates + 1)),
    )
    return PairedBootstrap(float(d.mean()), float(lo), float(hi), float(p), s, n, replicates, level)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control over the tests given); a NaN
    p-value (no test possible) counts as 1 in the ordering and stays NaN.

    >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, float)
    m = len(p)
    filled = np.where(np.isnan(p), 1.0, p)
    order = np.argsort(filled, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * filled[order]))
    out = np.empty(m)
    out[order] = adjusted
    return np.where(np.isnan(p), np.nan, out)
