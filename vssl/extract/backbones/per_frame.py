"""Image encoders applied to every frame of a clip, in one place.

Image backbones (MAE/ViC-MAE ViTs, EfficientNet-Lite) embed single frames; a clip embedding
is the mean of its frame embeddings, or their concatenation in frame order when the frames are
kept (``efficientnet-lite0-frames``). The wrapper is applied by the registry's builder after the
checkpoint is loaded into the image encoder, so checkpoint names stay the encoder's own.

A clip's token grid is each frame's (a ViT's patch tokens, a conv net's last feature map) with the
frames as the time axis: ``(B, T, H, W, D)``, T = frames.
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

    @staticmethod
    def frames_of(clips: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B*T, C, H, W): the frames, clip by clip, in frame order."""
        B, C, T, H, W = clips.shape
        return clips.transpose(1, 2).reshape(B * T, C, H, W)

    def forward_features(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, T, ...): the image encoder's features of every frame, before its pooling."""
        B, T = clips.shape[0], clips.shape[2]
        return self.encoder.forward_features(self.encoder._in_memory_format(self.frames_of(clips))).unflatten(0, (B, T))

    def clip_embedding(self, frame_embeddings: torch.Tensor) -> torch.Tensor:
        """(B, T, D) frame embeddings -> the clip's: their mean, or their concatenation when frames are kept."""
        if self.keep_frames:
            return frame_embeddings.reshape(frame_embeddings.shape[0], -1)
        return frame_embeddings.mean(dim=1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        B, T = clips.shape[0], clips.shape[2]
        return self.clip_embedding(self.encoder(self.frames_of(clips)).unflatten(0, (B, T)))

    def token_grid(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) frame features -> (B, T, H, W, D): each frame's patch grid, frames as the time axis."""
        return self._clip_grid(self.encoder.token_grid(features.flatten(0, 1)), features.shape[1])

    def forward_tokens(self, clips: torch.Tensor, layers: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The image encoder's ``forward_tokens`` on every frame (one pass), frame embeddings pooled as
        :meth:`forward` does, frame grids stacked along time."""
        T = clips.shape[2]
        return [(self.clip_embedding(embedding.unflatten(0, (-1, T))), self._clip_grid(grid, T))
                for embedding, grid in self.encoder.forward_tokens(self.frames_of(clips), layers)]

    @staticmethod
    def _clip_grid(frame_grids: torch.Tensor, frames: int) -> torch.Tensor:
        """(B*T, 1, H, W, D) frame grids -> (B, T, H, W, D)."""
        return frame_grids.unflatten(0, (-1, frames)).flatten(1, 2)

    def __getattr__(self, name: str) -> Any:
        # The image encoder's own methods (e.g. EfficientNet's ``classify``) stay reachable.
        try:
            return super().__getattr__(name)
        except AttributeError:
            encoder = self.__dict__.get("_modules", {}).get("encoder")
            if encoder is None:
                raise
            return getattr(encoder, name)
