"""Linear probe: a softmax head per clip, predictions averaged over a video's clips (SCALE §4.1).

Optionally a batch norm without affine parameters sits before the head (MAE / VideoMAE
linear-probing practice): it standardizes the frozen features, which makes one learning-rate
grid fit backbones whose features have very different scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .train import FitResult, GridHeads, TrainConfig, fit
from .data import TrainView
from .inputs import ClipInputs


@dataclass(frozen=True)
class LinearConfig(TrainConfig):
    """Linear-probe settings: the shared grid plus the optional batch norm.

    ``append_refined`` (SCALE_linear only): the head sees [C_i ⊕ Ĉ_i ⊕ SET] instead of the
    paper's [C_i ⊕ SET] (§4.1; the released eval's ``append_h=False``).
    """

    batchnorm: bool = False
    append_refined: bool = False


class GridLinear(GridHeads):
    """G linear heads computed as one matrix product (the weights are concatenated per step)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        w = torch.cat([h.weight for h in self.heads])          # [G*C, D]
        b = torch.cat([h.bias for h in self.heads])
        return nn.functional.linear(x, w, b).reshape(len(x), len(self.heads), -1)


def linear_grid(in_dim: int, num_classes: int, batchnorm: bool):
    """A builder for :func:`~vssl.probe.train.fit`: one linear head per grid point."""
    def build(grid):
        pre = nn.BatchNorm1d(in_dim, affine=False, eps=1e-6) if batchnorm else None
        return GridLinear([nn.Linear(in_dim, num_classes) for _ in grid], pre)
    return build


def train_linear(features: np.ndarray, labels: np.ndarray, train_pos: np.ndarray, num_classes: int,
                 cfg: LinearConfig = LinearConfig(), advance=None,
                 train_view: TrainView | None = None) -> tuple[FitResult, ClipInputs]:
    """Fit a per-clip linear head on the videos at ``train_pos`` of ``features`` [n, K, D] (on
    ``train_view``'s clips when given; selection still reads ``features``)."""
    inputs = ClipInputs(features, labels, train_view=train_view)
    result = fit(inputs, train_pos, linear_grid(features.shape[-1], num_classes, cfg.batchnorm), cfg, advance)
    return result, inputs
