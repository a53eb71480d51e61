"""MLP probe: the nonlinear baseline of SCALE §4.1 ("Nonlinear baselines"), per clip and
ensembled over a video's clips like the linear probe.

Its layout is the released one (``scale.py`` ``MLP``, built by ``eval.py --mlp`` with hidden
2048, output 512, 2 layers): an MLP ``x -> h`` of ``layers`` ReLU layers of width ``hidden``
and a last linear layer to ``out_dim``, then the linear softmax head on ``[x ⊕ h]``: the raw
clip feature stays visible to the head, so the MLP only has to add what a linear head lacks.
The optional batch norm (no affine) sits on ``[x ⊕ h]`` before the head, as released.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import TrainView
from .inputs import ClipInputs
from .train import FitResult, GridHeads, TrainConfig, fit


@dataclass(frozen=True)
class MlpConfig(TrainConfig):
    """MLP settings: the released layout (2 x 2048 ReLU, then 512) plus the shared grid."""

    lrs: tuple[float, ...] = (1e-3, 3e-3)
    weight_decays: tuple[float, ...] = (1e-4, 1e-2)
    hidden: int = 2048
    layers: int = 2             # ReLU layers of width ``hidden`` before the output layer
    out_dim: int = 512          # width of h, appended to x
    dropout: float = 0.0        # after each ReLU; the released MLP has none
    batchnorm: bool = False


class MlpHead(nn.Module):
    """``logits = Linear([x ⊕ MLP(x)])`` with ``MLP = (Linear, ReLU) x layers, Linear -> out_dim``."""

    def __init__(self, in_dim: int, num_classes: int, cfg: MlpConfig):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(cfg.layers):
            layers += [nn.Linear(d, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            d = cfg.hidden
        self.mlp = nn.Sequential(*layers, nn.Linear(d, cfg.out_dim))
        linear = nn.Linear(in_dim + cfg.out_dim, num_classes)
        self.head = nn.Sequential(nn.BatchNorm1d(in_dim + cfg.out_dim, affine=False), linear) if cfg.batchnorm \
            else linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([x, self.mlp(x)], dim=-1))


def mlp_head(in_dim: int, num_classes: int, cfg: MlpConfig) -> nn.Module:
    """One MLP probe head (the released layout)."""
    return MlpHead(in_dim, num_classes, cfg)


def train_mlp(features: np.ndarray, labels: np.ndarray, train_pos: np.ndarray, num_classes: int,
              cfg: MlpConfig = MlpConfig(), advance=None,
              train_view: TrainView | None = None) -> tuple[FitResult, ClipInputs]:
    """Fit a per-clip MLP head on the videos at ``train_pos`` of ``features`` [n, K, D] (on
    ``train_view``'s clips when given)."""
    inputs = ClipInputs(features, labels, train_view=train_view)
    d = features.shape[-1]
    return fit(inputs, train_pos, lambda grid: GridHeads([mlp_head(d, num_classes, cfg) for _ in grid]), cfg,
               advance), inputs
