"""What the probes read: the loaded splits, and the feature sources a row can be computed on.

A probe row is (probe, feature source). The source decides what a probe sees (SCALE §4.1):
``backbone`` gives the stored clip embeddings (k-NN on their mean); ``scale`` gives a SCALE
run's aggregates (k-NN on the SET token, clip heads on [C_i ⊕ Ĉ_i ⊕ SET]) and its pretrained
predictor. Probes ask the source, so one probe implementation serves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .data import SplitData


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
    token_representation: str       # what k-NN embeds per video
    clip_input: str | None          # what a clip head sees, when not the plain clip embedding

    @property
    def params(self) -> dict[str, Any]: ...

    def video_level(self, split: SplitData) -> np.ndarray: ...

    def clips(self, split: SplitData) -> np.ndarray: ...


class BackboneSource:
    """The backbone's stored clip features, as read into the splits."""

    name = "backbone"
    token_representation = "mean of l2-normalized clip embeddings"
    clip_input: str | None = None           # the plain clip embedding: nothing to say in the report
    params: dict[str, Any] = {}             # no run to name

    def video_level(self, split: SplitData) -> np.ndarray:
        """What k-NN embeds per video (clips [n, K, D], or their k-NN embeddings [n, 1, D])."""
        return split.features

    def clips(self, split: SplitData) -> np.ndarray:
        """Per-clip inputs of the clip heads: [n, K, D]."""
        return split.features


@dataclass
class ScaleSource:
    """A SCALE run's exported aggregates and its pretrained predictor (``--scale RUN``)."""

    scale: Any                                  # vssl.probe.scale.ScaleFeatures
    _clips: dict[int, np.ndarray] = field(default_factory=dict, repr=False)   # by id of the split

    name = "scale"
    token_representation = "SET token (CLS output)"
    clip_input = "[C_i, Ĉ_i, SET] per clip"

    @property
    def params(self) -> dict[str, Any]:
        """Which run and export a row used (recorded in each SCALE row of the report)."""
        return {"run": str(self.scale.run_dir), "aggregates": self.scale.group_path}

    def video_level(self, split: SplitData) -> np.ndarray:
        return self.scale.set_token(split.indices)

    def clips(self, split: SplitData) -> np.ndarray:
        """[C_i ⊕ Ĉ_i ⊕ SET] per clip, built once per split and shared by every clip head."""
        if id(split) not in self._clips:           # by identity: a low-shot train split may share a test split's name
            self._clips[id(split)] = self.scale.clip_inputs(split)
        return self._clips[id(split)]
