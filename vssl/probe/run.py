"""`vssl probe`: load the splits once, then one report row per (probe, feature source).

Each probe runs on the backbone's features and, with a SCALE run, on SCALE's (§4.1):
k-NN on the mean clip embedding vs on the centred mean of [C_i ⊕ SET]; linear/MLP per clip on
the backbone clip vs on [C_i ⊕ SET]; the transformer from random init vs the fine-tuned
predictor (one model and config, the run's architecture for both). A run pretrained on the
test split's videos is said in one stderr line and its rows are marked transductive.
The steps, in order: :func:`plan_rows` (what to compute, checked before anything is read),
:func:`load_data` (splits, low-shot subset, class names), :func:`open_sources`, then
:func:`run_row` for each row (probe -> scores -> :func:`~vssl.probe.metrics.row_metrics`).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vssl.errors import VsslError

from .data import load_split, with_train_view
from .knn import KnnConfig
from .linear import LinearConfig
from .lowshot import balanced_fraction
from .mlp import MlpConfig
from .registry import OPTIONS, PROBES, Probe, ProbeCall
from .report import ProbeResult, Report, make_result
from .sources import BackboneSource, ProbeData, ScaleSource
from .train import TrainConfig
from .transductive import transductive_note
from .transformer import FinetuneConfig, TransformerConfig, match_architecture

log = logging.getLogger("vssl.probe")


@dataclass
class ProbeRequest:
    """What to probe and how; a probe option whose config is ``None`` is skipped.

    Each option (``knn``, ``linear``, ...) enables the registered probes that name it
    (:data:`vssl.probe.registry.PROBES`), on every feature source they accept.
    """

    store: Path
    view: str
    train_split: str = "train"
    test_split: str = "test"
    knn: KnnConfig | None = None
    linear: LinearConfig | None = None
    mlp: MlpConfig | None = None
    transformer: TransformerConfig | None = None
    finetune: FinetuneConfig | None = None
    scale_run: Path | None = None
    train_view: str | None = None       # trained probes fit on this view's clips (default: ``view``)
    train_clips: int = 8                # clips of a train-view video drawn per step (released: 8)
    low_shot: float | None = None
    seed: int = 0
    quiet: bool = False

    def with_default_probes(self) -> "ProbeRequest":
        """No probe asked for: k-NN and linear (the issue's default)."""
        if any(getattr(self, option) is not None for option in OPTIONS):
            return self
        return replace(self, knn=KnnConfig(), linear=LinearConfig())

    def sources(self) -> tuple[str, ...]:
        """The feature sources this request can read: the backbone's, and SCALE's with a run."""
        return ("backbone",) if self.scale_run is None else ("backbone", "scale")


@dataclass(frozen=True)
class Row:
    """One report row to compute: a probe, the source it reads, its config."""

    probe: Probe
    source: str
    config: Any


def run_probes(req: ProbeRequest) -> Report:
    """Run every requested probe on ``req.view`` and return the report (nothing printed)."""
    req = req.with_default_probes()
    rows = plan_rows(req)
    store, data = load_data(req, rows)
    sources = open_sources(req, store, data)
    rows = same_set_architecture(rows, sources)
    report = Report(str(store.path), req.view, req.train_split, req.test_split, req.low_shot)
    common = {"low_shot": req.low_shot, "seed": req.seed}
    for row in rows:
        report.results.append(run_row(row, sources[row.source], data, common, req.quiet))
    return report


def plan_rows(req: ProbeRequest) -> list[Row]:
    """The rows, source by source in registry order; an enabled option none of whose probes
    can run on the available sources is an error (e.g. ``--finetune`` without ``--scale``)."""
    available = req.sources()
    for option in OPTIONS:
        probes = [p for p in PROBES if p.option == option]
        if getattr(req, option) is not None and not any(set(p.sources) & set(available) for p in probes):
            raise VsslError(f"--{option} ({', '.join(p.name for p in probes)}) runs on a pretrained SCALE "
                            "run's features; give it with --scale RUN_DIR")
    return [Row(p, source, getattr(req, p.option)) for source in available for p in PROBES
            if source in p.sources and getattr(req, p.option) is not None]


def load_data(req: ProbeRequest, rows: list[Row]):
    """Open the store and read both splits (only what the rows need), low-shot subset applied."""
    from vssl.features_store import FeatureStore

    store = FeatureStore.open(req.store)
    store.view(req.view)                                    # a clear error when the view is missing
    boxes = any("boxes" in r.probe.needs for r in rows)
    # Only the backbone's k-NN reduces clips to DINO's normalized mean while reading; SCALE's
    # k-NN averages the raw clips (its [C_i ⊕ SET]), so a SCALE row reads every clip.
    video_level = not any("clips" in r.probe.needs or r.source == "scale" for r in rows)
    train = load_split(store, req.view, req.train_split, "--train-split", boxes, video_level)
    test = load_split(store, req.view, req.test_split, "--test-split", boxes, video_level)
    if req.train_view is not None and any(isinstance(r.config, TrainConfig) for r in rows):
        train = with_train_view(store, train, req.train_view, req.train_clips, boxes)   # k-NN reads --view only
    if req.low_shot is not None:
        train = train.subset(balanced_fraction(train.labels, req.low_shot, req.seed))
    return store, ProbeData(train, test, class_names(store, train.labels, test.labels))


def open_sources(req: ProbeRequest, store, data: ProbeData) -> dict[str, Any]:
    """The feature sources by name; SCALE's checks the run and exports missing rows first."""
    sources: dict[str, Any] = {"backbone": BackboneSource()}
    if req.scale_run is not None:
        from .scale import ScaleFeatures

        needed = np.concatenate([data.train.indices, data.test.indices])
        scale = ScaleFeatures.open(store, req.scale_run, req.view, needed, quiet=req.quiet)
        note = transductive_note(scale.meta, store, req.test_split, req.scale_run)
        if note is not None:
            print(note, file=sys.stderr, flush=True)        # one line, even with --quiet: never silent
        sources["scale"] = ScaleSource(scale, transductive=note is not None)
    return sources


def same_set_architecture(rows: list[Row], sources: dict[str, Any]) -> list[Row]:
    """With a SCALE run, the set probes (Transformer and SCALE_ft) take the run's architecture,
    so the two rows differ only in initialisation."""
    if "scale" not in sources:
        return rows
    run_cfg = sources["scale"].scale.config
    return [replace(r, config=match_architecture(r.config, run_cfg)) if isinstance(r.config, TransformerConfig)
            else r for r in rows]


def class_names(store, train_labels: np.ndarray, test_labels: np.ndarray) -> list[str]:
    """The store's class names (or "0".."C-1" when it lists none); labels beyond them are an error."""
    top = int(max(train_labels.max(), test_labels.max()))
    classes = list(store.classes) or [str(c) for c in range(top + 1)]
    if top >= len(classes):
        raise VsslError(f"{store.path}: labels go up to {top} but the store lists {len(classes)} classes; "
                        "fix the class list of the store")
    return classes


def run_row(row: Row, source, data: ProbeData, common: dict[str, Any], quiet: bool) -> ProbeResult:
    """Run one probe on one source and score it: the row's params are the probe's, then the
    source's (which run), then the request's (low-shot, seed)."""
    out = row.probe.run(ProbeCall(row.probe.name, source, data, row.config, quiet))
    result = make_result(row.probe.name, source.name, out.scores, data.test.labels, data.classes,
                         len(data.train.labels), {**out.params, **source.params, **common}, source.transductive)
    log.info("%s (%s): top-1 %.2f top-5 %.2f", result.probe, result.features, result.top1, result.top5)
    return result


def log_to_stderr(quiet: bool) -> None:
    """Probe logs (one line per result, warnings) go to stderr; ``--quiet`` keeps only warnings."""
    if not log.handlers:
        from rich.console import Console
        from rich.logging import RichHandler

        log.addHandler(RichHandler(console=Console(stderr=True), show_time=False, show_path=False))
        log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.INFO)
