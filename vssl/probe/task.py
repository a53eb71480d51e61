"""What a probe predicts, read from the labels it is given: one class, several classes, or a number.

The labels' array says it, so every probe, batcher and metric agrees without a flag threaded
through them: int ``[n]`` class indices (single-label), ``[n, C]`` multi-hot (multi-label,
Charades-style: a manifest label ``a;b;c``) or float ``[n]`` values (a regression target,
``--target NAME``). Each kind fixes the head's loss and output (softmax + cross-entropy;
one-vs-rest sigmoid + binary cross-entropy; identity + MSE) and what model selection
maximises on the held-out training videos (top-1; mAP; -MSE).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .ranking import per_class_ap, predicted_classes


@dataclass(frozen=True)
class Task:
    kind: str

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Summed over the ``G`` heads of ``logits`` ``[B, G, C]``, averaged over the ``B`` samples
        (the heads are independent: one's gradient never reaches another)."""
        b, g, c = logits.shape
        if self.kind == "single":
            return nn.functional.cross_entropy(logits.reshape(-1, c), y.repeat_interleave(g), reduction="sum") / b
        target = y.float().reshape(b, 1, -1).expand(b, g, c)
        if self.kind == "multi":
            return nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum") / b
        return nn.functional.mse_loss(logits, target, reduction="sum") / b

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Scores averaged over a video's clips: class probabilities, per-class probabilities, values."""
        if self.kind == "single":
            return logits.softmax(-1)
        return logits.sigmoid() if self.kind == "multi" else logits

    def selection(self, scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per head of ``scores`` ``[n, G, C]``: (what selection maximises, the tie-breaker it
        minimises): top-1 (the report's tie rule, :func:`~vssl.probe.metrics.predicted_classes`)
        then cross-entropy; mAP then binary cross-entropy; -MSE then MSE."""
        if self.kind == "single":
            top1 = (predicted_classes(scores) == y[:, None]).mean(axis=0) * 100.0
            p_true = np.take_along_axis(scores, y[:, None, None], axis=-1)[..., 0]
            return top1, -np.log(np.maximum(p_true, 1e-12)).mean(axis=0)
        if self.kind == "multi":
            p = np.clip(np.asarray(scores, np.float64), 1e-12, 1 - 1e-12)
            bce = -(y[:, None] * np.log(p) + (1 - y[:, None]) * np.log1p(-p)).mean(axis=(0, 2))
            aps = np.array([per_class_ap(y, scores[:, g])[0].mean() * 100.0 for g in range(scores.shape[1])])
            return aps, bce
        err = ((scores[..., 0] - y[:, None]) ** 2).mean(axis=0)
        return -err, err

    @property
    def selection_metric(self) -> str:
        """The name of what :meth:`selection` maximises (the ``val_metric`` of a row's params)."""
        return {"single": "top1", "multi": "mAP", "regression": "-mse"}[self.kind]

    def stratify(self, labels: np.ndarray) -> np.ndarray:
        """Labels a held-out or low-shot split is balanced on (class; none for other targets)."""
        return labels if self.kind == "single" else np.zeros(len(labels), dtype=np.int64)


def task_of(labels: np.ndarray) -> Task:
    """The task ``labels`` describe: ``[n, C]`` multi-hot, float values, or int class indices."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return Task("multi")
    return Task("regression" if np.issubdtype(labels.dtype, np.floating) else "single")


def torch_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` as the loss reads them: int64 class indices, float32 multi-hot or values."""
    labels = np.asarray(labels)
    return labels.astype(np.int64) if task_of(labels).kind == "single" else labels.astype(np.float32)
