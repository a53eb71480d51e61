"""Probe results: one row per (probe, features), a rich table, the JSON report, the predictions file
and a confusion PNG."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vssl.errors import VsslError

from .metrics import predicted_classes, row_metrics

#: the version of the JSON report's layout: ``vssl report`` reads this version only (bumped when a
#: field it reads changes meaning or place; fields may be added without a bump)
REPORT_FORMAT = 1

@dataclass
class ProbeResult:
    """What one probe scored on the test split (percent; MSE in the target's unit squared), with
    what it was trained on and how; :func:`~vssl.probe.metrics.row_metrics` fills the numbers."""

    probe: str
    features: str
    top1: float | None
    top5: float | None
    n_train: int
    n_test: int
    params: dict[str, Any]
    per_class: dict[str, float | None]
    # [true, predicted] counting each test video once; [seeds, C, C] (one per seed) for a row whose
    # seeds each computed their own scores
    confusion: np.ndarray = field(repr=False, default=None)
    transductive: bool = False      # read a SCALE run pretrained on videos of the test split
    correct: np.ndarray = field(repr=False, default=None)     # [seeds, n_test] (or [n_test]) top-1 hits
    variant: str | None = None      # a row of a grid reported row by row (k-NN's --knn-k: "k20")
    task: str = "single"            # single | multi | regression (vssl.probe.task)
    balanced_accuracy: float | None = None
    per_class_stats: dict[str, dict] | None = None            # precision / recall / support per class
    mAP: float | None = None                                  # multi-label: macro AP (percent)
    per_class_ap: dict[str, float] | None = None
    mse: float | None = None                                  # regression
    r2: float | None = None
    ci: dict[str, Any] | None = None                          # 95% interval of the headline metric
    seeds: dict[str, list] | None = None                      # each seed's value of each metric
    std: dict[str, float] | None = None                       # their standard deviation over seeds
    scores: list[np.ndarray] = field(repr=False, default=None)  # each seed's [n_test, C] scores

    @property
    def name(self) -> str:
        """The row's probe name in the table and the predictions file (``knn_k20`` in a k grid)."""
        return self.probe if self.variant is None else f"{self.probe}_{self.variant}"

    @property
    def metric(self) -> str:
        """The headline metric: top-1, mAP (multi-label) or MSE (regression)."""
        return {"single": "top1", "multi": "mAP", "regression": "mse"}[self.task]

    def headline(self) -> str:
        """One line: the headline metric, its interval and, over several seeds, mean ± std."""
        value, spread = getattr(self, self.metric), (self.std or {}).get(self.metric, 0.0)
        text = f"{self.metric} {value:.4g}" + (f" ± {spread:.2g}" if len(self.seed_list()) > 1 else "")
        if self.ci:
            text += f" [{self.ci['low']:.4g}, {self.ci['high']:.4g}]"
        return text

    def seed_list(self) -> list[int]:
        return list(self.params.get("seeds", [self.params.get("seed", 0)]))

    def to_json(self) -> dict[str, Any]:
        out = {"probe": self.probe, "features": self.features, "variant": self.variant, "task": self.task,
               "top1": self.top1, "top5": self.top5, "balanced_accuracy": self.balanced_accuracy,
               "n_train": self.n_train, "n_test": self.n_test, "params": _plain(self.params),
               "per_class": self.per_class, "per_class_stats": self.per_class_stats,
               "confusion": None if self.confusion is None else np.asarray(self.confusion).tolist(),
               "mAP": self.mAP, "per_class_ap": self.per_class_ap, "mse": self.mse, "r2": self.r2,
               "ci": self.ci, "seeds": self.seeds, "std": self.std, "transductive": self.transductive}
        return _plain(out)


def make_result(probe: str, features: str, scores: np.ndarray | list[np.ndarray], labels: np.ndarray,
                classes: list[str], n_train: int, params: dict[str, Any], transductive: bool = False,
                interval: str = "bootstrap", variant: str | None = None, seeded: bool = True) -> ProbeResult:
    """Score a probe from its ``[n_test, C]`` test scores (one array per seed; ``seeded`` False: one
    result repeated per seed, see :func:`~vssl.probe.metrics.row_metrics`)."""
    return ProbeResult(probe, features, n_train=int(n_train), params=params, transductive=transductive,
                       variant=variant, **row_metrics(scores, labels, classes, interval, seeded))


@dataclass
class Report:
    store: str
    view: str
    train_split: str
    test_split: str
    low_shot: float | None
    results: list[ProbeResult] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    target: str | None = None
    test_paths: np.ndarray | None = field(repr=False, default=None)    # the test videos, row order
    test_labels: np.ndarray | None = field(repr=False, default=None)
    test_indices: np.ndarray | None = field(repr=False, default=None)  # store rows of the test videos
    # retrieval rows (vssl.probe.retrieval.RetrievalResult): rankings, not class scores, kept apart
    retrieval: list = field(default_factory=list)
    classes: list[str] = field(default_factory=list)     # the class (or target) names rows are scored on
    # what was run, for a reader without the store: vssl's version, the backbone, the view's
    # recipe, the SCALE run, the probes' settings (:func:`vssl.probe.run.run_context`)
    context: dict[str, Any] = field(default_factory=dict)
    gallery: str | None = None          # the retrieval figure (``--gallery``), where one was drawn

    def to_json(self) -> dict[str, Any]:
        from .retrieval import comparisons

        return {"format": REPORT_FORMAT, "store": self.store, "view": self.view, "train_split": self.train_split,
                "test_split": self.test_split, "low_shot": self.low_shot, "seeds": self.seeds,
                "target": self.target, "classes": list(self.classes), "context": _plain(self.context),
                "results": [r.to_json() for r in self.results],
                "best": self.results.index(self.best()) if self.results else None,
                "comparisons": [d.to_json() for d in self.comparisons()],
                "retrieval": [_plain(r.to_json()) for r in self.retrieval],
                "retrieval_comparisons": [d.to_json() for d in comparisons(self.retrieval)],
                "gallery": self.gallery}

    def best(self) -> ProbeResult | None:
        """The row of the best headline value (highest top-1 / mAP, lowest MSE); None without class rows."""
        if not self.results:
            return None
        sign = -1.0 if self.results[0].metric == "mse" else 1.0
        return max(self.results, key=lambda r: (sign * getattr(r, r.metric), r.top5 or 0.0))

    def comparisons(self):
        """The best row against every other row on the same test videos: "better" only where the
        paired interval of the difference excludes 0 (:mod:`.compare`: exact for one seed's top-1,
        a paired bootstrap for seeds, mAP and MSE)."""
        from .compare import bootstrap_difference, paired_difference

        if len(self.results) < 2:
            return []
        best = self.best()
        others = [r for r in self.results if r is not best]
        if best.task == "single":
            return [paired_difference(best.correct, r.correct, _label(best), _label(r)) for r in others]
        return [bootstrap_difference(best.task, best.scores, r.scores, self.test_labels, _label(best), _label(r))
                for r in others]

    def write_json(self, path: str | Path) -> None:
        check_writable(path, "--report")
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def write_predictions(self, path: str | Path) -> None:
        """``--predictions P.npz``: the test videos' ``paths`` and ``labels`` and, per row, its test
        scores ``"<probe>/<features>/scores"`` ``[n_test, C]`` (the first seed's; with several seeds
        also ``"<probe>/<features>/seed<S>/scores"`` each), from which every number is recomputed;
        a single-label row also has its predicted classes ``".../predicted"`` ``[n_test]`` (the
        report's tie rule, :func:`~vssl.probe.metrics.predicted_classes`). A retrieval row has its
        nearest training videos ``"<probe>/<features>/neighbours"`` (store rows, best first) and their
        ``".../similarities"``, with the test videos' store rows ``"rows"``."""
        check_writable(path, "--predictions")
        arrays = {"paths": np.asarray(self.test_paths, dtype=str), "labels": np.asarray(self.test_labels)}
        for r in self.results:
            arrays.update(_row_arrays(f"{r.name}/{r.features}", r.scores[0], r.task))
            if len(r.scores) > 1:
                for seed, s in zip(r.seed_list(), r.scores):
                    arrays.update(_row_arrays(f"{r.name}/{r.features}/seed{seed}", s, r.task))
        if self.retrieval:
            arrays["rows"] = np.asarray(self.test_indices, dtype=np.int64)
        for r in self.retrieval:
            arrays[f"{r.name}/{r.features}/neighbours"] = r.neighbours
            arrays[f"{r.name}/{r.features}/similarities"] = r.similarities
        with open(path, "wb") as f:                      # np.savez would append .npz to another suffix
            np.savez(f, **arrays)


def _row_arrays(prefix: str, scores: np.ndarray, task: str) -> dict[str, np.ndarray]:
    """One seed's arrays of a row in ``--predictions``: its scores, and its predictions (classes)."""
    arrays = {f"{prefix}/scores": np.asarray(scores)}
    if task == "single":
        arrays[f"{prefix}/predicted"] = predicted_classes(scores)
    return arrays


def _label(r: ProbeResult) -> str:
    return f"{r.name} ({r.features})"


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
    """A rich table: probe, features, the headline metrics (mean ± std over several seeds) with the
    95% interval of the first, #train, #test."""
    from rich.table import Table

    metric = report.results[0].metric if report.results else "top1"
    columns = {"top1": ("top-1", "top-5", "bal. acc."), "mAP": ("mAP",), "mse": ("MSE", "R²")}[metric]
    fields = {"top1": ("top1", "top5", "balanced_accuracy"), "mAP": ("mAP",), "mse": ("mse", "r2")}[metric]
    table = Table("probe", "features", *columns, "95% CI", "#train", "#test",
                  title=f"{report.view}: train '{report.train_split}' → test '{report.test_split}'"
                        + (f" (low-shot {report.low_shot:g})" if report.low_shot else "")
                        + (f", target {report.target}" if report.target else "")
                        + (f", {len(report.seeds)} seeds: mean ± std" if len(report.seeds) > 1 else ""))
    for r in report.results:
        cells = [_cell(getattr(r, f), (r.std or {}).get(f), len(report.seeds) > 1) for f in fields]
        ci = f"[{r.ci['low']:.2f}, {r.ci['high']:.2f}]" if r.ci else "—"
        table.add_row(_shown_name(r), r.features, *cells, ci, str(r.n_train), str(r.n_test))
    return table


def render_retrieval_table(report: Report):
    """A rich table of the report's retrieval rows (:func:`vssl.probe.retrieval.render_table`)."""
    from .retrieval import render_table as retrieval_table

    return retrieval_table(report.retrieval, f"{report.view}: retrieval, test '{report.test_split}' queries train "
                                             f"'{report.train_split}'"
                                             + (f" (low-shot {report.low_shot:g})" if report.low_shot else ""))


def _shown_name(r: ProbeResult) -> str:
    """The table's probe cell: a k-NN row says its rule (``knn (released)``), one for every k-NN row."""
    rule = r.params.get("rule") if r.probe == "knn" else None
    return r.name if rule is None else f"{r.name} ({rule})"


def _cell(value: float | None, std: float | None, seeds: bool) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.2f} ± {std:.2f}" if seeds and std is not None else f"{value:.2f}"


def write_confusion_png(result: ProbeResult | None, classes: list[str], path: str | Path) -> None:
    """Draw ``result``'s row-normalized confusion matrix (true rows, predicted columns)."""
    check_writable(path, "--confusion")
    if result is None:
        raise VsslError("--confusion draws a class probe's confusion matrix; --retrieval alone has none: add a "
                        "class probe (e.g. --knn) or drop --confusion")
    if result.confusion is None:
        raise VsslError(f"--confusion draws single-label classes; this report's rows are {result.task} "
                        "(their per-class numbers are in --report)")
    from vssl.report_page.figures import confusion_figure, save_png

    save_png(confusion_figure(result.confusion, classes, f"{result.name} ({result.features}): top-1 {result.top1:.1f}%"),
             path)
