"""Every number of a probe row against scikit-learn on the same scores (single-label, multi-label,
regression), the intervals against textbook values, and seeds' means against numpy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from vssl.probe.compare import paired_difference
from vssl.probe.knn import vote
from vssl.probe.metrics import average_precision, bootstrap_weights, row_metrics, topk_accuracy

CLASSES = [f"c{i}" for i in range(7)]


def _single(seed=0, n=300, c=7):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    scores = rng.random((n, c)) + 1.5 * np.eye(c)[y] * (rng.random(n) < 0.5)[:, None]
    return scores, y


def test_single_label_row_is_scikit_learns():
    scores, y = _single()
    row = row_metrics(scores, y, CLASSES)
    pred = scores.argmax(axis=1)
    assert row["top1"] == pytest.approx(100 * skm.accuracy_score(y, pred))
    assert row["top5"] == pytest.approx(100 * skm.top_k_accuracy_score(y, scores, k=5, labels=range(7)))
    assert row["top5"] < 100.0                                   # 7 classes: top-5 can and does miss
    assert row["balanced_accuracy"] == pytest.approx(100 * skm.balanced_accuracy_score(y, pred))
    np.testing.assert_array_equal(row["confusion"], skm.confusion_matrix(y, pred, labels=range(7)))
    p, r, _, s = skm.precision_recall_fscore_support(y, pred, labels=range(7), zero_division=0)
    for i, name in enumerate(CLASSES):
        stats = row["per_class_stats"][name]
        assert stats["precision"] == pytest.approx(100 * p[i]) and stats["recall"] == pytest.approx(100 * r[i])
        assert stats["support"] == s[i] and row["per_class"][name] == pytest.approx(100 * r[i])


def test_top5_is_not_reported_where_it_cannot_miss_and_absent_classes_are_skipped():
    y = np.array([0, 0, 1, 1, 2])
    scores = np.eye(5)[[0, 1, 1, 3, 2]].astype(float)           # class 4 never true, class 3 predicted once
    row = row_metrics(scores, y, ["a", "b", "c", "d", "e"])
    assert row["top5"] is None                                  # 5 classes: every label is in the top 5
    pred = scores.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = skm.balanced_accuracy_score(y, pred)
    assert row["balanced_accuracy"] == pytest.approx(100 * expected)
    assert row["per_class_stats"]["e"] == {"precision": None, "recall": None, "support": 0}
    assert row["per_class_stats"]["d"]["precision"] == 0.0


def _multi(seed=0, n=200, c=6, ties=False):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(np.uint8)
    scores = rng.random((n, c)) + 0.6 * y
    return (np.round(scores, 1) if ties else scores), y


@pytest.mark.parametrize("ties", [False, True])
def test_multi_label_map_is_scikit_learns_macro_average_precision(ties):
    scores, y = _multi(ties=ties)
    names = [f"k{i}" for i in range(6)]
    row = row_metrics(scores, y, names)
    assert row["top1"] is None and row["task"] == "multi"
    assert row["mAP"] == pytest.approx(100 * skm.average_precision_score(y, scores, average="macro"))
    per_class = skm.average_precision_score(y, scores, average=None)
    assert [row["per_class_ap"][n] for n in names] == pytest.approx(list(100 * per_class))
    assert row["ci"]["low"] < row["mAP"] < row["ci"]["high"] and row["ci"]["method"] == "bootstrap"


def test_a_class_without_positives_counts_as_scikit_learn_counts_it():
    scores, y = _multi(seed=1)
    y[:, 2] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = skm.average_precision_score(y, scores, average="macro")
    assert row_metrics(scores, y, list("abcdef"))["mAP"] == pytest.approx(100 * expected)


def test_weighted_average_precision_is_the_ap_of_the_resampled_videos():
    """The bootstrap's AP (videos weighted by how often a resample drew them) equals scikit-learn's
    AP of that resample written out video by video."""
    scores, y = _multi(seed=2, n=60, ties=True)
    w = bootstrap_weights(60, samples=5, seed=3)
    got = average_precision(y[:, 0], scores[:, 0], w)
    for b in range(5):
        idx = np.repeat(np.arange(60), w[b].astype(int))
        assert got[b] == pytest.approx(skm.average_precision_score(y[idx, 0], scores[idx, 0]))


def test_regression_row_is_scikit_learns():
    rng = np.random.default_rng(0)
    y = rng.normal(1990, 10, 80)
    pred = y + rng.normal(0, 4, 80)
    row = row_metrics(pred[:, None], y, ["year"])
    assert row["mse"] == pytest.approx(skm.mean_squared_error(y, pred))
    assert row["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert row["top1"] is None and row["ci"]["low"] < row["mse"] < row["ci"]["high"]


def test_bootstrap_interval_of_top1_has_the_binomial_width():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 7, 2000)
    scores = np.eye(7)[np.where(rng.random(2000) < 0.7, y, (y + 1) % 7)]
    row = row_metrics(scores, y, CLASSES)
    p = row["top1"] / 100
    half = 196 * np.sqrt(p * (1 - p) / 2000)
    assert row["ci"]["low"] == pytest.approx(row["top1"] - half, abs=0.4)
    assert row["ci"]["high"] == pytest.approx(row["top1"] + half, abs=0.4)
    wilson = row_metrics(scores, y, CLASSES, interval="wilson")["ci"]
    assert wilson["method"] == "wilson" and wilson["low"] == pytest.approx(row["top1"] - half, abs=0.2)


def test_seeds_report_mean_std_and_each_value():
    runs = [_single(seed=0)[0], _single(seed=1)[0], _single(seed=2)[0]]
    y = _single(seed=0)[1]
    row = row_metrics(runs, y, CLASSES)
    each = [100 * skm.accuracy_score(y, s.argmax(axis=1)) for s in runs]
    assert row["seeds"]["top1"] == pytest.approx(each)
    assert row["top1"] == pytest.approx(np.mean(each)) and row["std"]["top1"] == pytest.approx(np.std(each))
    assert row["correct"].shape == (3, len(y))
    each_cm = [skm.confusion_matrix(y, s.argmax(axis=1), labels=range(7)) for s in runs]
    np.testing.assert_array_equal(row["confusion"], np.stack(each_cm))       # one matrix per seed
    assert [m.sum() for m in row["confusion"]] == [len(y)] * 3                 # each video once per matrix


def test_one_result_repeated_per_seed_has_one_confusion_matrix():
    scores, y = _single()
    row = row_metrics([scores] * 3, y, CLASSES, seeded=False)
    np.testing.assert_array_equal(row["confusion"], skm.confusion_matrix(y, scores.argmax(axis=1), labels=range(7)))
    assert row["seeds"]["top1"] == [row["top1"]] * 3


def sklearn_predictions(scores: np.ndarray) -> np.ndarray:
    """The class scikit-learn's ``top_k_accuracy_score`` counts as each row's top-1, asked row by row."""
    c = scores.shape[1]
    return np.array([next(k for k in range(c) if skm.top_k_accuracy_score([k], row[None], k=1, labels=range(c)))
                     for row in scores])


def _tied_rows(c=7):
    """Every label against rows with ties: all equal, tied at the top, and tied across the 5th place."""
    patterns = np.array([
        [0.3] * c,                                   # all equal
        [0.5, 0.5, 0.1, 0.1, 0.2, 0.0, 0.0],         # a tie at the top, more below
        [0.1, 0.9, 0.1, 0.9, 0.1, 0.0, 0.2],         # two ties, one at the top
        [0.9, 0.8, 0.7, 0.6, 0.2, 0.2, 0.2],         # three tied for 5th (k = 5's boundary)
        [0.2, 0.2, 0.2, 0.9, 0.8, 0.7, 0.6],         # the same, lower indices tied
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],         # no tie
    ])
    scores = np.repeat(patterns, c, axis=0)
    return scores, np.tile(np.arange(c), len(patterns))


def test_the_issue_row_a_tied_row_scores_what_scikit_learn_scores():
    scores, y = np.full((1, 10), 0.1), np.array([0])
    row = row_metrics(scores, y, [f"c{i}" for i in range(10)])
    assert (row["top1"], row["top5"]) == (0.0, 0.0)                 # scikit-learn: 0 and 0 (not 100 and 0)
    assert row["top1"] == 100 * skm.top_k_accuracy_score(y, scores, k=1, labels=range(10))


def test_ties_follow_one_rule_scikit_learns_for_every_number():
    scores, y = _tied_rows()
    row = row_metrics(scores, y, CLASSES)
    pred = sklearn_predictions(scores)
    assert row["top1"] == pytest.approx(100 * skm.top_k_accuracy_score(y, scores, k=1, labels=range(7)))
    assert row["top5"] == pytest.approx(100 * skm.top_k_accuracy_score(y, scores, k=5, labels=range(7)))
    assert row["top1"] == pytest.approx(100 * skm.accuracy_score(y, pred))        # top-1 and its predictions agree
    np.testing.assert_array_equal(row["confusion"], skm.confusion_matrix(y, pred, labels=range(7)))
    np.testing.assert_array_equal(row["correct"][0], pred == y)
    assert row["balanced_accuracy"] == pytest.approx(100 * skm.balanced_accuracy_score(y, pred))
    p, r, _, _ = skm.precision_recall_fscore_support(y, pred, labels=range(7), zero_division=0)
    for i, name in enumerate(CLASSES):
        stats = row["per_class_stats"][name]
        assert (stats["precision"] or 0.0, stats["recall"]) == (pytest.approx(100 * p[i]), pytest.approx(100 * r[i]))


def test_seeded_rows_are_compared_by_a_paired_bootstrap():
    rng = np.random.default_rng(0)
    a = rng.random((3, 400)) < 0.8
    b = rng.random((3, 400)) < 0.5
    d = paired_difference(a, b, "A", "B")
    assert d.method == "bootstrap paired" and d.resolved and d.statement().endswith("A is better")
    assert d.diff == pytest.approx((a.mean() - b.mean()) * 100)
    close = paired_difference(a, rng.random((3, 400)) < 0.8, "A", "A'")      # the same accuracy
    assert not close.resolved and "within noise" in close.statement()


def test_knn_votes_one_vs_rest_and_averages_values():
    sims = np.array([[0.9, 0.5, 0.1]])
    idx = np.array([[2, 0, 1]])
    w = np.exp(sims[0] / 0.07)
    hot = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.uint8)        # neighbours 2, 0, 1 in that order
    got = vote(sims, idx, hot, 2, 0.07)
    expected = [(w[1] + w[2]) / w.sum(), (w[0] + w[2]) / w.sum()]
    assert got[0] == pytest.approx(expected)
    values = np.array([10.0, 20.0, 40.0])
    assert vote(sims, idx, values, 1, 0.07)[0, 0] == pytest.approx((w[0] * 40 + w[1] * 10 + w[2] * 20) / w.sum())


def test_map_and_mse_rows_are_compared_by_a_paired_bootstrap():
    from vssl.probe.compare import bootstrap_difference

    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, 300)
    good, bad = y + rng.normal(0, 0.3, 300), y + rng.normal(0, 1.0, 300)
    d = bootstrap_difference("regression", [good[:, None]], [bad[:, None]], y, "good", "bad")
    assert d.diff == pytest.approx(skm.mean_squared_error(y, good) - skm.mean_squared_error(y, bad))
    assert d.high < 0 and d.better == "good" and d.statement().endswith("good is better") and "MSE" in d.statement()
    twin = y + rng.normal(0, 0.3, 300)
    assert bootstrap_difference("regression", [good[:, None]], [twin[:, None]], y).better is None
    scores, hot = _multi(seed=4, n=300)
    noisy = scores + rng.normal(0, 1.0, scores.shape)
    d = bootstrap_difference("multi", [scores], [noisy], hot, "clean", "noisy")
    assert d.diff == pytest.approx(100 * (skm.average_precision_score(hot, scores)
                                          - skm.average_precision_score(hot, noisy)))
    assert d.better == "clean" and d.low > 0


def test_top5_with_tied_knn_votes_agrees_with_scikit_learn():
    """k-NN votes leave most classes at exactly 0: the tie rule decides top-5."""
    scores = np.zeros((4, 8))
    scores[:, 0] = 1.0  # every neighbour votes class 0
    labels = np.array([1, 2, 3, 4])
    want = 100 * skm.top_k_accuracy_score(labels, scores, k=5, labels=np.arange(8))
    assert topk_accuracy(scores, labels, 5) == want == 25.0
    rng = np.random.default_rng(0)
    for _ in range(20):  # random integer scores: many ties
        s = rng.integers(0, 3, size=(30, 7)).astype(float)
        y = rng.integers(0, 7, size=30)
        assert topk_accuracy(s, y, 5) == 100 * skm.top_k_accuracy_score(y, s, k=5, labels=np.arange(7))
