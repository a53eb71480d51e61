"""Deprecated: the old block-scoped switch for gathering negatives (``with negatives_across_ranks():``).

Training passes its gather to the losses explicitly (:mod:`vssl.distributed.negatives`); this
module only keeps the earlier API working for callers that still wrap a loss call in the
block. The switch is a :class:`contextvars.ContextVar`, set and reset by the block, so it is
scoped to the block and the thread (or task) that entered it, never a process-wide flag.
Losses consult it only when they are given no gather.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from torch import Tensor

from vssl.distributed.negatives import Gather, key_gather
from vssl.distributed.ranks import active_world

_block_gather: ContextVar[Gather | None] = ContextVar("vssl_block_gather", default=None)


@contextmanager
def negatives_across_ranks() -> Iterator[None]:
    """Within this block, losses called without a gather gather keys across the process group."""
    token = _block_gather.set(key_gather(active_world()))
    try:
        yield
    finally:
        _block_gather.reset(token)


def block_gather() -> Gather | None:
    """The gather of the enclosing :func:`negatives_across_ranks` block (``None`` outside one)."""
    return _block_gather.get()


def gathering() -> bool:
    """True inside a :func:`negatives_across_ranks` block of a multi-process run."""
    return block_gather() is not None


def gather_keys(keys: Tensor) -> tuple[Tensor, int]:
    """(keys of every rank concatenated in rank order, row offset of this rank's keys in it).

    Differentiable; equal row counts on every rank (drop-last batches). Outside
    :func:`negatives_across_ranks`, or for one process, returns ``(keys, 0)`` untouched.
    """
    gather = block_gather()
    return (keys, 0) if gather is None else gather(keys)
