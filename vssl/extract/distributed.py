"""Stage one on many processes: torchrun ranks, ``--shard i/n`` tasks and plain processes share one store.

Every process claims chunks of the store as it goes (:mod:`vssl.extract.work`): a claim file per
chunk with its owner (host, pid, job), taken over when the owner is dead, so any number of
processes (array tasks started at any time, ranks, a second ``vssl extract`` on the same store)
divide the work without a plan they must agree on, and a killed process loses at most the
chunks it held. The plan (balanced shares by the sizes recorded in the store) only orders the
claims: process ``i`` of ``n`` starts with share ``i``.

Creation: the first process to claim ``OUT.creating`` (:mod:`vssl.distributed.claims`) creates the
store and its views; the others wait, at most :data:`CREATION_WAIT_S`, and take the lock over if
its owner died (a SIGTERMed creator releases it on its way out). Creation is atomic anyway (a
staging directory renamed into place), so the lock only spares the others redundant work.

Under torchrun rank 0 creates the store (the others wait at a barrier), hashes the checkpoint
once (broadcast to the others), plans from the stored sizes and broadcasts the plan; at the end
every rank verifies its own share of the chunks and rank 0 the video table.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence


from vssl.distributed import balance_chunks, broadcast_object, claims, gather_objects, process_group, rank_env
from vssl.errors import VsslError
from vssl.features_store import FeatureStore, verify_store
from vssl.features_store.verify import incomplete_line, pending_videos
from vssl.hashing import known_hashes, remember_hashes

from .config import ExtractConfig
from .pipeline import ExtractSummary, extract, parse_shard
from .work import ClaimQueue, WorkPlan, plan_chunks, store_weights, work_left

log = logging.getLogger("vssl.extract")


def plan_shares(store: FeatureStore, paths: Sequence[str], parts: int, views: Sequence[str] | None = None,
                retry_failed: bool = False) -> list[list[tuple[int, int]]]:
    """Whole-chunk video ranges per part, balanced by the video sizes recorded in the store (a stat of
    ``paths`` for a store made before sizes were kept).

    With ``views``, videos already done in all of them (or failed, unless ``retry_failed``)
    weigh nothing, so a resumed run balances the work that is left.
    """
    weights = store_weights(store, paths)
    if views:
        weights[~work_left(store, views, retry_failed)] = 0.0
    return balance_chunks(store.chunk_ranges(), weights, parts)


#: how long a process waits for a live creator before creating the store itself (atomic anyway); a
#: creator stats every file of the dataset, minutes on a network file system at a million videos
CREATION_WAIT_S = 3600.0
#: the creation locks this process holds, each kept fresh by a heartbeat: a long creation must not
#: look dead to processes on other hosts (claims.stale_after)
_HEARTBEATS: dict[Path, claims.Heartbeat] = {}


def _claim_creation(out: Path, poll_s: float = 2.0, wait_s: float | None = None) -> Path | None:
    """Serialize store creation between independent processes (job-array tasks start together).

    Returns the lock (``OUT.creating``) when this process is to create the store, None when the
    store exists (or the wait is over: creation is atomic, so creating it concurrently is safe).
    A lock whose owner died is taken over; the wait is bounded.
    """
    lock = _lock_path(out)
    deadline = time.monotonic() + (CREATION_WAIT_S if wait_s is None else wait_s)
    warned = False
    while not FeatureStore.exists(out):
        if claims.try_claim(lock, what=f"the creation of {out}"):
            if FeatureStore.exists(out):  # created between our look and our claim
                claims.release(lock)
                return None
            _HEARTBEATS[lock] = beat = claims.Heartbeat()
            beat.add(lock)
            return lock
        if time.monotonic() > deadline:
            log.warning("%s is still held by %s; going on (store creation is atomic)", lock,
                        claims.describe_owner(lock))
            return None
        if not warned:
            log.warning("waiting for %s to be created by another process (%s)", out, claims.describe_owner(lock))
            warned = True
        time.sleep(poll_s)
    return None


def _lock_path(out: Path) -> Path:
    return out.with_name(out.name + ".creating")


def _release(lock: Path | None) -> None:
    if lock is not None:
        beat = _HEARTBEATS.pop(lock, None)
        if beat is not None:
            beat.stop()
        claims.release(lock)


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
    """:func:`~vssl.extract.pipeline.extract` as one rank of torchrun, one ``shard``, or alone, by claims.

    Returns ``(summary, problems)``: under torchrun, rank 0 gets the summary of all ranks and
    ``verify_store``'s problems (``[]`` = consistent; "incomplete: N videos pending" when chunks
    were left undone); other ranks get their own summary and ``None``. A shard or a single
    process gets its own summary and ``None``; its summary counts the videos finished before
    (``skipped_*``) only for share 0, so the shards' summaries add up to the store.
    """
    env = rank_env()
    cfg = kwargs.get("config") or ExtractConfig()
    retry_failed = kwargs.get("retry_failed", cfg.retry_failed)
    if shard is not None and env.distributed:
        raise VsslError("--shard and torchrun both divide the work; use one of them")
    with claims.sigterm_unwinds():
        if not env.distributed:
            i, n = (parse_shard(shard) if isinstance(shard, str) else shard) if shard is not None else (0, 1)
            creating = _claim_creation(Path(out))
            made: list[WorkPlan] = []

            def shard_plan(store: FeatureStore, views: list[str], paths: list[str]) -> ClaimQueue:
                _release(creating)  # store and views exist: waiting processes may open them
                made.append(plan_chunks(store, n, views, retry_failed, paths))
                return ClaimQueue(store, views, made[0], i, retry_failed)

            try:
                summary = extract(videos, out, ranges=shard_plan, progress=progress, **kwargs)
                return _finished_before(summary, i, made), None
            finally:
                _release(creating)
        return _extract_ranks(videos, out, progress, verify, retry_failed, kwargs.get("device", cfg.device), kwargs)


def _finished_before(summary: ExtractSummary, share: int, made: list[WorkPlan]) -> ExtractSummary:
    """Count the videos of chunks finished before this run (never claimed) in share 0's summary."""
    if share == 0 and made:
        summary.skipped_done += made[0].finished_done
        summary.skipped_failed += made[0].finished_failed
        summary.assigned += made[0].finished_done + made[0].finished_failed
    return summary


def _extract_ranks(videos: Any, out: str | Path, progress: bool, verify: bool, retry_failed: bool, device: str,
                   kwargs: dict[str, Any]) -> tuple[ExtractSummary, list[str] | None]:
    """One torchrun rank: rank 0 creates, hashes, plans; everybody claims; each verifies its share."""
    with process_group("gloo", device=device, long_waits=True) as env:
        made: list[WorkPlan] = []

        def rank_plan(store: FeatureStore, views: list[str], paths: list[str]) -> ClaimQueue:
            plan = None
            if env.is_main:
                _release(creating)
                broadcast_object(known_hashes())  # the store and its views exist; the checkpoint's hash
                plan = plan_chunks(store, env.world_size, views, retry_failed, paths)
            made.append(broadcast_object(plan))
            return ClaimQueue(store, views, made[0], env.rank, retry_failed)

        creating = _claim_creation(Path(out)) if env.is_main else None
        try:
            if not env.is_main:
                remember_hashes(broadcast_object(None))  # wait for rank 0 to create the store; hash once
            mine = _finished_before(extract(videos, out, ranges=rank_plan, progress=progress and env.is_main,
                                            **kwargs), env.rank, made)
        finally:
            _release(creating)
        everyone = gather_objects(mine)  # also the barrier: every chunk is written
        problems = None
        if verify:  # each rank reads its own share of the chunks; rank 0 the video table
            store = FeatureStore.open(out)
            problems = verify_store(store, store.chunk_ranges((env.rank, env.world_size)), table=env.is_main)
        found = gather_objects(problems)
        if not env.is_main:
            return mine, None
        if not verify:
            return combine(everyone), []
        problems = [p for part in found for p in part]
        pending = pending_videos(FeatureStore.open(out))
        return combine(everyone), problems + ([incomplete_line(pending)] if pending else [])
