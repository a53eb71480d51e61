"""Linear probe: a softmax head per clip, predictions averaged over a video's clips (SCALE §4.1).

By default the head is solved, not trained (:mod:`.lbfgs`): a regularised logistic regression
on standardised clip features, converged by full-batch L-BFGS for every λ of a path, λ chosen on
held-out training videos. ``solver="minibatch"`` trains it instead, as the released eval does
(AdamW or SGD over epochs, warm-up and cosine; ``--grid scale`` selects it); there an optional
batch norm without affine parameters sits before the head (MAE / VideoMAE linear-probing
practice): it standardizes the frozen features, which makes one learning-rate grid fit
backbones whose features have very different scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vssl.errors import VsslError

from .data import TrainView
from .inputs import ClipInputs
from .lbfgs import L2_PATH, fit_solved
from .train import FitResult, GridHeads, TrainConfig, fit

#: how a linear head is fitted: solved to convergence, or trained by minibatch steps (released eval)
SOLVERS = ("lbfgs", "minibatch")


@dataclass(frozen=True)
class LinearConfig(TrainConfig):
    """Linear-probe settings: the shared grid plus the optional batch norm.

    ``append_refined`` (SCALE_linear only): the head sees [C_i ⊕ Ĉ_i ⊕ SET] instead of the
    paper's [C_i ⊕ SET] (§4.1; the released eval's ``append_h=False``). ``l2s``, ``max_iter`` and
    ``tolerance`` are the solver's (λ path, L-BFGS iterations per λ, largest gradient component
    at convergence); the grid fields inherited from :class:`TrainConfig` are the minibatch one's.
    """

    batchnorm: bool = False
    append_refined: bool = False
    holdout_min: int = 100          # a held-out part costs a solved head a few solves: k-fold on small splits
    solver: str = "lbfgs"
    l2s: tuple[float, ...] = L2_PATH
    max_iter: int = 1000
    tolerance: float = 1e-5

    def candidates(self) -> int:
        return len(self.l2s) if self.solver == "lbfgs" else super().candidates()

    def candidate_flags(self) -> str:
        return "--l2" if self.solver == "lbfgs" else super().candidate_flags()

    def validate(self) -> None:
        super().validate()
        if self.solver not in SOLVERS:
            raise VsslError(f"--solver {self.solver}: use one of {', '.join(SOLVERS)}")
        if self.solver == "lbfgs" and (not self.l2s or min(self.l2s) <= 0):
            raise VsslError("--l2 values must be positive (λ of the penalty λ/2·||W||² on the mean loss)")
        if self.max_iter < 1 or self.tolerance <= 0:
            raise VsslError("--max-iter must be at least 1 and --tolerance positive")


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
    if cfg.solver == "lbfgs":
        return fit_solved(inputs, train_pos, num_classes, cfg, advance), inputs
    result = fit(inputs, train_pos, linear_grid(features.shape[-1], num_classes, cfg.batchnorm), cfg, advance)
    return result, inputs
