"""Set sampling (SCALE §3.2): two disjoint random clip sets per video, some clips masked.

Everything is one batched tensor op on the device (no per-video Python work). Because each
set is a uniformly random ordering of its clips and the transformer has no positional
order (only box embeddings), masking the first ``num_masked`` positions of every set is a
uniformly random choice of masked clips; this keeps the masked clips at fixed positions,
so the model can gather exactly them with static shapes.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sample_sets(batch_size: int, num_clips: int, set_size: int, *, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Tensor:
    """Clip indices ``[B, 2, set_size]``: per video a random permutation of its ``num_clips`` clips,
    the first ``set_size`` form set one and the next ``set_size`` set two (disjoint by construction)."""
    if 2 * set_size > num_clips:
        raise ValueError(f"two sets of {set_size} need {2 * set_size} clips, the view has {num_clips}")
    noise = torch.rand(batch_size, num_clips, generator=generator, device=device)
    order = noise.argsort(dim=1)[:, : 2 * set_size]
    return order.view(batch_size, 2, set_size)


def mask_of(set_size: int, num_masked: int, device: torch.device | str = "cpu") -> Tensor:
    """Boolean mask ``[set_size]`` (True = replaced by MSK) matching :func:`sample_sets`' convention."""
    return torch.arange(set_size, device=device) < num_masked
