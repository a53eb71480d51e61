"""Set sampling (SCALE §3.2): two disjoint random clip sets per video, some clips masked.

Everything is one batched tensor op on the device (no per-video Python work). Because each
set is a uniformly random ordering of its clips and the transformer has no positional
order (only box embeddings), masking the first ``num_masked`` positions of every set is a
uniformly random choice of masked clips; this keeps the masked clips at fixed positions,
so the model can gather exactly them with static shapes.
"""

from __future__ import annotations

import numpy as np
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


def set_lengths(counts, set_size: int):
    """Real clips per set of each video of a ragged view: ``min(set_size, count // 2)``, so a video
    with fewer than ``2 x set_size`` clips gives two shorter disjoint sets (padded to ``set_size``)."""
    return np.minimum(set_size, np.asarray(counts, dtype=np.int64) // 2)


def sample_ragged_sets(counts: Tensor, set_size: int, *, generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Two disjoint random sets per video drawn from that video's own ``counts[i]`` clips.

    Returns clip indices ``[B, 2, set_size]`` (within each video) and ``valid [B, 2, set_size]``:
    set j of video i holds its first ``min(set_size, counts[i] // 2)`` positions, the rest is
    padding (index 0, never read as a clip). Like :func:`sample_sets` it takes a random
    permutation of each video's clips (noise over the batch's widest video; padding noise sorts
    last), so a batch whose videos all have K clips draws exactly the sets :func:`sample_sets` draws.
    """
    width = int(counts.max())                     # counts live on the host: no device sync
    counts = counts.to(device)
    noise = torch.rand(counts.shape[0], width, generator=generator, device=device)
    positions = torch.arange(width, device=device)
    noise = torch.where(positions[None, :] < counts[:, None], noise, torch.full_like(noise, 2.0))
    order = noise.argsort(dim=1)
    length = torch.clamp(torch.minimum(counts // 2, torch.tensor(set_size, device=device)), min=0)
    slot = torch.arange(set_size, device=device)
    valid = slot[None, :] < length[:, None]                                       # [B, S]
    starts = torch.stack((torch.zeros_like(length), length), dim=1)               # set two follows set one
    take = (starts[:, :, None] + slot[None, None, :]).clamp(max=width - 1)        # [B, 2, S]
    idx = order.gather(1, take.reshape(len(counts), -1)).view(len(counts), 2, set_size)
    valid = valid[:, None, :].expand(-1, 2, -1)
    return torch.where(valid, idx, torch.zeros_like(idx)), valid
