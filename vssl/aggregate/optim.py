"""Stage two's optimiser: AdamW over :func:`vssl.optim.param_groups`; the schedule is
:func:`vssl.optim.lr_at` (both shared with the trained probes, re-exported here)."""

from __future__ import annotations

import torch

from vssl.aggregate.config import ScaleConfig
from vssl.optim import lr_at, param_groups

__all__ = ["lr_at", "param_groups", "make_optimizer"]


def make_optimizer(model: torch.nn.Module, cfg: ScaleConfig) -> torch.optim.AdamW:
    """AdamW with the fused single-pass kernel (CPU and CUDA) where this torch has it: the update of
    10M parameters is memory-bound, and one pass instead of a dozen matters at small widths."""
    groups = param_groups(model, cfg.weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
