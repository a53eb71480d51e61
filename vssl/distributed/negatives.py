"""Negatives from every rank: a differentiable all-gather of InfoNCE keys.

Under DDP each rank holds a slice of the global batch. Gathering the keys of every rank lets
InfoNCE on each rank score its queries against the whole global batch, as SimCLR and MoCo v3
do, so the mean of the ranks' losses equals single-process training on the concatenated
batch. Who gathers is decided by the caller, not by state here: the training loop passes
:func:`all_gather_keys` (or ``None`` for one process) to the losses as an argument.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor

from vssl.distributed.ranks import RankEnv

#: ``keys -> (keys of every rank concatenated in rank order, row offset of this rank's keys in it)``.
#: ``None`` where a loss takes one means: this process's keys only, offset 0.
Gather = Callable[[Tensor], tuple[Tensor, int]]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each rank the gradient of its own rows, summed over ranks.

    Every rank's loss uses every rank's keys, so d(sum of losses)/d(my rows) is the sum over
    ranks of the gradient each computed for my slice; DDP then averages parameter gradients,
    which gives exactly the gradient of the mean loss over the global batch.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def all_gather_keys(keys: Tensor) -> tuple[Tensor, int]:
    """Every rank's ``keys`` concatenated in rank order, and this rank's row offset in it.

    Differentiable; needs an initialized process group and equal row counts on every rank
    (drop-last batches). Gathered in float32 (the losses score in float32 anyway): under bf16
    autocast a bf16 gather would also sum the ranks' key gradients in bf16, one rounding more
    than one process makes, and DDP would drift from one process.
    """
    return _GatherWithGrad.apply(keys.float()), dist.get_rank() * keys.shape[0]


def key_gather(world: RankEnv) -> Gather | None:
    """The gather a training loop passes to the losses: across ranks when ``world`` has several, else
    ``None`` (one process keeps its own keys, and the losses keep their single-process arithmetic)."""
    return all_gather_keys if world.distributed else None
