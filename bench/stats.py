"""Small statistics for comparing runs: the paired t-test and its confidence interval, and the
half-width of a mean's Student t interval (the boards' ± values).

    >>> t = paired_t([1.0, 2.0, 3.0, 4.0])
    >>> round(t.mean, 4), round(t.low, 4), round(t.high, 4), round(t.p, 4)
    (2.5, 0.4458, 4.5542, 0.0305)
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
    and p-value are NaN; with n >= 2 identical differences the interval is that value and p is 0
    (or 1 if they are all 0)."""

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
    if se == 0:
        return PairedT(mean, mean, mean, 1.0 if mean == 0 else 0.0, n, sd, level)
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
