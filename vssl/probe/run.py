"""`vssl probe`: load the splits once, then one report row per (probe, feature source).

Each probe runs on the backbone's features and, with a SCALE run, on SCALE's (§4.1):
k-NN on the mean clip embedding vs on the centred mean of [C_i ⊕ SET]; linear/MLP per clip on
the backbone clip vs on [C_i ⊕ SET]; the transformer from random init vs the fine-tuned
predictor (one model and config, the run's architecture for both). A run pretrained on the
test split's videos is said in one stderr line and its rows are marked transductive.
The steps, in order: :func:`plan_rows` (what to compute, checked before anything is read),
:func:`load_data` (splits, low-shot subset, class names), :func:`open_sources`, then
:func:`run_row` for each row (probe -> scores -> :func:`~vssl.probe.metrics.row_metrics`; a ranking probe's row,
:func:`run_ranking_row`, reports its own numbers).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from vssl.errors import VsslError
from vssl.training_log import NoLog, TrainingLog, logging_to, open_log

from .attentive import AttentiveConfig
from .data import load_split, with_train_view
from .knn import KnnConfig
from .linear import LinearConfig
from .lowshot import balanced_fraction
from .mlp import MlpConfig
from .registry import PROBES, Probe, ProbeCall, options
from .report import ProbeResult, Report, make_result
from .retrieval import RetrievalConfig, RetrievalResult, warn_unscored
from .labels import class_names
from .sources import BackboneSource, ProbeData, ScaleSource
from .task import task_of
from .transductive import judge_run
from .transformer import FinetuneConfig, TransformerConfig

log = logging.getLogger("vssl.probe")


@dataclass
class ProbeRequest:
    """What to probe and how; a probe option whose config is ``None`` is skipped.

    Each option (``knn``, ``linear``, ...) enables the registered probes that name it
    (:data:`vssl.probe.registry.PROBES`), on every feature source they accept. The options of
    probes registered beyond the built-in ones (:func:`~vssl.probe.registry.register_probe`) are
    keys of ``configs``.
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
    attentive: AttentiveConfig | None = None
    retrieval: RetrievalConfig | None = None
    scale_run: Path | None = None
    train_view: str | None = None       # trained probes fit on this view's clips (default: ``view``)
    train_clips: int = 8                # clips of a train-view video drawn per step (released: 8)
    low_shot: float | None = None
    seed: int = 0
    seeds: int = 1                      # trained probes trained (and low-shot subsets drawn) per seed
    knn_ks: tuple[int, ...] = ()        # a k-NN row per k (DINO's 10, 20, 100, 200); () = knn.k
    target: str | None = None           # probe a numeric column (regression) instead of the classes
    quiet: bool = False
    log_dir: Path | None = None         # trained probes' TensorBoard event files, a folder per row and seed
    configs: dict[str, Any] = field(default_factory=dict)   # option -> config of a registered probe

    def config_of(self, option: str) -> Any:
        """The config of probe option ``option`` (None: not asked for): a built-in option's field,
        else its entry of ``configs``."""
        if option in {f.name for f in fields(self)}:
            return getattr(self, option)
        return self.configs.get(option)

    def with_default_probes(self) -> "ProbeRequest":
        """No probe asked for: k-NN and linear (the issue's default)."""
        if any(self.config_of(option) is not None for option in options()):
            return self
        return replace(self, knn=KnnConfig(), linear=LinearConfig())

    def sources(self) -> tuple[str, ...]:
        """The feature sources this request can read: the backbone's, and SCALE's with a run."""
        return ("backbone",) if self.scale_run is None else ("backbone", "scale")


@dataclass(frozen=True)
class Row:
    """One report row to compute: a probe, the source it reads, its config (``variant`` names a
    row of a grid reported row by row, e.g. ``k20`` of the k-NN's ``--knn-k``)."""

    probe: Probe
    source: str
    config: Any
    variant: str | None = None

    @property
    def name(self) -> str:
        """The row's name in the report (``knn_k20`` for a row of a grid)."""
        return self.probe.name if self.variant is None else f"{self.probe.name}_{self.variant}"


def run_probes(req: ProbeRequest) -> Report:
    """Run every requested probe on ``req.view`` and return the report (nothing printed)."""
    req = req.with_default_probes()
    rows = plan_rows(req)
    open_log(req.log_dir)                   # a missing tensorboard extra is one line before any work
    store, data = load_data(req, rows)
    sources = open_sources(req, store, data)
    rows = same_set_architecture(rows, sources)
    # absolute paths: a report is read (``vssl report``) from wherever its reader stands
    report = Report(str(Path(store.path).resolve()), req.view, req.train_split, req.test_split, req.low_shot,
                    seeds=list(seeds_of(req)), target=req.target,
                    test_paths=store.paths()[data.test.indices], test_labels=data.test.labels,
                    test_indices=data.test.indices, classes=list(data.classes),
                    context=run_context(req, store, sources, rows))
    for row in rows:
        if row.probe.ranks:
            report.retrieval.append(run_ranking_row(row, sources[row.source], data, req))
        else:
            report.results.append(run_row(row, sources[row.source], data, req))
    warn_unscored(report.retrieval)
    return report


def run_context(req: ProbeRequest, store, sources: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    """What a report was run on and with, for a reader without the store: vssl's version, the
    backbone (its checkpoint's sha256 among it), the view's sampler and the settings that extracted
    it, the SCALE run (its directory, checkpoint sha256 and config) and each row's probe settings."""
    from vssl import __version__

    view = store.view(req.view)
    scale = sources.get("scale")
    run = None if scale is None else {"dir": str(Path(req.scale_run).resolve()), "checkpoint_sha256": scale.scale.meta.get(
        "checkpoint_sha256"), "config": scale.scale.config.to_dict()}
    probes = {r.name: _settings_of(r.config) for r in rows}
    return {"vssl_version": __version__, "backbone": store.backbone.to_dict(),
            "view": {"name": view.name, "spec": view.spec, "extract": view.record, "clip_shape": list(view.clip_shape)},
            "scale_run": run, "train_view": req.train_view, "probes": probes}


def _settings_of(config: Any) -> dict[str, Any]:
    """A probe config as plain settings (its ``params()`` where it has one)."""
    return config.params() if hasattr(config, "params") else {f.name: getattr(config, f.name) for f in fields(config)}


def seeds_of(req: ProbeRequest) -> range:
    """The seeds a row is computed with: ``--seed``, ``--seed + 1``, ... (``--seeds`` of them)."""
    if req.seeds < 1:
        raise VsslError(f"--seeds {req.seeds}: give at least 1")
    return range(req.seed, req.seed + req.seeds)


def plan_rows(req: ProbeRequest) -> list[Row]:
    """The rows, source by source in registry order, each probe's config expanded by the probe
    (e.g. a k-NN row per k); an enabled option none of whose probes can run on the available
    sources is an error (e.g. ``--finetune`` without ``--scale``)."""
    available = req.sources()
    for option in options():
        probes = [p for p in PROBES if p.option == option]
        if req.config_of(option) is not None and not any(set(p.sources) & set(available) for p in probes):
            raise VsslError(f"--{option} ({', '.join(p.name for p in probes)}) runs on a pretrained SCALE "
                            "run's features; give it with --scale RUN_DIR")
    return [Row(p, source, config, variant) for source in available for p in PROBES
            if source in p.sources and req.config_of(p.option) is not None
            for config, variant in p.expand(req.config_of(p.option), req)]


def load_data(req: ProbeRequest, rows: list[Row]):
    """Open the store and read both splits (only what the rows need), low-shot subset applied."""
    from vssl.features_store import FeatureStore

    store = FeatureStore.open(req.store)
    check_token_view(store.view(req.view), rows)           # a clear error when the view is missing
    boxes = any("boxes" in r.probe.needs for r in rows)
    # Only the backbone's k-NN reduces clips to its rule's per-video vector while reading; SCALE's
    # k-NN averages its [C_i ⊕ SET], so a SCALE row reads every clip.
    # Rows of two rules (a retrieval row given its own) or a token view (its tokens are averaged
    # per clip first) read every clip too.
    rules = {r.probe.video_rule(r.config) for r in rows if r.probe.video_rule is not None}
    video_level = (not any("clips" in r.probe.needs or r.source == "scale" for r in rows) and len(rules) <= 1
                   and len(store.view(req.view).clip_shape) < 2)
    rule = next(iter(rules), "dino")
    train = load_split(store, req.view, req.train_split, "--train-split", boxes, video_level, req.target, rule)
    test = load_split(store, req.view, req.test_split, "--test-split", boxes, video_level, req.target, rule)
    if req.train_view is not None and any("train_view" in r.probe.needs for r in rows):
        train = with_train_view(store, train, req.train_view, req.train_clips, boxes)   # k-NN reads --view only
    return store, ProbeData(train, test, class_names(store, train.labels, test.labels, req.target))


def check_token_view(view, rows: list[Row]) -> None:
    """A token view (a grid of tokens per clip) is read only by the probes that declare ``tokens``
    (the attentive probe; retrieval, which averages each clip's tokens); the others read one vector
    per clip: one clear line naming the fix."""
    if len(view.clip_shape) < 2:
        return
    others = sorted({r.probe.name for r in rows if "tokens" not in r.probe.needs})
    if others:
        pooled = f" (e.g. '{view.name.split('.tokens')[0]}')" if ".tokens" in view.name else ""
        raise VsslError(f"view '{view.name}' holds {view.clip_shape[0]} tokens per clip; {', '.join(others)} "
                        f"read(s) one vector per clip: probe them on a pooled view{pooled} and the token view "
                        "with --attentive or --retrieval alone")


def seed_data(data: ProbeData, low_shot: float | None, seed: int) -> ProbeData:
    """The data of one seed: the low-shot subset drawn with that seed (class-balanced for
    single-label data, a plain random fraction otherwise); the test split stays whole."""
    if low_shot is None:
        return data
    pick = balanced_fraction(task_of(data.train.labels).stratify(data.train.labels), low_shot, seed)
    return replace(data, train=data.train.subset(pick))


def open_sources(req: ProbeRequest, store, data: ProbeData) -> dict[str, Any]:
    """The feature sources by name; SCALE's checks the run and exports missing rows first."""
    sources: dict[str, Any] = {"backbone": BackboneSource()}
    if req.scale_run is not None:
        from .scale import ScaleFeatures

        needed = np.concatenate([data.train.indices, data.test.indices])
        scale = ScaleFeatures.open(store, req.scale_run, req.view, needed, quiet=req.quiet)
        verdict = judge_run(scale.meta, store, req.test_split, data.test.indices, req.scale_run)
        if verdict.line is not None:
            print(verdict.line, file=sys.stderr, flush=True)        # one line, even with --quiet: never silent
        sources["scale"] = ScaleSource(scale, transductive=verdict.transductive)
    return sources


def same_set_architecture(rows: list[Row], sources: dict[str, Any]) -> list[Row]:
    """With a SCALE run, the probes that declare ``match_run`` (the set probes, Transformer and
    SCALE_ft) take the run's architecture, so the two rows differ only in initialisation."""
    if "scale" not in sources:
        return rows
    run_cfg = sources["scale"].scale.config
    return [replace(r, config=r.probe.match_run(r.config, run_cfg)) if r.probe.match_run is not None else r
            for r in rows]


def run_row(row: Row, source, data: ProbeData, req: ProbeRequest) -> ProbeResult:
    """Run one probe on one source, once per seed, and score it: the row's params are the probe's
    (first seed's), then the source's (which run), then the request's (low-shot, seeds)."""
    scores, params, n_train = [], None, 0
    # a row that does not depend on the seed, on the whole training split, is the same for every
    # seed: computed once
    fixed = not row.probe.seeded and req.low_shot is None
    for seed in seeds_of(req):
        if fixed and scores:
            scores.append(scores[0])
            continue
        seeded = seed_data(data, req.low_shot, seed)
        config = row.probe.with_seed(row.config, seed)
        scaled, unscale = standardized_target(seeded)
        with logging_to(row_log(req, row, source.name, seed)):
            out = row.probe.run(ProbeCall(row.probe.name, source, scaled, config, req.quiet))
        scores.append(unscale(out.scores))
        params = out.params if params is None else params
        n_train = len(seeded.train.labels)
        if req.seeds > 1:
            params.setdefault("selected_per_seed", []).append(out.params.get("selected"))
    common = {"low_shot": req.low_shot, "seed": req.seed, "seeds": list(seeds_of(req))}
    result = make_result(row.probe.name, source.name, scores, data.test.labels, data.classes, n_train,
                         {**params, **source.params, **common}, source.transductive, row.probe.interval, row.variant,
                         seeded=not fixed)
    log.info("%s (%s): %s", result.name, result.features, result.headline())
    return result


def row_log(req: ProbeRequest, row: Row, source: str, seed: int) -> TrainingLog:
    """Where one seed of a row writes its training (``--log-dir``): ``<probe>[_<variant>]-<source>/seed<S>``
    in the log folder, written only by probes that train (a training-free row leaves nothing)."""
    if req.log_dir is None:
        return NoLog()
    return open_log(Path(req.log_dir) / f"{row.name}-{source}" / f"seed{seed}")


def run_ranking_row(row: Row, source, data: ProbeData, req: ProbeRequest) -> RetrievalResult:
    """A ranking probe's row (retrieval), computed once: it has no seed; under ``--low-shot`` its
    gallery is the training subset drawn with ``--seed``. Params: the probe's, the source's, the
    request's, as a class row's."""
    seeded = seed_data(data, req.low_shot, req.seed)
    result = row.probe.run(ProbeCall(row.probe.name, source, seeded, row.config, req.quiet))
    result.params.update({**source.params, "low_shot": req.low_shot, "seed": req.seed,
                          "seeds": list(seeds_of(req))})
    result.transductive, result.variant = source.transductive, row.variant
    log.info("%s (%s): %s", result.name, result.features, result.headline())
    return result


def standardized_target(data: ProbeData):
    """A regression target z-scored by the training values (a head's learning rate then suits any
    unit: years, ratios, view counts), and the map of predictions back to the target's unit.
    Classes pass through unchanged."""
    y = data.train.labels
    if task_of(y).kind != "regression":
        return data, lambda scores: scores
    mu, sd = float(y.mean()), float(y.std()) or 1.0
    train = replace(data.train, labels=(y - mu) / sd)
    return replace(data, train=train), lambda scores: np.asarray(scores, np.float64) * sd + mu


def log_to_stderr(quiet: bool) -> None:
    """Probe logs (one line per result, warnings) go to stderr; ``--quiet`` keeps only warnings."""
    if not log.handlers:
        from rich.console import Console
        from rich.logging import RichHandler

        log.addHandler(RichHandler(console=Console(stderr=True), show_time=False, show_path=False))
        log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.INFO)
