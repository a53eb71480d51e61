"""`tiny`: a small built-in 3D conv net with fixed random weights.

It needs no checkpoint, runs fast on a CPU and is deterministic (seeded init), which is
what the demo and the tests need from a backbone. Its features are random projections
of local spatio-temporal structure, not learned ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import Backbone, InputSpec
from .checkpoints import apply_key_map, load_strict, read_checkpoint
from .registry import register_backbone

TINY_SPEC = InputSpec(frames=8, stride=2, size=64)


class TinyVideoNet(Backbone):
    """Three strided 3D convolutions, global average pooling, 128-d output."""

    def __init__(self, spec: InputSpec = TINY_SPEC, width: int = 32, embed_dim: int = 128, seed: int = 0):
        super().__init__(embed_dim=embed_dim, spec=spec, family="tiny")
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv3d(3, width, kernel_size=(3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2)),
            nn.GELU(),
            nn.Conv3d(width, width * 2, kernel_size=3, stride=(2, 2, 2), padding=1),
            nn.GELU(),
            nn.Conv3d(width * 2, embed_dim, kernel_size=3, stride=(2, 2, 2), padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
        )
        torch.random.set_rng_state(gen_state)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.net(clips)


@register_backbone("tiny", spec=TINY_SPEC, family="tiny",
                   description="small 3D conv net with fixed random weights (demo, tests)",
                   needs_checkpoint=False)
def tiny(checkpoint: Path | None = None, spec: InputSpec = TINY_SPEC, key_map=None) -> TinyVideoNet:
    model = TinyVideoNet(spec=spec)
    if checkpoint is not None:  # through the shared loader: containers, --key-map, strict errors
        ckpt = read_checkpoint(checkpoint)
        load_strict(model, apply_key_map(ckpt.tensors, key_map), str(checkpoint), "tiny")
    return model
