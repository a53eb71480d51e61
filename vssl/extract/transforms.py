"""Pixel work on a clip: crop + resize + mirror on uint8 frames, then normalization.

Split in two on purpose: workers do the crop/resize (CPU, uint8 out, 4x less to ship
between processes and to the GPU than float), the main process normalizes each batch on
the model's device. The result is what every backbone expects (``Backbone`` contract):
float ``(B, C, T, H, W)`` with values ``(x / 255 - mean) / std`` per RGB channel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def crop_resize(frames: Sequence[np.ndarray] | np.ndarray, crop: tuple[int, int, int, int], size: int,
                flip: bool = False) -> torch.Tensor:
    """Cut ``crop`` = (y0, x0, h, w) from each ``H x W x 3`` uint8 frame, resize to ``size`` x ``size``.

    Bilinear with antialiasing (so downscaling 720p to 224 does not alias), rounded back to
    uint8; mirrored left-right when ``flip``. Returns uint8 ``(3, T, size, size)``.
    """
    y0, x0, h, w = crop
    patch = torch.from_numpy(np.stack([np.asarray(f)[y0:y0 + h, x0:x0 + w] for f in frames]))  # T,h,w,3
    x = patch.permute(0, 3, 1, 2)  # T,3,h,w
    if (h, w) != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    if flip:
        x = x.flip(-1)
    return x.permute(1, 0, 2, 3).contiguous()


def normalize(clips: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``(..., 3, T, H, W)`` → ``dtype`` with ``(x / 255 - mean) / std`` per channel."""
    shape = (3, 1, 1, 1)
    m = torch.tensor(mean, dtype=torch.float32, device=clips.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=clips.device).view(shape)
    return ((clips.float() / 255.0 - m) / s).to(dtype)
