"""Multi-process runs: who this process is, how ranks meet, how work and negatives are shared.

Used by ``vssl extract`` and ``vssl aggregate`` when launched by ``torchrun`` (which sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), and by
``--shard i/n`` (SLURM job arrays: no process group, each task plans the same split alone).
Everything here is a no-op for a single process, so single-GPU runs are unchanged.

Three jobs:

- rank/world discovery and process-group setup/teardown (:func:`rank_env`, :func:`process_group`);
- splitting a store's chunks between ranks with balanced work (:func:`balance_chunks`,
  :func:`video_weights`): a chunk is the unit a writer owns (DESIGN.md), so shares are lists
  of whole chunks, never partial ones;
- a differentiable all-gather (:func:`gather_keys`) so InfoNCE on each rank scores its
  queries against the keys of *every* rank, as SimCLR and MoCo v3 do, and the loss equals
  single-process training on the concatenated (global) batch.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from vssl.errors import VsslError

# Collectives in stage one only wait at the start and the end, but the end can be hours away
# for a rank that finished its share early; NCCL's and gloo's 30-minute default would kill it.
DEFAULT_TIMEOUT_S = 24 * 3600
TIMEOUT_ENV = "VSSL_DIST_TIMEOUT_S"


@dataclass(frozen=True)
class RankEnv:
    """This process's place in a multi-process run (rank 0 of 1 when launched alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_env(environ: dict[str, str] | None = None) -> RankEnv:
    """Rank, world size and local rank from torchrun's environment variables (absent: one process)."""
    e = os.environ if environ is None else environ
    try:
        world = int(e.get("WORLD_SIZE", "1"))
        rank = int(e.get("RANK", "0"))
        local = int(e.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise VsslError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise VsslError(f"RANK={rank} WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE; launch with torchrun")
    return RankEnv(rank, world, local)


def _timeout() -> timedelta:
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        return timedelta(seconds=float(text) if text else DEFAULT_TIMEOUT_S)
    except ValueError:
        raise VsslError(f"{TIMEOUT_ENV}={text!r}: expected seconds, e.g. 86400") from None


@contextmanager
def process_group(backend: str = "auto") -> Iterator[RankEnv]:
    """Join the run's process group for the duration of the block (nothing to do for one process).

    ``backend``: ``auto`` = NCCL when CUDA is present, else gloo; ``gloo`` for runs that only
    exchange small Python objects (stage one), so no GPU memory or NCCL watchdog is involved.
    A group that is already initialized (by the caller) is used and left alone.
    """
    env = rank_env()
    if not env.distributed or dist.is_initialized():
        yield env
        return
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise VsslError(f"WORLD_SIZE={env.world_size} but {' and '.join(missing)} not set; launch with torchrun")
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():  # "cuda" (device auto) then means this rank's GPU, whatever the backend
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size, timeout=_timeout())
    try:
        yield env
    finally:
        dist.destroy_process_group()


def active_world() -> RankEnv:
    """The initialized process group's rank and size (one process when none is initialized)."""
    if dist.is_available() and dist.is_initialized():
        return RankEnv(dist.get_rank(), dist.get_world_size(), rank_env().local_rank)
    return RankEnv()


def refuse_unjoined_rank(what: str) -> None:
    """Raise when torchrun started this process but it has not joined the process group: it would
    redo (and overwrite) every other rank's work instead of its share."""
    env = rank_env()
    if env.distributed and not (dist.is_available() and dist.is_initialized()):
        raise VsslError(f"{what} was started by torchrun (WORLD_SIZE={env.world_size}) outside a process group; "
                        "use the `vssl` command, or call it inside `with vssl.distributed.process_group():`")


def barrier() -> None:
    if active_world().distributed:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; for small plans and summaries)."""
    if not active_world().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    world = active_world()
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


def refuse_undivided_work(what: str, fix: str) -> None:
    """Raise under torchrun when a call would do every rank's work on each rank (and rewrite it)."""
    env = rank_env()
    if env.distributed:
        raise VsslError(f"{what} on rank {env.rank} of {env.world_size} without a share of the work; {fix}")


# ---------------------------------------------------------------- dividing stage one's work


def video_weights(paths: Sequence[str]) -> np.ndarray:
    """Expected extraction cost of each video, from its file size (a stat, no decoding).

    One unit per video for the fixed part (K clips through the backbone, whatever the
    length) plus one unit for decoding a video of the mean size, scaled by size: decoding
    (the demux pass and the frames around each clip) grows with the file. File size is used
    rather than a container probe because a stat costs microseconds on any file system while
    opening 240k containers costs minutes, and because header durations/frame counts lie on
    real files (see :mod:`vssl.extract.decode`). Missing files weigh one unit (they fail fast).
    """
    sizes = np.zeros(len(paths), dtype=np.float64)
    for i, p in enumerate(paths):
        try:
            sizes[i] = os.stat(p).st_size
        except OSError:
            sizes[i] = 0.0
    mean = sizes[sizes > 0].mean() if (sizes > 0).any() else 1.0
    return 1.0 + sizes / mean


def balance_chunks(chunks: Sequence[tuple[int, int]], weights: np.ndarray, parts: int) -> list[list[tuple[int, int]]]:
    """Split whole chunks between ``parts`` ranks so their summed weights are as even as possible.

    Greedy longest-processing-time: the heaviest chunk goes to the least-loaded part (ties to
    the lower rank), within 4/3 of the optimum. Deterministic, so every shard of a job array
    computes the same plan alone. Each part's chunks come back sorted, adjacent ones merged.
    """
    if parts < 1:
        raise VsslError(f"cannot split work into {parts} parts")
    cost = [float(weights[start:stop].sum()) for start, stop in chunks]
    order = sorted(range(len(chunks)), key=lambda c: (-cost[c], chunks[c][0]))
    load = [0.0] * parts
    owned: list[list[tuple[int, int]]] = [[] for _ in range(parts)]
    for c in order:
        p = min(range(parts), key=lambda r: (load[r], r))
        load[p] += cost[c]
        owned[p].append(chunks[c])
    return [_merge(sorted(o)) for o in owned]


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, stop in ranges:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out


# ---------------------------------------------------------------- negatives across ranks


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


_gathering = False


@contextmanager
def negatives_across_ranks() -> Iterator[None]:
    """Within this block, :func:`gather_keys` gathers across the process group (DDP training)."""
    global _gathering
    before, _gathering = _gathering, active_world().distributed
    try:
        yield
    finally:
        _gathering = before


def gathering() -> bool:
    return _gathering


def gather_keys(keys: Tensor) -> tuple[Tensor, int]:
    """(keys of every rank concatenated in rank order, row offset of this rank's keys in it).

    Differentiable; equal row counts on every rank (drop-last batches). Outside
    :func:`negatives_across_ranks`, or for one process, returns ``(keys, 0)`` untouched.
    """
    if not _gathering:
        return keys, 0
    return _GatherWithGrad.apply(keys), dist.get_rank() * keys.shape[0]
