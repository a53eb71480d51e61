"""Bugs found in review, each with the test that would have caught it."""

from __future__ import annotations

import gc

import numpy as np
from sklearn.metrics import top_k_accuracy_score

from vssl.probe.data import SplitData
from vssl.probe.metrics import topk_accuracy
from vssl.probe.sources import ScaleSource
from vssl.probe.train import select


def test_top5_with_tied_knn_votes_agrees_with_scikit_learn():
    """k-NN votes leave most classes at exactly 0: the tie rule decides top-5."""
    scores = np.zeros((4, 8))
    scores[:, 0] = 1.0  # every neighbour votes class 0
    labels = np.array([1, 2, 3, 4])
    want = 100 * top_k_accuracy_score(labels, scores, k=5, labels=np.arange(8))
    assert topk_accuracy(scores, labels, 5) == want == 25.0
    rng = np.random.default_rng(0)
    for _ in range(20):  # random integer scores: many ties
        s = rng.integers(0, 3, size=(30, 7)).astype(float)
        y = rng.integers(0, 7, size=30)
        assert topk_accuracy(s, y, 5) == 100 * top_k_accuracy_score(y, s, k=5, labels=np.arange(7))


class _EchoScale:
    """A SCALE stand-in whose clip inputs are the split's video indices: a mix-up shows directly."""

    def clip_inputs(self, split, refined):
        return split.indices.copy()


def _split(indices):
    indices = np.asarray(indices)
    return SplitData("train", indices, np.zeros(len(indices), np.int64), np.zeros((len(indices), 1, 1)), None)


def test_scale_clip_inputs_follow_the_split_not_a_reused_object_id():
    """Each seed's low-shot subset is a new split of the same size; a freed one's id is reused."""
    source = ScaleSource(_EchoScale())
    for seed in range(6):
        subset = np.sort(np.random.default_rng(seed).choice(100, size=10, replace=False))
        got, _ = source.clips(_split(subset))
        np.testing.assert_array_equal(got, subset)
        gc.collect()


def test_selection_never_prefers_a_diverged_head():
    score = np.array([[np.nan, 50.0], [60.0, 70.0]])
    loss = np.array([[np.nan, 1.0], [1.0, 1.0]])
    assert select(score, loss) == (1, 1)
    assert select(np.array([[50.0, 50.0]]), np.array([[2.0, np.nan]])) == (0, 0)
