"""The numbers of a report row, for every probe and every kind of target.

:func:`row_metrics` is the one place a probe's test scores become the numbers of its report
row, so every probe (and every feature source) is scored the same way. The kind of target
(:mod:`.task`) decides which numbers:

- single-label classes: top-1, top-5 (only where 5 < C: with C <= 5 classes it is always
  100%), balanced accuracy (the mean per-class recall, scikit-learn's ``balanced_accuracy_score``),
  per-class precision / recall / support and the ``[true, predicted]`` confusion matrix;
- multi-label classes (Charades-style): mAP, the macro mean of each class's average precision
  ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, as scikit-learn's
  ``average_precision_score(average="macro")`` computes it (a class without a positive test
  video counts as AP 0 there, and here, with a warning); no top-1;
- regression targets: MSE and R².

A row may hold several seeds (``--seeds N``): each headline metric is the mean over seeds,
with its standard deviation and each seed's value; per-class numbers pool the seeds'
predictions. A confusion matrix counts each test video once: a row whose seeds each computed
their own scores lists one matrix per seed ``[seeds, C, C]``; a row with one seed, or a
training-free one whose single result stands for every seed, has one ``[C, C]``. Every row
carries a 95% interval of its headline metric: a bootstrap over test videos (the seeds' mean
recomputed on each resample), or for k-NN's top-1 the Wilson score interval.

Ties follow one rule everywhere (the prediction, top-1, top-k, the confusion matrix, the
``correct`` hits the comparisons read): among equal scores the *higher* class index ranks
first. That is scikit-learn's ``top_k_accuracy_score`` (a stable ascending sort, reversed), for
every k, so top-1 and top-5 of the same scores agree with it together; the predicted class is
that ranking's first, which is not ``np.argmax`` (the lower index) on a tied row. A metric never
depends on the order a backend happened to return equal scores in, and k-NN votes, where most
classes tie at exactly 0, score the same as scikit-learn scores them.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from .ranking import average_precision, per_class_ap, predicted_classes, ranked_classes  # noqa: F401 (its names, as before)
from .task import task_of

log = logging.getLogger("vssl.probe")

#: bootstrap resamples of the test videos behind each interval (percentile interval)
BOOTSTRAP_SAMPLES = 1000
LEVEL = 0.95


# ---------------------------------------------------------------------- single-label


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


def recall_precision(cm: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """Per-class recall and precision (percent) of a ``[true, predicted]`` matrix; ``None`` where
    undefined (no true video of the class; no video predicted as it)."""
    cm = np.asarray(cm)
    diag, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    recall = [float(diag[c] / support[c] * 100.0) if support[c] else None for c in range(len(cm))]
    precision = [float(diag[c] / predicted[c] * 100.0) if predicted[c] else None for c in range(len(cm))]
    return recall, precision


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall (percent) over the classes present in the test split (scikit-learn's)."""
    recall = [r for r in recall_precision(cm)[0] if r is not None]
    return float(np.mean(recall)) if recall else float("nan")


# ---------------------------------------------------------------------- regression


def mse(targets: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean((np.asarray(predicted, np.float64) - np.asarray(targets, np.float64)) ** 2))


def r2(targets: np.ndarray, predicted: np.ndarray) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (scikit-learn's ``r2_score``; NaN for a
    constant target)."""
    t = np.asarray(targets, np.float64)
    ss_tot = float(((t - t.mean()) ** 2).sum())
    return 1.0 - mse(t, predicted) * len(t) / ss_tot if ss_tot > 0 else float("nan")


# ---------------------------------------------------------------------- intervals


def bootstrap_weights(n: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> np.ndarray:
    """``[samples, n]`` how often each test video is drawn in each resample (with replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(samples, n))
    return np.stack([np.bincount(d, minlength=n) for d in draws]).astype(np.float64)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap ``values`` (NaNs, e.g. no positive, ignored)."""
    alpha = (1 - level) / 2 * 100
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(values, [alpha, 100 - alpha])
    return float(lo), float(hi)


def wilson_interval(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (percent) of one row's top-1 with ``hits`` of ``n`` correct."""
    if n == 0:
        return (0.0, 100.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half) * 100.0, min(1.0, centre + half) * 100.0)


def bootstrap_metric(kind: str, per_seed: Sequence[np.ndarray], labels: np.ndarray,
                     weights: np.ndarray) -> np.ndarray:
    """``[B]`` the seeds' mean headline metric (top-1 %, mAP %, MSE) on each resample of the test
    videos given as ``weights`` ``[B, n]`` (how often each video was drawn)."""
    labels = np.asarray(labels)
    n = len(labels)
    if kind == "single":
        hits = np.mean([predicted_classes(s) == labels for s in per_seed], axis=0)
        return weights @ hits / n * 100.0
    if kind == "multi":
        y = labels.astype(np.float64)
        return np.mean([per_class_ap(y, s, weights).mean(axis=1) for s in per_seed], axis=0) * 100.0
    sq = np.mean([(np.asarray(s, np.float64).reshape(n, -1)[:, 0] - labels) ** 2 for s in per_seed], axis=0)
    return weights @ sq / n


def _interval(metric: str, value: float, low: float, high: float, method: str) -> dict[str, Any]:
    return {"metric": metric, "value": value, "low": low, "high": high, "level": LEVEL, "method": method}


# ---------------------------------------------------------------------- the row


def row_metrics(scores: np.ndarray | Sequence[np.ndarray], labels: np.ndarray, classes: list[str],
                interval: str = "bootstrap", seeded: bool = True) -> dict[str, Any]:
    """The report-row fields of the test scores ``[n_test, C]`` (or one such array per seed).

    ``labels``' kind picks the metrics (:func:`~vssl.probe.task.task_of`). ``interval``:
    ``bootstrap`` over test videos, or ``wilson`` (k-NN's top-1; other targets bootstrap).
    ``seeded`` False: the arrays are one result repeated per seed (a training-free row), so its
    confusion matrix is that result's alone (each test video counted once).
    Besides the JSON fields the row keeps ``correct`` ``[seeds, n_test]`` (each seed's top-1 hit
    per video, for paired comparisons of rows, :mod:`vssl.probe.compare`) and the raw
    ``scores`` of each seed (``--predictions``).
    """
    per_seed = [np.asarray(s) for s in ([scores] if isinstance(scores, np.ndarray) else scores)]
    task = task_of(labels)
    if task.kind == "single":
        out = _single_label(per_seed, np.asarray(labels), classes, interval, seeded)
    else:
        out = {"multi": _multi_label, "regression": _regression}[task.kind](per_seed, np.asarray(labels), classes,
                                                                          interval)
    values = out.pop("seed_values")
    out["seeds"] = {name: [_num(v) for v in vs] for name, vs in values.items()}
    out["std"] = {name: float(np.std(vs)) if len(vs) > 1 else 0.0 for name, vs in values.items()}
    out.update(n_test=int(len(labels)), task=task.kind, scores=per_seed)
    return out


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _single_label(per_seed, labels, classes, interval, seeded) -> dict[str, Any]:
    c = len(classes)
    preds = [predicted_classes(s) for s in per_seed]
    cms = [confusion_matrix(p, labels, c) for p in preds]
    values = {"top1": [topk_accuracy(s, labels, 1) for s in per_seed],
              "balanced_accuracy": [balanced_accuracy(cm) for cm in cms]}
    if c > 5:                                           # top-5 can miss only with more than 5 classes
        values["top5"] = [topk_accuracy(s, labels, 5) for s in per_seed]
    correct = np.stack([p == labels for p in preds])    # [seeds, n]
    if not seeded:
        cms = cms[:1]                                   # one result standing for every seed
    recall, precision = recall_precision(np.sum(cms, axis=0))       # the seeds' predictions pooled
    support = np.bincount(labels, minlength=c)
    top1 = float(np.mean(values["top1"]))
    n = len(labels)
    if interval == "wilson":
        low, high = wilson_interval(int(round(top1 / 100 * n)), n)
    else:
        low, high = percentile_interval(bootstrap_metric("single", per_seed, labels, bootstrap_weights(n)))
    return {"top1": top1, "top5": float(np.mean(values["top5"])) if "top5" in values else None,
            "balanced_accuracy": float(np.mean(values["balanced_accuracy"])),
            "per_class": dict(zip(classes, recall)),
            "per_class_stats": {name: {"precision": p, "recall": r, "support": int(s)}
                                for name, p, r, s in zip(classes, precision, recall, support)},
            "confusion": cms[0] if len(cms) == 1 else np.stack(cms), "correct": correct,
            "ci": _interval("top1", top1, low, high, interval if interval == "wilson" else "bootstrap"),
            "seed_values": values}


def _multi_label(per_seed, labels, classes, interval) -> dict[str, Any]:
    labels = labels.astype(np.float64)
    empty = [name for name, column in zip(classes, labels.T) if not column.any()]
    if empty:
        log.warning("%d of %d classes have no positive test video (%s); their AP counts as 0 in the mAP, "
                    "as scikit-learn's", len(empty), len(classes), ", ".join(empty[:5]))
    aps = [per_class_ap(labels, s)[0] * 100.0 for s in per_seed]            # [C] per seed
    m = float(np.mean([ap.mean() for ap in aps]))
    low, high = percentile_interval(bootstrap_metric("multi", per_seed, labels, bootstrap_weights(len(labels))))
    return {"top1": None, "top5": None, "mAP": m,
            "per_class_ap": dict(zip(classes, (float(v) for v in np.mean(aps, axis=0)))),
            "per_class": {}, "ci": _interval("mAP", m, low, high, "bootstrap"),
            "seed_values": {"mAP": [float(ap.mean()) for ap in aps]}}


def _regression(per_seed, labels, classes, interval) -> dict[str, Any]:
    preds = [np.asarray(s, np.float64).reshape(len(labels), -1)[:, 0] for s in per_seed]
    values = {"mse": [mse(labels, p) for p in preds], "r2": [r2(labels, p) for p in preds]}
    m = float(np.mean(values["mse"]))
    low, high = percentile_interval(bootstrap_metric("regression", per_seed, labels, bootstrap_weights(len(labels))))
    return {"top1": None, "top5": None, "mse": m, "r2": float(np.mean(values["r2"])), "per_class": {},
            "ci": _interval("mse", m, low, high, "bootstrap"), "seed_values": values}
