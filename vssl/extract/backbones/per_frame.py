"""Image encoders applied to every frame of a clip, in one place.

Image backbones (MAE/ViC-MAE ViTs, EfficientNet-Lite) embed single frames; a clip embedding
is the mean of its frame embeddings, or their concatenation in frame order when the frames are
kept (``efficientnet-lite0-frames``). The wrapper is applied by the registry's builder after the
checkpoint is loaded into the image encoder, so checkpoint names stay the encoder's own.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Backbone


class PerFrame(Backbone):
    """``(B, C, T, H, W)`` -> the image encoder on the ``B*T`` frames -> mean over ``T`` (or kept)."""

    def __init__(self, encoder: Backbone, keep_frames: bool = False) -> None:
        width = encoder.embed_dim * (encoder.spec.frames if keep_frames else 1)
        super().__init__(embed_dim=width, spec=encoder.spec, family=encoder.family)
        self.encoder = encoder
        self.keep_frames = keep_frames
        self.pooling = encoder.pooling

    def forward_features(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, T, D) frame embeddings, before pooling over frames."""
        B, C, T, H, W = clips.shape
        return self.encoder(clips.transpose(1, 2).reshape(B * T, C, H, W)).reshape(B, T, -1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        frames = self.forward_features(clips)
        return frames.reshape(frames.shape[0], -1) if self.keep_frames else frames.mean(dim=1)

    def __getattr__(self, name: str) -> Any:
        # The image encoder's own methods (e.g. EfficientNet's ``classify``) stay reachable.
        try:
            return super().__getattr__(name)
        except AttributeError:
            encoder = self.__dict__.get("_modules", {}).get("encoder")
            if encoder is None:
                raise
            return getattr(encoder, name)
