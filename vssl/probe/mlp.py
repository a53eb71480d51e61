"""MLP probe: the nonlinear baseline of SCALE §4.1 ("Nonlinear baselines"), per clip and
ensembled over a video's clips like the linear probe, so the two differ only in the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from .data import TrainView
from .inputs import ClipInputs
from .train import FitResult, GridHeads, TrainConfig, fit


@dataclass(frozen=True)
class MlpConfig(TrainConfig):
    """MLP settings: hidden width, depth (hidden layers) and dropout, plus the shared grid."""

    lrs: tuple[float, ...] = (1e-3, 3e-3)
    weight_decays: tuple[float, ...] = (1e-4, 1e-2)
    hidden: int = 1024
    layers: int = 1
    dropout: float = 0.0
    batchnorm: bool = False


def mlp_head(in_dim: int, num_classes: int, cfg: MlpConfig) -> nn.Module:
    layers, d = [], in_dim
    for _ in range(cfg.layers):
        layers += [nn.Linear(d, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout)]
        d = cfg.hidden
    return nn.Sequential(*layers, nn.Linear(d, num_classes))


def train_mlp(features: np.ndarray, labels: np.ndarray, train_pos: np.ndarray, num_classes: int,
              cfg: MlpConfig = MlpConfig(), advance=None,
              train_view: TrainView | None = None) -> tuple[FitResult, ClipInputs]:
    """Fit a per-clip MLP head on the videos at ``train_pos`` of ``features`` [n, K, D] (on
    ``train_view``'s clips when given)."""
    inputs = ClipInputs(features, labels, train_view=train_view)
    d = features.shape[-1]

    def build(grid):
        pre = nn.BatchNorm1d(d, affine=False, eps=1e-6) if cfg.batchnorm else None
        return GridHeads([mlp_head(d, num_classes, cfg) for _ in grid], pre)

    return fit(inputs, train_pos, build, cfg, advance), inputs
