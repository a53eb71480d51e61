"""Who this process is in a multi-process run and how the ranks meet.

Used by ``vssl extract`` and ``vssl aggregate`` when launched by ``torchrun`` (which sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Everything here is
a no-op for a single process, so single-GPU runs are unchanged: rank/world discovery
(:func:`rank_env`, :func:`active_world`), process-group setup and teardown
(:func:`process_group`), the few object collectives the planners need (:func:`barrier`,
:func:`broadcast_object`, :func:`gather_objects`), and the guards that stop a torchrun rank from
redoing every other rank's work (:func:`refuse_unjoined_rank`, :func:`refuse_undivided_work`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist

from vssl.errors import VsslError

# Collectives in stage one only wait at the start and the end, but the end can be hours away
# for a rank that finished its share early; NCCL's and gloo's 30-minute default would kill it.
# Stage two keeps torch's default: there a rank waiting for hours is a hung rank idling the job.
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


def _timeout(long_waits: bool) -> timedelta | None:
    """``VSSL_DIST_TIMEOUT_S`` when set; else 24 h for ``long_waits`` (extraction), else torch's default."""
    text = os.environ.get(TIMEOUT_ENV, "")
    if not text and not long_waits:
        return None
    try:
        return timedelta(seconds=float(text) if text else DEFAULT_TIMEOUT_S)
    except ValueError:
        raise VsslError(f"{TIMEOUT_ENV}={text!r}: expected seconds, e.g. 86400") from None


@contextmanager
def process_group(backend: str = "auto", device: str = "auto", long_waits: bool = False) -> Iterator[RankEnv]:
    """Join the run's process group for the duration of the block (nothing to do for one process).

    ``device`` is the run's ``--device``: on CUDA each rank takes the GPU of its ``LOCAL_RANK``.
    ``backend``: ``auto`` = NCCL when that device is a GPU, else gloo (a ``--device cpu`` run on a
    GPU machine must not get NCCL, which cannot reduce CPU tensors); ``gloo`` for runs that only
    exchange small Python objects (stage one), so no GPU memory or NCCL watchdog is involved.
    A group that is already initialized (by the caller) is used and left alone.
    ``long_waits``: ranks may wait hours in a collective (stage one's end): a 24-hour timeout
    instead of torch's default (``VSSL_DIST_TIMEOUT_S`` overrides both).
    """
    env = rank_env()
    if not env.distributed or dist.is_initialized():
        yield env
        return
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise VsslError(f"WORLD_SIZE={env.world_size} but {' and '.join(missing)} not set; launch with torchrun")
    on_gpu = rank_device_type(device) == "cuda"
    if backend == "auto":
        backend = "nccl" if on_gpu else "gloo"
    if on_gpu:  # "cuda" then means this rank's GPU, whatever the backend
        torch.cuda.set_device(rank_gpu(env))
    timeout = _timeout(long_waits)
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size,
                            **({"timeout": timeout} if timeout is not None else {}))
    try:
        yield env
    finally:
        dist.destroy_process_group()


def rank_device_type(device: str) -> str:
    """``cuda`` or ``cpu``: what ``--device`` means for a torchrun rank; refuses a pinned GPU index.

    ``cuda:N`` would put every rank on GPU N (NCCL then aborts): ranks take ``cuda`` and their
    own ``LOCAL_RANK``'s GPU instead.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = device.partition(":")
    if kind == "cuda" and index:
        raise VsslError(f"--device {device} under torchrun would put every rank on GPU {index}; use --device cuda "
                        "(each rank takes the GPU of its LOCAL_RANK; choose GPUs with CUDA_VISIBLE_DEVICES)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise VsslError(f"--device {device} requested but CUDA is not available; use --device cpu")
    return kind


def rank_gpu(env: RankEnv) -> int:
    """This rank's GPU: its LOCAL_RANK; more ranks on a node than GPUs is refused, never wrapped."""
    count = torch.cuda.device_count()
    if env.local_rank >= count:
        raise VsslError(f"LOCAL_RANK {env.local_rank} but this node has {count} GPU(s); launch at most {count} "
                        "processes per node (torchrun --nproc-per-node) or run on --device cpu")
    return env.local_rank


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
