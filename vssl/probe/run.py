"""`vssl probe`: load the splits once, run the requested probes, collect one row per probe.

Each probe runs on the backbone's features and, with a SCALE run, on SCALE's (§4.1):
k-NN on the mean clip embedding vs on the SET token; linear/MLP per clip on the backbone
clip vs on [C_i ⊕ Ĉ_i ⊕ SET]; the transformer from random init vs the fine-tuned predictor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vssl.errors import VsslError

from .common import progress, resolve_device
from .data import SplitData, load_split
from .inputs import ClipInputs, SetInputs
from .knn import KnnConfig, knn_scores, prepare, resolve_backend
from .linear import LinearConfig, train_linear
from .lowshot import balanced_fraction
from .mlp import MlpConfig, train_mlp
from .report import Report, make_result
from .train import FitResult, TrainConfig
from .transformer import FinetuneConfig, TransformerConfig, train_finetune, train_transformer

log = logging.getLogger("vssl.probe")


@dataclass
class ProbeRequest:
    """What to probe and how; a probe whose config is ``None`` is skipped."""

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
    low_shot: float | None = None
    seed: int = 0
    quiet: bool = False

    def with_default_probes(self) -> "ProbeRequest":
        """No probe asked for: k-NN and linear (the issue's default)."""
        if any(c is not None for c in (self.knn, self.linear, self.mlp, self.transformer, self.finetune)):
            return self
        return replace(self, knn=KnnConfig(), linear=LinearConfig())


def run_probes(req: ProbeRequest) -> Report:
    """Run every requested probe on ``req.view`` and return the report (nothing printed)."""
    from vssl.features_store import FeatureStore

    req = req.with_default_probes()
    if req.finetune is not None and req.scale_run is None:
        raise VsslError("--finetune fine-tunes a pretrained SCALE run; give it with --scale RUN_DIR")
    store = FeatureStore.open(req.store)
    store.view(req.view)                                    # a clear error when the view is missing
    need_boxes = req.transformer is not None or req.finetune is not None
    knn_only = all(c is None for c in (req.linear, req.mlp, req.transformer, req.finetune))
    train = load_split(store, req.view, req.train_split, "--train-split", need_boxes, knn_only)
    test = load_split(store, req.view, req.test_split, "--test-split", need_boxes, knn_only)
    if req.low_shot is not None:
        train = train.subset(balanced_fraction(train.labels, req.low_shot, req.seed))
    scale = None
    if req.scale_run is not None:
        from .scale import ScaleFeatures

        needed = np.concatenate([train.indices, test.indices])
        scale = ScaleFeatures.open(store, req.scale_run, req.view, needed, quiet=req.quiet)
    classes = list(store.classes) or [str(c) for c in range(int(max(train.labels.max(), test.labels.max())) + 1)]
    if max(train.labels.max(), test.labels.max()) >= len(classes):
        raise VsslError(f"{store.path}: labels go up to {max(train.labels.max(), test.labels.max())} but the "
                        f"store lists {len(classes)} classes; fix the class list of the store")
    report = Report(str(store.path), req.view, req.train_split, req.test_split, req.low_shot)
    runner = _Runner(req, train, test, classes, report)
    runner.backbone_rows()
    if scale is not None:
        runner.scale_rows(scale)
    return report


class _Runner:
    def __init__(self, req: ProbeRequest, train: SplitData, test: SplitData, classes: list[str], report: Report):
        self.req, self.train, self.test, self.classes, self.report = req, train, test, classes, report
        self.c = len(classes)
        self.common = {"low_shot": req.low_shot, "seed": req.seed}

    def _add(self, probe: str, features: str, scores: np.ndarray, params: dict) -> None:
        self.report.results.append(make_result(probe, features, scores, self.test.labels, self.classes,
                                               len(self.train.labels), {**params, **self.common}))
        r = self.report.results[-1]
        log.info("%s (%s): top-1 %.2f top-5 %.2f", probe, features, r.top1, r.top5)

    def _knn(self, features: str, train_x: np.ndarray, test_x: np.ndarray, representation: str) -> None:
        cfg = self.req.knn
        tr, te = prepare(train_x, test_x, cfg.center)
        with progress(f"k-NN ({features})", len(te), self.req.quiet) as advance:
            scores = knn_scores(tr, self.train.labels, te, self.c, cfg, advance)
        backend = resolve_backend(cfg, resolve_device(cfg.device))
        self._add("knn", features, scores, {**cfg.params(), "backend": backend, "representation": representation})

    def _heads(self, probe: str, features: str, train_fn, cfg: TrainConfig, train_x: np.ndarray,
               test_x: np.ndarray, **extra) -> None:
        """Train a clip-level head on ``train_x`` and score it on ``test_x`` (both [n, K, D'])."""
        with progress(f"{probe} ({features}) epochs", _epochs_total(cfg), self.req.quiet) as advance:
            result, _ = train_fn(train_x, self.train.labels, np.arange(len(train_x)), self.c, cfg, advance)
        self._score_fit(probe, features, result, ClipInputs(test_x, self.test.labels), cfg, extra)

    def _score_fit(self, probe, features, result: FitResult, test_inputs, cfg: TrainConfig, extra):
        scores = test_inputs.predict(result.model, np.arange(len(self.test.labels)), resolve_device(cfg.device),
                                     result.precision)
        self._add(probe, features, scores[:, 0], {**cfg.params(), "selected": result.params(), **extra})

    def backbone_rows(self) -> None:
        req, tr, te = self.req, self.train, self.test
        if req.knn is not None:
            self._knn("backbone", tr.features, te.features, "mean of l2-normalized clip embeddings")
        if req.linear is not None:
            self._heads("linear", "backbone", train_linear, req.linear, tr.features, te.features)
        if req.mlp is not None:
            self._heads("mlp", "backbone", train_mlp, req.mlp, tr.features, te.features)
        if req.transformer is not None:
            self._set_probe("transformer", "backbone", req.transformer,
                            lambda x, b, y, pos, c, cfg, adv: train_transformer(x, b, y, pos, c, cfg, adv))

    def scale_rows(self, scale) -> None:
        req, tr, te = self.req, self.train, self.test
        extra = {"run": str(scale.run_dir), "aggregates": scale.group_path}
        if req.knn is not None:
            self._knn("scale", scale.set_token(tr.indices), scale.set_token(te.indices), "SET token (CLS output)")
            self.report.results[-1].params.update(extra)
        clip_probes = [(p, fn, cfg) for p, fn, cfg in (("scale_linear", train_linear, req.linear),
                                                      ("mlp", train_mlp, req.mlp)) if cfg is not None]
        if clip_probes:
            tr_x, te_x = scale.clip_inputs(tr), scale.clip_inputs(te)
            for probe, fn, cfg in clip_probes:
                self._heads(probe, "scale", fn, cfg, tr_x, te_x, input="[C_i, Ĉ_i, SET] per clip", **extra)
        if req.finetune is not None:
            self._set_probe("scale_ft", "scale", req.finetune,
                            lambda x, b, y, pos, c, cfg, adv: train_finetune(scale.model, scale.width, x, b, y,
                                                                              pos, c, cfg, adv), **extra)

    def _set_probe(self, probe, features, cfg: TrainConfig, train_fn, **extra) -> None:
        tr, te = self.train, self.test
        with progress(f"{probe} ({features}) epochs", _epochs_total(cfg), self.req.quiet) as advance:
            result, _ = train_fn(tr.features, tr.boxes, tr.labels, np.arange(len(tr.labels)), self.c, cfg, advance)
        self._score_fit(probe, features, result, SetInputs(te.features, te.boxes, te.labels), cfg, extra)


def _epochs_total(cfg: TrainConfig) -> int:
    """Epochs the progress bar counts: the selection pass plus the refit (at most as long)."""
    return cfg.epochs * (2 if cfg.holdout > 0 else 1)

