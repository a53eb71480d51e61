"""`tiny`: a small built-in 3D conv net with fixed random weights.

It needs no checkpoint, runs fast on a CPU and is deterministic (seeded init), which is
what the demo and the tests need from a backbone. Its features are random projections
of local spatio-temporal structure, not learned ones.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Backbone, InputSpec
from .builder import adapt_as_is
from .registry import register_family

TINY_SPEC = InputSpec(frames=8, stride=2, size=64)


class TinyVideoNet(Backbone):
    """Three strided 3D convolutions, global average pooling, 128-d output."""

    pooling = "avgpool"

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
        )
        torch.random.set_rng_state(gen_state)

    def forward_features(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 128, T/4, H/8, W/8) feature map."""
        return self.net(clips)


# A checkpoint, if given, goes through the shared builder: containers, --key-map, strict errors.
register_family("tiny", model_cls=TinyVideoNet, adapter=adapt_as_is, spec=TINY_SPEC, family="tiny", embed_dim=128,
                needs_checkpoint=False, description="small 3D conv net with fixed random weights (demo, tests)")
