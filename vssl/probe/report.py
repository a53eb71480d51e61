"""Probe results: one row per (probe, features), a rich table, the JSON report and a confusion PNG."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vssl.errors import VsslError

from .metrics import row_metrics

PROBES = ("knn", "linear", "mlp", "transformer", "scale_linear", "scale_ft")
FEATURES = ("backbone", "scale")


@dataclass
class ProbeResult:
    """Accuracy (percent) of one probe on the test split, with what it was trained on and how."""

    probe: str
    features: str
    top1: float
    top5: float
    n_train: int
    n_test: int
    params: dict[str, Any]
    per_class: dict[str, float | None]
    confusion: np.ndarray = field(repr=False, default=None)   # [true, predicted]; not in the JSON
    transductive: bool = False      # read a SCALE run pretrained on videos of the test split
    correct: np.ndarray = field(repr=False, default=None)     # [n_test] top-1 hit per test video; not in the JSON

    def to_json(self) -> dict[str, Any]:
        return {"probe": self.probe, "features": self.features, "top1": self.top1, "top5": self.top5,
                "n_train": self.n_train, "n_test": self.n_test, "params": _plain(self.params),
                "per_class": self.per_class, "transductive": self.transductive}


def make_result(probe: str, features: str, scores: np.ndarray, labels: np.ndarray, classes: list[str],
                n_train: int, params: dict[str, Any], transductive: bool = False) -> ProbeResult:
    """Score a probe from its ``[n_test, C]`` class scores (ranked with ties to the lower class)."""
    return ProbeResult(probe, features, n_train=int(n_train), params=params, transductive=transductive,
                       **row_metrics(scores, labels, classes))


@dataclass
class Report:
    store: str
    view: str
    train_split: str
    test_split: str
    low_shot: float | None
    results: list[ProbeResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "view": self.view, "train_split": self.train_split,
                "test_split": self.test_split, "low_shot": self.low_shot,
                "results": [r.to_json() for r in self.results]}

    def best(self) -> ProbeResult:
        return max(self.results, key=lambda r: (r.top1, r.top5))

    def write_json(self, path: str | Path) -> None:
        check_writable(path, "--report")
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def _plain(obj: Any) -> Any:
    """Parameters as JSON values (tuples -> lists, numpy scalars -> Python, NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def check_writable(path: str | Path, flag: str) -> None:
    """Refuse an output path whose directory is missing (checked before probing, and on writing)."""
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise VsslError(f"{flag} {path}: directory {parent} does not exist; create it or choose another path")


def render_table(report: Report):
    """A rich table: probe, features, top-1, top-5, #train, #test."""
    from rich.table import Table

    table = Table("probe", "features", "top-1", "top-5", "#train", "#test",
                  title=f"{report.view}: train '{report.train_split}' → test '{report.test_split}'"
                        + (f" (low-shot {report.low_shot:g})" if report.low_shot else ""))
    for r in report.results:
        table.add_row(r.probe, r.features, f"{r.top1:.2f}", f"{r.top5:.2f}", str(r.n_train), str(r.n_test))
    return table


def write_confusion_png(result: ProbeResult, classes: list[str], path: str | Path) -> None:
    """Draw ``result``'s row-normalized confusion matrix (true rows, predicted columns)."""
    check_writable(path, "--confusion")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = result.confusion.astype(np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    c = len(classes)
    size = min(4 + 0.18 * c, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{result.probe} ({result.features}): top-1 {result.top1:.1f}%")
    if c <= 60:
        ax.set_xticks(range(c), classes, rotation=90, fontsize=6)
        ax.set_yticks(range(c), classes, fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
