"""Is one probe row better than another on this test set, or is the gap within noise?

Two rows scored on the same test videos are compared *paired*: only the videos on which they
disagree (one right, the other wrong) carry information about their difference (McNemar's
conditioning). Of those ``m`` videos, ``k`` favour row ``a``; the exact (Clopper-Pearson) 95%
interval of ``k / m`` maps to an interval of the top-1 difference, ``m / n * (2 [lo, hi] - 1)``.
A difference is stated only when that interval excludes 0 (then McNemar's exact test rejects
"no difference" at about the 5% level). With a few dozen test videos a gap of 10 points is often
noise; the demo (SCALE_ft vs Transformer, SCALE §4.1) says so instead of ranking them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Difference:
    """Top-1 of ``a`` minus top-1 of ``b`` in points, with its interval, on ``n`` shared videos."""

    a: str
    b: str
    top1_a: float
    top1_b: float
    diff: float
    low: float
    high: float
    n: int
    level: float = 0.95

    @property
    def resolved(self) -> bool:
        """Whether the interval excludes 0, i.e. the difference is larger than its uncertainty."""
        return self.low > 0 or self.high < 0

    def statement(self) -> str:
        """One sentence: the two accuracies, the difference and its interval, and the verdict."""
        verdict = (f"{self.a if self.diff > 0 else self.b} is better" if self.resolved
                   else "within noise (the interval includes 0)")
        return (f"{self.a} {self.top1_a:.1f}% vs {self.b} {self.top1_b:.1f}% on the same {self.n} test videos: "
                f"{self.diff:+.1f} points, {self.level:.0%} exact paired interval "
                f"[{self.low:+.1f}, {self.high:+.1f}]: {verdict}")


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, a: str = "a", b: str = "b",
                      level: float = 0.95) -> Difference:
    """Top-1 of ``a`` minus top-1 of ``b`` (points) on the same videos, with the exact interval of
    the module docstring; two rows that never disagree differ by exactly 0."""
    ca, cb = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if ca.shape != cb.shape or ca.ndim != 1 or ca.size == 0:
        raise ValueError("paired_difference needs two equal-length, non-empty hit vectors of the same videos")
    n = ca.size
    k, m = int((ca & ~cb).sum()), int((ca ^ cb).sum())
    lo, hi = clopper_pearson(k, m, level) if m else (0.5, 0.5)
    scale = m / n * 100.0
    return Difference(a, b, ca.mean() * 100.0, cb.mean() * 100.0, (2 * k - m) / n * 100.0,
                      scale * (2 * lo - 1), scale * (2 * hi - 1), n, level)


def clopper_pearson(k: int, m: int, level: float = 0.95) -> tuple[float, float]:
    """Exact interval of a binomial proportion with ``k`` of ``m`` (bisection on the binomial tail)."""
    alpha = (1.0 - level) / 2
    lo = 0.0 if k == 0 else _solve(lambda p: _tail_at_least(k, m, p) - alpha)
    hi = 1.0 if k == m else _solve(lambda p: alpha - (1.0 - _tail_at_least(k + 1, m, p)))
    return lo, hi


def _tail_at_least(k: int, m: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(m, p), summed in log space (exact enough for any test set)."""
    if p <= 0.0:
        return float(k <= 0)
    if p >= 1.0:
        return 1.0
    j = np.arange(k, m + 1)
    logpmf = (math.lgamma(m + 1) - np.array([math.lgamma(x + 1) + math.lgamma(m - x + 1) for x in j])
              + j * math.log(p) + (m - j) * math.log1p(-p))
    return float(np.exp(logpmf).sum())


def _solve(f, lo: float = 0.0, hi: float = 1.0, steps: int = 60) -> float:
    """The root of an increasing ``f`` on [lo, hi] by bisection."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def wilson_interval(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (percent) of one row's top-1 with ``hits`` of ``n`` correct."""
    if n == 0:
        return (0.0, 100.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half) * 100.0, min(1.0, centre + half) * 100.0)
