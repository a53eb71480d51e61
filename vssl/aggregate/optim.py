"""Stage two's optimiser and learning-rate schedule: AdamW, linear warmup then per-step cosine."""

from __future__ import annotations

import math

import torch

from vssl.aggregate.config import ScaleConfig


def lr_at(step: int, total_steps: int, base_lr: float, warmup: float) -> float:
    """Learning rate at optimiser step ``step``: linear warmup over ``warmup`` of all steps, then a
    half-cosine to 0 (as the released training script, per step)."""
    warm = warmup * total_steps
    if warm > 0 and step <= warm:
        return base_lr * step / warm
    span = max(total_steps - warm, 1e-12)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step - warm, span) / span))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weight matrices only, none on biases, norms and tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith("bias") or name.endswith("_token") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: ScaleConfig) -> torch.optim.AdamW:
    """AdamW with the fused single-pass kernel (CPU and CUDA) where this torch has it: the update of
    10M parameters is memory-bound, and one pass instead of a dozen matters at small widths."""
    groups = param_groups(model, cfg.weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
