"""The tie rule and per-class average precision: what model selection (:mod:`.task`) and the
report's numbers (:mod:`.metrics`) both rank scores by.

Apart from :mod:`.metrics` so that :mod:`.task` can score held-out videos by the report's own rule
without importing the module that imports it (no cycle task <-> metrics). The rules themselves
are documented in :mod:`.metrics`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["average_precision", "per_class_ap", "predicted_classes", "ranked_classes"]


def predicted_classes(scores: np.ndarray) -> np.ndarray:
    """The predicted class along the last axis of ``scores``: the highest score, the highest index
    among tied ones (the first of :func:`ranked_classes`; ``np.argmax`` would take the lowest)."""
    scores = np.asarray(scores)
    return scores.shape[-1] - 1 - np.argmax(scores[..., ::-1], axis=-1)


def ranked_classes(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest-scoring classes of each row, best first; equal scores rank the higher class
    index first, for every k (scikit-learn's ``top_k_accuracy_score``: a stable sort, reversed)."""
    scores = np.asarray(scores)
    k = min(k, scores.shape[1])
    if k == 1:
        return predicted_classes(scores)[:, None]
    return np.argsort(scores, axis=1, kind="stable")[:, ::-1][:, :k]


def average_precision(targets: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Average precision of one class for each row of ``weights`` ``[B, n]`` (videos counted that
    many times: a bootstrap resample), or once ``[1]`` without; 0 where no positive counts.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct scores from the highest down (tied
    scores form one threshold), scikit-learn's definition (no interpolation).
    """
    targets, scores = np.asarray(targets, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    w = np.ones((1, len(scores))) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    s, y, w = scores[order], targets[order], w[:, order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]     # the last video of each threshold
    tp = np.cumsum(w * y, axis=1)[:, last]
    seen = np.cumsum(w, axis=1)[:, last]
    positives = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / seen, 0.0)
        recall = np.where(positives > 0, tp / positives, 0.0)
    gain = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
    return (gain * precision).sum(axis=1)


def per_class_ap(targets: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``[B, C]`` average precision of every class (see :func:`average_precision`)."""
    targets, scores = np.asarray(targets), np.asarray(scores)
    return np.stack([average_precision(targets[:, c], scores[:, c], weights) for c in range(scores.shape[1])],
                    axis=1)
