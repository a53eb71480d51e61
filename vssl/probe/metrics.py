"""Accuracy metrics shared by every probe: top-k, per-class accuracy, confusion matrix.

:func:`row_metrics` is the one place a probe's class scores become the numbers of its report
row, so every probe (and every feature source) is scored the same way.

Ties are broken by class index (a stable sort of the negated scores), so a metric never
depends on the order a backend happened to return equal scores in.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def ranked_classes(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest-scoring classes of each row, best first; ties go to the lower index."""
    scores = np.asarray(scores)
    k = min(k, scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percentage of rows whose true label is among the ``k`` best scores."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    top = ranked_classes(scores, k)
    return float((top == labels[:, None]).any(axis=1).mean() * 100.0)


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[true, predicted]`` counts (int64)."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(pred)), 1)
    return cm


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Top-1 accuracy in percent for each class; ``None`` for a class absent from ``labels``."""
    cm = confusion_matrix(pred, labels, num_classes)
    totals = cm.sum(axis=1)
    return [float(cm[c, c] / totals[c] * 100.0) if totals[c] else None for c in range(num_classes)]


def row_metrics(scores: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """The report-row fields of ``[n_test, C]`` class scores: top-1, top-5 (percent), the number
    of test videos, per-class top-1 by class name, the ``[true, predicted]`` confusion matrix and
    each test video's top-1 hit (for paired comparisons of rows, :mod:`vssl.probe.compare`)."""
    labels = np.asarray(labels)
    pred = ranked_classes(scores, 1)[:, 0]
    c = len(classes)
    return {"top1": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, 5),
            "n_test": int(len(labels)), "per_class": dict(zip(classes, per_class_accuracy(pred, labels, c))),
            "confusion": confusion_matrix(pred, labels, c), "correct": pred == labels}
