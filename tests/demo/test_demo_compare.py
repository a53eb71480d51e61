"""The demo states a difference between two rows only when it is larger than its uncertainty on
that test set (a 95% exact interval on the videos where the two rows disagree)."""

from __future__ import annotations

import numpy as np
import pytest

from vssl.demo.run import compare_rows, findings
from vssl.probe.compare import clopper_pearson, paired_difference, wilson_interval
from vssl.probe.report import ProbeResult, Report


def _hits(n, k):
    h = np.zeros(n, dtype=bool)
    h[:k] = True
    return h


def test_small_gap_on_few_videos_is_within_noise():
    # 40 videos: 24/40 vs 20/40 (10 points), 5 videos favour a and 1 favours b (McNemar p = 0.22)
    both, a_only, b_only = np.arange(19), np.arange(19, 24), np.array([24])
    a, b = np.zeros(40, bool), np.zeros(40, bool)
    a[both], a[a_only], b[both], b[b_only] = True, True, True, True
    d = paired_difference(a, b, "SCALE_ft", "Transformer")
    assert d.diff == pytest.approx(10.0) and d.low <= 0 <= d.high and not d.resolved
    assert "within noise" in d.statement() and "SCALE_ft 60.0% vs Transformer 50.0%" in d.statement()


def test_large_gap_is_stated_with_its_interval():
    a, b = _hits(200, 160), _hits(200, 100)             # every hit of b is also a hit of a
    d = paired_difference(a, b, "SCALE_ft", "Transformer")
    assert d.resolved and d.low > 20 and d.statement().endswith("SCALE_ft is better")
    d = paired_difference(b, a, "Transformer", "SCALE_ft")
    assert d.resolved and d.high < -20 and d.statement().endswith("SCALE_ft is better")


def test_interval_matches_the_normal_approximation_on_a_large_set():
    rng = np.random.default_rng(0)
    a, b = rng.random(4000) < 0.7, rng.random(4000) < 0.65
    d = paired_difference(a, b)
    diffs = a.astype(float) - b
    se = diffs.std(ddof=0) / np.sqrt(len(diffs)) * 100
    assert d.low == pytest.approx(d.diff - 1.96 * se, abs=0.3) and d.high == pytest.approx(d.diff + 1.96 * se, abs=0.3)


def test_identical_rows_are_within_noise_and_intervals_by_hand():
    h = _hits(30, 12)
    d = paired_difference(h, h)
    assert (d.diff, d.low, d.high) == (0.0, 0.0, 0.0) and not d.resolved
    low, high = wilson_interval(8, 10)                   # textbook: 8/10 -> [0.490, 0.943]
    assert low == pytest.approx(49.0, abs=0.1) and high == pytest.approx(94.3, abs=0.1)
    # Clopper-Pearson by hand: k = m = 4 -> lower bound 0.025 ** (1/4); k = 0 of 10 -> upper 1 - 0.025 ** (1/10)
    assert clopper_pearson(4, 4)[0] == pytest.approx(0.025 ** 0.25, abs=1e-9)
    assert clopper_pearson(0, 10)[1] == pytest.approx(1 - 0.025 ** 0.1, abs=1e-9)
    # 4 discordant videos all favouring a: McNemar's exact p = 2 * 0.5**4 = 0.125 -> within noise
    a = _hits(40, 24)
    assert not paired_difference(a, _hits(40, 20)).resolved
    # 9 of 9 discordant: p = 2 * 0.5**9 = 0.004 -> stated
    assert paired_difference(_hits(40, 29), _hits(40, 20)).resolved


def _row(probe, features, hits):
    return ProbeResult(probe, features, hits.mean() * 100, 100.0, 10, len(hits), {}, {}, correct=hits)


def test_demo_findings_compare_scale_ft_with_transformer():
    report = Report("s", "v", "train", "test", None,
                    [_row("transformer", "backbone", _hits(40, 20)), _row("scale_ft", "scale", _hits(40, 24))])
    (line,) = findings(report)
    assert line.startswith("SCALE_ft 60.0% vs Transformer 50.0%") and "within noise" in line
    far = compare_rows(_row("scale_ft", "scale", _hits(300, 250)), _row("transformer", "backbone", _hits(300, 100)))
    assert far.endswith("SCALE_ft is better")
