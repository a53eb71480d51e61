"""What the probes read: the loaded splits, and the feature sources a row can be computed on.

A probe row is (probe, feature source). The source decides what a probe sees (SCALE §4.1):
``backbone`` gives the stored clip embeddings (k-NN on their mean); ``scale`` gives a SCALE run's
aggregates (k-NN on the mean of [C_i ⊕ SET], clip heads on [C_i ⊕ SET]; the SET token alone and
[C_i ⊕ Ĉ_i ⊕ SET] as named variants) and its pretrained predictor. Both sources' k-NN follow the
row's one rule (:mod:`.knn`: ``dino`` or ``released``), so their rows compare like for like.
Probes ask the source, so one probe implementation serves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vssl.errors import VsslError
from vssl.features_store.ragged import RaggedClips

from .data import SplitData
from .knn import SCALE_KNN_FEATURES, KnnConfig, prepare


@dataclass
class ProbeData:
    """Both splits in memory and the class names every report row is scored against."""

    train: SplitData
    test: SplitData
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class FeatureSource(Protocol):
    """What a probe reads through: per-video and per-clip inputs, and how the report names them."""

    name: str                       # the report's "features" column
    transductive: bool              # pretrained on videos of the test split (SCALE runs only)

    @property
    def params(self) -> dict[str, Any]: ...

    def knn_embeddings(self, data: ProbeData, cfg: KnnConfig) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """l2-normalized video embeddings of (train, test) and what they are (the row's params)."""
        ...

    def clips(self, split: SplitData, cfg: Any = None) -> tuple[np.ndarray | RaggedClips, str | None]:
        """Per-clip inputs of a clip head ``[n, K, D']`` (or ragged) and what they are (None: the plain clip)."""
        ...

    def tokens(self, split: SplitData) -> tuple[np.ndarray | RaggedClips, str | None]:
        """What the attentive probe attends over, per clip (``[n, K, D]``, ``[n, K, T, D]`` or ragged),
        and what it is (None: the stored clip itself)."""
        ...


class BackboneSource:
    """The backbone's stored clip features, as read into the splits."""

    name = "backbone"
    transductive = False                    # the backbone is trained elsewhere, on its own data
    params: dict[str, Any] = {}             # no run to name

    def knn_embeddings(self, data: ProbeData, cfg: KnnConfig) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The rule's mean of the clips (dino: of the l2-normalized clips, uncentred; released: of the
        raw clips, centred by the training mean), l2-normalized; ``center`` overrides the rule's.
        The splits hold clips [n, K, D] or, for k-NN-only runs, these vectors [n, 1, D]."""
        rule, center = cfg.resolved_rule(), cfg.resolved_center()
        tr, te = prepare(data.train.features, data.test.features, center, rule=rule)
        what = "mean of l2-normalized clip embeddings" if rule == "dino" else "mean of clip embeddings"
        return tr, te, {"representation": what, "rule": rule, "center": center}

    def clips(self, split: SplitData, cfg: Any = None) -> tuple[np.ndarray | RaggedClips, str | None]:
        """Per-clip inputs of the clip heads: [n, K, D] (or ragged), the plain clip embedding."""
        return split.features, None

    def tokens(self, split: SplitData) -> tuple[np.ndarray | RaggedClips, str | None]:
        """The stored clips: a token view's grids ``[n, K, T, D]`` or a plain view's vectors."""
        return split.features, None


@dataclass
class ScaleSource:
    """A SCALE run's exported aggregates and its pretrained predictor (``--scale RUN``)."""

    scale: Any                                  # vssl.probe.scale.ScaleFeatures
    transductive: bool = False                  # see vssl.probe.transductive
    _clips: dict[tuple[bytes, bool], RaggedClips] = field(default_factory=dict, repr=False)

    name = "scale"

    @property
    def params(self) -> dict[str, Any]:
        """Which run and export a row used (recorded in each SCALE row of the report)."""
        return {"run": str(self.scale.run_dir), "aggregates": self.scale.group_path}

    def knn_embeddings(self, data: ProbeData, cfg: KnnConfig) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """SCALE §4.1: per video the mean over clips of [C_i ⊕ SET] (``cfg.features="set"``: the SET
        token alone), under the row's rule: released (the paper's and the released eval's) = the raw
        mean centred by the *training* split's mean (the released eval.py centres each split by its
        own mean, vssl never does), dino = the mean of the l2-normalized [C_i ⊕ SET], uncentred; l2."""
        if cfg.features not in SCALE_KNN_FEATURES:
            raise VsslError(f"k-NN features {cfg.features!r} are unknown; use {' or '.join(SCALE_KNN_FEATURES)}")
        rule, center = cfg.resolved_rule("released"), cfg.resolved_center("released")
        tr, te = prepare(self.scale.video_inputs(data.train, cfg.features, rule),
                         self.scale.video_inputs(data.test, cfg.features, rule), center, normalize_clips=False)
        what = {"clip_set": "mean over clips of [C_i, SET]" if rule == "released"
                else "mean over clips of l2-normalized [C_i, SET]", "set": "SET token (CLS output)"}[cfg.features]
        return tr, te, {"representation": what, "rule": rule, "center": center}

    def clips(self, split: SplitData, cfg: Any = None) -> tuple[RaggedClips, str | None]:
        """[C_i ⊕ SET] per clip ([C_i ⊕ Ĉ_i ⊕ SET] with the config's ``append_refined``), built
        once per split and variant and shared by every clip head."""
        refined = bool(getattr(cfg, "append_refined", False))
        # by the videos it holds: ids of freed splits (another seed's low-shot subset) are reused
        key = (split.indices.tobytes(), refined)
        if key not in self._clips:
            self._clips[key] = self.scale.clip_inputs(split, refined)
        return self._clips[key], "[C_i, Ĉ_i, SET] per clip" if refined else "[C_i, SET] per clip"

    def tokens(self, split: SplitData) -> tuple[RaggedClips, str | None]:
        """SCALE's refined clips Ĉ_i (one token per clip): the attentive pool over a video's Ĉ."""
        return self.scale.refined_clips(split.indices), "refined clips Ĉ_i"
