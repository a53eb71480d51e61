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
from torch import nn

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


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """SCALE_ft: the pretrained predictor + a linear head; smaller rates so pre-training is kept."""

    lrs: tuple[float, ...] = (1e-4, 3e-4)
    weight_decays: tuple[float, ...] = (1e-4,)
    epochs: int = 20
    batch_size: int = 64


class SetClassifier(nn.Module):
    """SCALE encoder -> CLS output [B, H] -> linear head -> logits [B, C]."""

    def __init__(self, encoder: nn.Module, width: int, num_classes: int):
        super().__init__()
        for name in _PRETRAIN_HEADS:
            if getattr(encoder, name, None) is not None:
                setattr(encoder, name, None)
        self.encoder = encoder
        self.head = nn.Linear(width, num_classes)

    def forward(self, features, boxes):
        _, cls = self.encoder.encode(features, boxes)
        return self.head(cls.float())


def train_transformer(features: np.ndarray, boxes: np.ndarray, labels: np.ndarray, train_pos: np.ndarray,
                      num_classes: int, cfg: TransformerConfig = TransformerConfig(),
                      advance=None) -> tuple[FitResult, SetInputs]:
    """Fit SCALE's architecture from random init (supervised) on the videos at ``train_pos``."""
    from vssl.aggregate import ScaleConfig, ScaleModel

    heads = max(1, cfg.width // 32)
    arch = ScaleConfig(width=cfg.width, layers=cfg.layers, heads=heads, dropout=cfg.dropout, seed=cfg.seed)
    d = features.shape[-1]

    def build(grid):
        return GridHeads([SetClassifier(ScaleModel(arch, d), cfg.width, num_classes) for _ in grid])

    inputs = SetInputs(features, boxes, labels)
    return fit(inputs, train_pos, build, cfg, advance), inputs


def train_finetune(pretrained: nn.Module, width: int, features: np.ndarray, boxes: np.ndarray,
                   labels: np.ndarray, train_pos: np.ndarray, num_classes: int,
                   cfg: FinetuneConfig = FinetuneConfig(), advance=None) -> tuple[FitResult, SetInputs]:
    """Fine-tune a copy of the pretrained SCALE predictor with a linear head (SCALE_ft)."""
    def build(grid):
        return GridHeads([SetClassifier(copy.deepcopy(pretrained), width, num_classes) for _ in grid])

    inputs = SetInputs(features, boxes, labels)
    return fit(inputs, train_pos, build, cfg, advance), inputs
