"""Is one probe row better than another on this test set, or is the gap within noise?

Two rows scored on the same test videos are compared *paired*: only the videos on which they
disagree (one right, the other wrong) carry information about their difference (McNemar's
conditioning). Of those ``m`` videos, ``k`` favour row ``a``; the exact (Clopper-Pearson) 95%
interval of ``k / m`` maps to an interval of the top-1 difference, ``m / n * (2 [lo, hi] - 1)``.
A difference is stated only when that interval excludes 0 (then McNemar's exact test rejects
"no difference" at about the 5% level). With a few dozen test videos a gap of 10 points is often
noise; the demo (SCALE_ft vs Transformer, SCALE §4.1) says so instead of ranking them.

Rows trained with several seeds (``--seeds N``: hits ``[seeds, n]``) are compared on each video's
hit rate over the seeds: the 95% percentile interval of the mean paired difference over
bootstrap resamples of the test videos (the same resamples as the rows' own intervals).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .metrics import bootstrap_metric, bootstrap_weights, percentile_interval, wilson_interval

__all__ = ["Difference", "paired_difference", "bootstrap_difference", "clopper_pearson", "wilson_interval"]

#: how a statement writes each headline metric, and whether higher is better
METRICS = {"top1": ("{:.1f}%", True), "mAP": ("mAP {:.1f}", True), "mse": ("MSE {:.4g}", False),
           "R@1": ("R@1 {:.1f}%", True)}


@dataclass(frozen=True)
class Difference:
    """Top-1 (or ``metric``) of ``a`` minus that of ``b``, with its interval, on ``n`` shared videos."""

    a: str
    b: str
    top1_a: float
    top1_b: float
    diff: float
    low: float
    high: float
    n: int
    level: float = 0.95
    method: str = "exact paired"
    metric: str = "top1"            # top1 | mAP | mse (lower is better) | R@1 (a retrieval row's hit at 1)

    @property
    def resolved(self) -> bool:
        """Whether the interval excludes 0, i.e. the difference is larger than its uncertainty."""
        return self.low > 0 or self.high < 0

    @property
    def better(self) -> str | None:
        """The better row's name when the difference is resolved, else None."""
        if not self.resolved:
            return None
        return self.a if (self.diff > 0) == METRICS[self.metric][1] else self.b

    def to_json(self) -> dict:
        """The comparison as the report's JSON records it."""
        return {"a": self.a, "b": self.b, "diff": self.diff, "low": self.low, "high": self.high, "n": self.n,
                "level": self.level, "method": self.method, "metric": self.metric, "better": self.better,
                "statement": self.statement()}

    def statement(self) -> str:
        """One sentence: the two accuracies, the difference and its interval, and the verdict."""
        verdict = f"{self.better} is better" if self.resolved else "within noise (the interval includes 0)"
        shown = METRICS[self.metric][0]
        unit, num = (" points", "{:+.1f}") if self.metric != "mse" else ("", "{:+.4g}")
        return (f"{self.a} {shown.format(self.top1_a)} vs {self.b} {shown.format(self.top1_b)} on the same "
                f"{self.n} test videos: {num.format(self.diff)}{unit}, {self.level:.0%} {self.method} interval "
                f"[{num.format(self.low)}, {num.format(self.high)}]: {verdict}")


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, a: str = "a", b: str = "b",
                      level: float = 0.95) -> Difference:
    """Top-1 of ``a`` minus top-1 of ``b`` (points) on the same videos, with the exact interval of
    the module docstring; two rows that never disagree differ by exactly 0."""
    ca, cb = np.atleast_2d(correct_a).astype(bool), np.atleast_2d(correct_b).astype(bool)
    if ca.shape[1:] != cb.shape[1:] or ca.ndim != 2 or ca.size == 0 or cb.size == 0:
        raise ValueError("paired_difference needs two equal-length, non-empty hit vectors of the same videos")
    if len(ca) > 1 or len(cb) > 1:
        return _seeded_difference(ca.mean(axis=0), cb.mean(axis=0), a, b, level)
    ca, cb = ca[0], cb[0]
    n = ca.size
    k, m = int((ca & ~cb).sum()), int((ca ^ cb).sum())
    lo, hi = clopper_pearson(k, m, level) if m else (0.5, 0.5)
    scale = m / n * 100.0
    return Difference(a, b, ca.mean() * 100.0, cb.mean() * 100.0, (2 * k - m) / n * 100.0,
                      scale * (2 * lo - 1), scale * (2 * hi - 1), n, level)


def bootstrap_difference(kind: str, scores_a: list[np.ndarray], scores_b: list[np.ndarray], labels: np.ndarray,
                         a: str = "a", b: str = "b", level: float = 0.95) -> Difference:
    """The headline metric of ``a`` minus that of ``b`` (each a list of per-seed test scores of the
    same videos), with the percentile interval of that difference over paired bootstrap
    resamples of the test videos: multi-label (mAP) and regression (MSE) rows."""
    weights = bootstrap_weights(len(labels))
    boot_a, boot_b = (bootstrap_metric(kind, s, labels, weights) for s in (scores_a, scores_b))
    one = np.ones((1, len(labels)))
    value_a, value_b = (float(bootstrap_metric(kind, s, labels, one)[0]) for s in (scores_a, scores_b))
    low, high = percentile_interval(boot_a - boot_b, level)
    metric = {"single": "top1", "multi": "mAP", "regression": "mse"}[kind]
    return Difference(a, b, value_a, value_b, value_a - value_b, low, high, len(labels), level, "bootstrap paired",
                      metric)


def _seeded_difference(rate_a: np.ndarray, rate_b: np.ndarray, a: str, b: str, level: float) -> Difference:
    """Paired bootstrap over videos of the difference of the seeds' mean hit rates (points)."""
    n = rate_a.size
    diff = rate_a - rate_b
    low, high = percentile_interval(bootstrap_weights(n) @ diff / n * 100.0, level)
    return Difference(a, b, rate_a.mean() * 100.0, rate_b.mean() * 100.0, diff.mean() * 100.0, low, high, n, level,
                      "bootstrap paired")


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
