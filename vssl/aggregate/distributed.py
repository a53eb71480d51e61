"""Stage two across ranks: DistributedDataParallel over the single-process training design.

Every rank holds the whole view (resident or streamed, :mod:`vssl.aggregate.data`) and draws
the same global permutation, global batches and clip sets from the run's seed; rank r trains
on rows ``[r*b, (r+1)*b)`` of each global batch of ``b * world`` videos (``--batch-size`` is
per rank). InfoNCE keys are gathered from every rank with gradient
(:func:`vssl.distributed.all_gather_keys`, handed to the losses by :meth:`TrainingRanks.objective`),
so each rank's loss is its share of the single-process loss on the global batch and DDP's
averaged gradients are that loss's gradient: one process with ``--batch-size b*world`` and
``world`` processes with ``b`` follow the same trajectory (up to float summation order, and
dropout masks, which are drawn per rank).
Only rank 0 writes checkpoints and metrics and shows progress.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from vssl.distributed import Gather, RankEnv, active_world, gather_objects, key_gather, refuse_unjoined_rank
from vssl.errors import VsslError


class _PretrainObjective(nn.Module):
    """``model.set_losses`` with the ranks' key gather, as a ``forward`` so DDP sees (and syncs) it."""

    def __init__(self, model: nn.Module, gather: Gather | None) -> None:
        super().__init__()
        self.model = model
        self.gather = gather

    def forward(self, *args) -> dict[str, Tensor]:
        return self.model.set_losses(*args, gather=self.gather)


class TrainingRanks:
    """What the training loop asks about the ranks; every method is the identity for one process.

    Not a model wrapper like torch's ``DataParallel``: it holds the rank layout and wraps the
    objective in :class:`~torch.nn.parallel.DistributedDataParallel` only under torchrun."""

    def __init__(self, world: RankEnv | None = None) -> None:
        if world is None:
            refuse_unjoined_rank("training")
        self.env = world or active_world()
        self.rank, self.world = self.env.rank, self.env.world_size
        self.is_main = self.env.is_main
        self.gather = key_gather(self.env)  # every rank's InfoNCE keys are negatives (None: one process)

    def device(self, device: torch.device) -> torch.device:
        """This rank's GPU (``LOCAL_RANK``) when training on CUDA under torchrun."""
        if self.world > 1 and device.type == "cuda" and device.index is None:
            return torch.device("cuda", torch.cuda.current_device())  # set from LOCAL_RANK by process_group
        return device

    def local(self, x: Tensor) -> Tensor:
        """This rank's equal slice of a global-batch tensor (dim 0)."""
        if self.world == 1:
            return x
        n = x.shape[0] // self.world
        return x[self.rank * n:(self.rank + 1) * n]

    def seed(self, seed: int) -> int:
        """A per-rank variant of ``seed`` (dropout masks differ across ranks, as across videos)."""
        return seed + self.rank

    def objective(self, model: nn.Module):
        """The callable computing the losses: ``model.set_losses`` alone (fixed and ragged views
        alike), or across ranks DDP-wrapped with :attr:`gather` passed in, so every rank's keys are
        negatives (and no ambient switch is set)."""
        if self.world == 1:
            return model.set_losses
        device = next(model.parameters()).device
        # the model has no buffers; rank 0's parameters are broadcast once, at wrapping
        return DistributedDataParallel(_PretrainObjective(model, self.gather), device_ids=[device.index]
                                       if device.type == "cuda" else None)

    def mean(self, sums: Tensor) -> Tensor:
        """Element-wise mean over ranks (metrics of equal-sized shares)."""
        if self.world > 1:
            dist.all_reduce(sums)
            sums /= self.world
        return sums

    def check_same_start(self, run_dir, epoch: int) -> None:
        """Refuse to start when ranks read different checkpoints (e.g. --out not on a shared file system)."""
        if self.world == 1:
            return
        seen = gather_objects(epoch)
        if len(set(seen)) > 1:
            raise VsslError(f"ranks see different checkpoints in {run_dir} (epochs {seen} by rank); put --out on "
                            "a file system every rank sees, or start a new --out")

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def any(self, flag: Tensor) -> bool:
        """True when ``flag`` is set on any rank (every rank stops together on a NaN loss)."""
        if self.world == 1:
            return bool(flag)
        f = flag.detach().to(torch.int32).reshape(1).clone()
        dist.all_reduce(f, op=dist.ReduceOp.MAX)
        return bool(f.item())


#: the former name (it read as torch's ``nn.DataParallel``); kept for code written against it
DataParallel = TrainingRanks
