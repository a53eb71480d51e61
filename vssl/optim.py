"""Optimiser rules shared by stage two and the trained probes: the learning-rate schedule and
which parameters get weight decay. One home for both, so the probes train as SCALE trains.

Released SCALE (Separius/SCALE ``src/train.py``): ``warm_up_cosine_lr_scheduler`` (a linear ramp
over ``warmup_percentage`` of all steps, then a half-cosine to 0, stepped every iteration) and
``get_parameter_groups`` (no decay on 1-d parameters, biases and ``*_token``); ``src/eval.py``
builds its probe optimiser with the same two functions.
"""

from __future__ import annotations

import math

import torch


def lr_at(step: int, total_steps: int, base_lr: float, warmup: float) -> float:
    """Learning rate at optimiser step ``step``: linear warmup over ``warmup`` of all steps, then a
    half-cosine to 0 (as the released training script, per step)."""
    warm = warmup * total_steps
    if warm > 0 and step <= warm:
        return base_lr * step / warm
    span = max(total_steps - warm, 1e-12)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step - warm, span) / span))


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether ``param`` gets weight decay: weight matrices do; biases, norm weights (1-d) and
    learned tokens (``cls_token``, ``msk_token``, any ``*_token``) do not."""
    return not (param.ndim <= 1 or name.endswith("bias") or name.endswith("_token"))


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """Two optimiser groups of ``model``'s trainable parameters, ``[decay, no_decay]``: weight decay
    on weight matrices only (:func:`decays`). With ``lr``, both groups carry it (one model among
    several in one optimiser, each with its own rate)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if decays(name, p) else no_decay).append(p)
    extra = {} if lr is None else {"lr": lr}
    return [{"params": decay, "weight_decay": weight_decay, **extra},
            {"params": no_decay, "weight_decay": 0.0, **extra}]
