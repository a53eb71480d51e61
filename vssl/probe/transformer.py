"""Set-level probes built on SCALE's architecture (SCALE §4.1).

``transformer``: the SCALE encoder from random init over all clips of a video (with their
boxes), a linear head on the CLS output, trained supervised; the backbone stays frozen
(only its stored features are used). ``scale_ft``: the same, starting from a pretrained
SCALE run (``vssl aggregate``), fine-tuned end to end with the head.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import TrainView
from .inputs import SetInputs
from .train import FitResult, GridHeads, TrainConfig, fit

# The contrastive heads of pre-training are not part of the encoder; a probe drops them.
_PRETRAIN_HEADS = ("pred_head", "target_head", "set_head")


@dataclass(frozen=True)
class TransformerConfig(TrainConfig):
    """Supervised set-transformer probe: SCALE's default width/depth, its own small grid."""

    lrs: tuple[float, ...] = (3e-4, 1e-3)
    weight_decays: tuple[float, ...] = (1e-2,)
    epochs: int = 20               # ~11 s per epoch and grid point at UCF-101 scale on 1 CPU core in bf16
    batch_size: int = 64
    width: int = 256
    layers: int = 2
    dropout: float = 0.1
    standardize: bool = True   # inputs scaled by the training clips' per-dim mean/std


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """SCALE_ft: the pretrained predictor + a linear head; smaller rates so pre-training is kept."""

    lrs: tuple[float, ...] = (1e-4, 3e-4)
    weight_decays: tuple[float, ...] = (1e-4,)
    epochs: int = 20
    batch_size: int = 64


class SetClassifier(nn.Module):
    """SCALE encoder -> CLS output [B, H] -> linear head -> logits [B, C].

    ``standardize`` (mean, std per feature dim, from the training clips) is applied to the
    input inside the model, so the statistics travel with it to evaluation. A randomly
    initialised transformer needs it: frozen clip embeddings often differ from each other by
    ~1% of their norm, which its input projection otherwise barely sees (the multi-clip test
    on the demo's event-order classes stays at chance without it).
    """

    def __init__(self, encoder: nn.Module, width: int, num_classes: int,
                 standardize: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        for name in _PRETRAIN_HEADS:
            if getattr(encoder, name, None) is not None:
                setattr(encoder, name, None)
        self.encoder = encoder
        self.head = nn.Linear(width, num_classes)
        self.standardize = standardize is not None
        if standardize is not None:
            self.register_buffer("in_mean", standardize[0].float())
            self.register_buffer("in_std", standardize[1].float())

    def forward(self, features, boxes):
        if self.standardize:
            features = (features.float() - self.in_mean) / self.in_std
        _, cls = self.encoder.encode(features, boxes)
        return self.head(cls.float())


def clip_statistics(features: np.ndarray, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over every clip of the videos at ``positions`` (float64 sums)."""
    x = np.asarray(features[positions], dtype=np.float64).reshape(-1, features.shape[-1])
    mean, std = x.mean(axis=0), x.std(axis=0)
    return torch.from_numpy(mean), torch.from_numpy(np.maximum(std, 1e-6 * max(std.max(), 1e-12)))


def train_transformer(features: np.ndarray, boxes: np.ndarray, labels: np.ndarray, train_pos: np.ndarray,
                      num_classes: int, cfg: TransformerConfig = TransformerConfig(),
                      advance=None, train_view: TrainView | None = None) -> tuple[FitResult, SetInputs]:
    """Fit SCALE's architecture from random init (supervised) on the videos at ``train_pos``."""
    from vssl.aggregate import ScaleConfig, ScaleModel

    heads = max(1, cfg.width // 32)
    arch = ScaleConfig(width=cfg.width, layers=cfg.layers, heads=heads, dropout=cfg.dropout, seed=cfg.seed)
    d = features.shape[-1]

    stats = clip_statistics(features, train_pos) if cfg.standardize else None

    def build(grid):
        return GridHeads([SetClassifier(ScaleModel(arch, d), cfg.width, num_classes, stats) for _ in grid])

    inputs = SetInputs(features, boxes, labels, train_view=train_view)
    return fit(inputs, train_pos, build, cfg, advance), inputs


def train_finetune(pretrained: nn.Module, width: int, features: np.ndarray, boxes: np.ndarray,
                   labels: np.ndarray, train_pos: np.ndarray, num_classes: int,
                   cfg: FinetuneConfig = FinetuneConfig(), advance=None,
                   train_view: TrainView | None = None) -> tuple[FitResult, SetInputs]:
    """Fine-tune a copy of the pretrained SCALE predictor with a linear head (SCALE_ft)."""
    def build(grid):
        return GridHeads([SetClassifier(copy.deepcopy(pretrained), width, num_classes) for _ in grid])

    inputs = SetInputs(features, boxes, labels, train_view=train_view)
    return fit(inputs, train_pos, build, cfg, advance), inputs
