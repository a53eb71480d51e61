"""Stage one on many processes: torchrun ranks or ``--shard i/n`` tasks share one store.

Under torchrun (``WORLD_SIZE`` > 1): rank 0 creates the store and its views while the other
ranks wait at a barrier; rank 0 then plans which whole chunks each rank extracts, balanced by
the expected cost of the videos still to do (:func:`vssl.distributed.video_weights`), and
broadcasts the plan; every rank extracts its chunks into the one store (writers own disjoint
chunks, DESIGN.md); the summaries meet at rank 0, which verifies the store. A killed rank
loses at most its unfinished chunks: re-running the same command re-plans what is left.

``--shard i/n`` (no process group, e.g. SLURM job arrays) plans from file sizes alone, so
every task computes the same split without talking to the others, whenever it starts.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence


from vssl.distributed import (balance_chunks, barrier, broadcast_object, gather_objects, process_group, rank_env,
                              video_weights)
from vssl.errors import VsslError
from vssl.features_store import STATUS_FAILED, FeatureStore, verify_store

from .config import ExtractConfig
from .pipeline import ExtractSummary, extract, parse_shard, views_to_do

log = logging.getLogger("vssl.extract")


def plan_shares(store: FeatureStore, paths: Sequence[str], parts: int, views: Sequence[str] | None = None,
                retry_failed: bool = False) -> list[list[tuple[int, int]]]:
    """Whole-chunk video ranges per part, balanced by file size.

    With ``views``, videos already done in all of them (or failed, unless ``retry_failed``)
    weigh nothing, so a resumed run balances the work that is left; without, the plan depends
    only on the files, as independent shards need.
    """
    weights = video_weights(paths)
    if views:
        done = ~views_to_do(store, views).any(axis=1)
        if not retry_failed:
            done |= store.video_status() == STATUS_FAILED
        weights[done] = 0.0
    return balance_chunks(store.chunk_ranges(), weights, parts)


def _claim_creation(out: Path, poll_s: float = 2.0) -> Path | None:
    """Serialize store creation between independent shards (job-array tasks start together).

    The first shard to make the directory ``OUT.creating`` (``mkdir`` is atomic) creates the
    store and removes it once the store and views exist; the others wait for that, so no shard
    opens a store whose video table is half written. Returns the claimed directory, or None.
    """
    if FeatureStore.exists(out) and not _lock_path(out).exists():
        return None
    lock = _lock_path(out)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.mkdir()
        return lock
    except FileExistsError:
        log.warning("waiting for %s to be created by another shard (remove %s if none is running)", out, lock)
        while lock.exists():
            time.sleep(poll_s)
        return None


def _lock_path(out: Path) -> Path:
    return out.with_name(out.name + ".creating")


def combine(summaries: Sequence[ExtractSummary]) -> ExtractSummary:
    """One summary for the whole store from every rank's (wall time: the slowest rank)."""
    first = summaries[0]
    total = ExtractSummary(first.store, first.num_videos, list(first.views))
    for s in summaries:
        for name in ("assigned", "processed", "done", "failed", "skipped_done", "skipped_failed", "clips"):
            setattr(total, name, getattr(total, name) + getattr(s, name))
        total.failures.extend(s.failures)
        total.skipped_files = s.skipped_files  # every rank scanned the same folder
        total.seconds = max(total.seconds, s.seconds)
    return total


def extract_shared(videos: Any, out: str | Path, *, shard: tuple[int, int] | str | None = None,
                   progress: bool = True, verify: bool = True,
                   **kwargs: Any) -> tuple[ExtractSummary, list[str] | None]:
    """:func:`~vssl.extract.pipeline.extract` as one rank of torchrun, one ``shard``, or alone.

    Returns ``(summary, problems)``: under torchrun, rank 0 gets the summary of all ranks and
    ``verify_store``'s problems (``[]`` = consistent); other ranks get their own summary and
    ``None``. A shard or a single process gets its own summary and ``None``.
    """
    env = rank_env()
    retry_failed = kwargs.get("retry_failed", (kwargs.get("config") or ExtractConfig()).retry_failed)
    if shard is not None and env.distributed:
        raise VsslError("--shard and torchrun both divide the work; use one of them")
    if not env.distributed:
        if shard is None:
            return extract(videos, out, progress=progress, **kwargs), None
        i, n = parse_shard(shard) if isinstance(shard, str) else shard
        creating = _claim_creation(Path(out))

        def shard_plan(store: FeatureStore, views: list[str], paths: list[str]) -> list[tuple[int, int]]:
            if creating:
                creating.rmdir()  # store and views exist: waiting shards may open them
            return plan_shares(store, paths, n)[i]

        try:
            return extract(videos, out, ranges=shard_plan, progress=progress, **kwargs), None
        finally:
            if creating and creating.exists():
                creating.rmdir()

    device = kwargs.get("device", (kwargs.get("config") or ExtractConfig()).device)
    with process_group("gloo", device=device) as env:
        def rank_plan(store: FeatureStore, views: list[str], paths: list[str]) -> list[tuple[int, int]]:
            shares = None
            if env.is_main:
                barrier()  # the store and its views exist: the other ranks may open them
                shares = plan_shares(store, paths, env.world_size, views, retry_failed)
            shares = broadcast_object(shares)
            return shares[env.rank]

        if not env.is_main:
            barrier()  # wait for rank 0 to create the store
        mine = extract(videos, out, ranges=rank_plan, progress=progress and env.is_main, **kwargs)
        everyone = gather_objects(mine)  # also the final barrier: every chunk is written
        if not env.is_main:
            return mine, None
        return combine(everyone), verify_store(FeatureStore.open(out)) if verify else []
