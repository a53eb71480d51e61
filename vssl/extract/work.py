"""Extraction by claims: any number of processes share one store, none of them holding a fixed plan.

A process (a ``--shard`` task, a torchrun rank, a plain ``vssl extract``) claims a chunk of
videos by creating ``OUT.claims/<chunk>`` (:mod:`vssl.distributed.claims`: owner host, pid,
job; a dead owner's claim is taken over), re-reads that chunk's status, extracts what is left of
it and releases the claim once the chunk is written, leaving a marker (``OUT.claims/done-*/<chunk>``)
so that the others skip it with one directory listing instead of a claim and a status read. A marker
is this run's only when it is newer than the status read the plan was made from: an older one was
seen by that read, which still found work in its chunk (a second ``--retry-failed`` run, videos made
pending by ``vssl store verify --repair``), so the store decides. So two processes never write one chunk, a
chunk is never left without an owner while a process runs, a killed process's chunks go to
whoever comes next, and stragglers are absorbed: a process that finishes its share goes on with
the chunks nobody has claimed yet, from the far end of the others' shares.

The plan only orders the claims: chunks with work left are split into balanced shares by the
video sizes the store recorded at creation (:func:`plan_chunks`); process ``i`` walks share
``i`` forward, then steals from the other shares backward.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from vssl.distributed import balance_chunks, claims, file_sizes, size_weights
from vssl.distributed.planning import merge_ranges
from vssl.features_store import STATUS_DONE, STATUS_FAILED, FeatureStore

from .pipeline import views_to_do

log = logging.getLogger("vssl.extract")


def claims_dir(out: str | Path) -> Path:
    """Where the chunk claims of store ``out`` live (beside it: zarr warns about foreign folders inside)."""
    out = Path(out)
    return out.with_name(out.name + ".claims")


class WorkPlan:
    """Chunks with work left, in balanced shares, and what was already finished (for the summaries).

    Small and picklable: rank 0 makes it and broadcasts it under torchrun.
    """

    def __init__(self, shares: list[list[int]], finished_done: int, finished_failed: int, per_claim: int,
                 planned_at: float = float("inf")) -> None:
        self.shares, self.per_claim = shares, per_claim
        self.finished_done, self.finished_failed = finished_done, finished_failed
        #: the file system's time just before the status read the shares come from: finished-chunk
        #: markers older than it were seen by that read (inf: no marker is this run's)
        self.planned_at = planned_at


def store_weights(store: FeatureStore, paths: Sequence[str] | None = None) -> np.ndarray:
    """Expected cost per video from the sizes recorded at creation (a store made before sizes were
    kept: a stat of ``paths``, as before)."""
    sizes = store.sizes()
    if sizes is None:
        sizes = file_sizes(paths) if paths is not None else np.zeros(store.num_videos, np.int64)
    return size_weights(sizes)


def work_left(store: FeatureStore, views: Sequence[str], retry_failed: bool, rows: slice | None = None) -> np.ndarray:
    """Boolean per video (of ``rows``): still to extract in one of ``views``."""
    todo = views_to_do(store, views, rows).any(axis=1)
    if not retry_failed:
        todo &= store.video_status(rows) != STATUS_FAILED
    return todo


def plan_chunks(store: FeatureStore, parts: int, views: Sequence[str], retry_failed: bool = False,
                paths: Sequence[str] | None = None) -> WorkPlan:
    """Chunks with work left split in ``parts`` shares balanced by recorded video size; one status read."""
    planned_at = _claims_clock(store)  # before the read: a marker newer than this was not seen by it
    todo = work_left(store, views, retry_failed)
    status = store.video_status()
    weights = np.where(todo, store_weights(store, paths), 0.0)
    ranges = store.chunk_ranges()
    open_chunks = [c for c, (a, b) in enumerate(ranges) if todo[a:b].any()]
    balanced = balance_chunks([ranges[c] for c in open_chunks], weights, parts)
    shares = [[c for a, b in share for c in range(a // store.chunk_videos, -(-b // store.chunk_videos))]
              for share in balanced]
    finished = np.ones(store.num_videos, bool)
    for c in open_chunks:
        finished[slice(*ranges[c])] = False
    # claims of a few chunks each: a process asks for work ~8 times per share, at most 8 chunks at once
    per_claim = int(np.clip(len(open_chunks) // max(1, parts * 8), 1, 8))
    return WorkPlan(shares, int((finished & (status == STATUS_DONE)).sum()),
                    int((finished & (status == STATUS_FAILED)).sum()), per_claim, planned_at)


def _claims_clock(store: FeatureStore) -> float:
    """The file system's time in the claims folder of ``store`` (where the markers are stamped)."""
    directory = claims_dir(store.path)
    directory.mkdir(parents=True, exist_ok=True)
    return claims.fs_now(directory)


class ClaimQueue:
    """The :class:`~vssl.extract.pipeline.WorkQueue` of one process: claims chunks as the work goes."""

    def __init__(self, store: FeatureStore, views: Sequence[str], plan: WorkPlan, share: int,
                 retry_failed: bool = False, stale_s: float | None = None) -> None:
        self.store, self.views, self.plan = store, list(views), plan
        self.share, self.retry_failed, self.stale_s = share % max(1, len(plan.shares)), retry_failed, stale_s
        self.dir = claims_dir(store.path)
        self.heartbeat = claims.Heartbeat(stale_s)
        self.claimed: list[int] = []  # every chunk this process claimed (and found work in), in order
        self._planned = {c for share in plan.shares for c in share}
        self._this_run: set[int] = set()  # chunks whose markers are newer than the plan (they stay so)

    def order(self) -> list[int]:
        """Own share forward, then every other share from its far end (where its owner gets last)."""
        shares = self.plan.shares
        if not shares:
            return []
        walk = list(shares[self.share])
        for k in range(1, len(shares)):
            walk += shares[(self.share + k) % len(shares)][::-1]
        return walk

    def _path(self, c: int) -> Path:
        return self.dir / str(c)

    def _bounds(self, c: int) -> tuple[int, int]:
        cv = self.store.chunk_videos
        return c * cv, min(self.store.num_videos, (c + 1) * cv)

    def _claim(self, c: int) -> bool:
        if not claims.try_claim(self._path(c), self.stale_s, what=f"chunk {c} of {self.store.path}"):
            return False
        self.heartbeat.add(self._path(c))
        if self._has_work(c):
            return True
        self._release(c)  # finished by another process since the plan was made
        return False

    def _has_work(self, c: int) -> bool:
        """The truth, read after claiming: this chunk's status in the store."""
        return bool(work_left(self.store, self.views, self.retry_failed, slice(*self._bounds(c))).any())

    def _release(self, c: int, finished: bool = False) -> None:
        """Give chunk ``c`` back; ``finished`` (written, and still ours) leaves a marker that spares the
        others a claim and a status read of it (one listing shows every marker)."""
        self.heartbeat.discard(self._path(c))
        if finished and self.still_mine(c):
            self._done_dir().mkdir(parents=True, exist_ok=True)
            (self._done_dir() / str(c)).touch()
        claims.release(self._path(c))

    def _done_dir(self) -> Path:
        """Markers of chunks finished in this kind of run (same store, views and failure rule): only a
        hint to skip; a marker of another run's views is in another folder, and the store stays the truth."""
        # keyed by the store's creation id: markers left beside a deleted store (the claims folder is a
        # sibling) never apply to one made anew at the same path, whatever inode it gets
        key = hashlib.sha1(json.dumps([self.store.store_id, sorted(self.views), self.retry_failed]).encode()
                           ).hexdigest()[:12]
        return self.dir / f"done-{key}"

    def _finished_elsewhere(self) -> set[int]:
        """Chunks of the plan that a marker says were finished by this run: the marker is newer than the
        plan's status read. An older marker was seen by that read, which found work in its chunk anyway
        (the store is the truth): the chunk is claimed, and its status read again, as if unmarked."""
        try:
            names = os.listdir(self._done_dir())
        except OSError:
            return set(self._this_run)
        for c in (int(n) for n in names if n.isdigit()):
            if c in self._planned and c not in self._this_run and self._marked_since_plan(c):
                self._this_run.add(c)
        return set(self._this_run)

    def _marked_since_plan(self, c: int) -> bool:
        try:
            return os.stat(self._done_dir() / str(c)).st_mtime > self.plan.planned_at
        except OSError:
            return False

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        held: list[int] = []
        finished: set[int] = set()
        mine: set[int] = set()  # written by this process (its marker is only a hint to the others)
        look = True  # list the markers again after a claim that found nothing to do
        try:
            # Walk again as long as the last walk claimed something: a chunk held by another process
            # when this one passed it may have been given back unfinished since (its owner was
            # preempted or SIGTERMed). A walk that claims nothing ends it: what is left is finished,
            # or held by live owners.
            claimed_this_walk = True
            while claimed_this_walk:
                claimed_this_walk = False
                for c in self.order():
                    if look:
                        finished, look = self._finished_elsewhere(), False
                    if c in finished or c in mine or c in held:
                        continue
                    if not self._claim(c):
                        look = True
                        continue
                    claimed_this_walk = True
                    held.append(c)
                    self.claimed.append(c)
                    if len(held) == self.plan.per_claim:
                        yield merge_ranges([self._bounds(x) for x in sorted(held)])
                        for x in held:
                            self._release(x, finished=True)
                        mine |= set(held)
                        held = []
            if held:
                yield merge_ranges([self._bounds(x) for x in sorted(held)])
                for x in held:
                    self._release(x, finished=True)
                held = []
        finally:  # finished, or stopped (SIGTERM, an error): what is held goes back to the others
            for x in held:
                self._release(x)
            self.heartbeat.stop()

    def still_mine(self, chunk: int) -> bool:
        return claims.holds(self._path(chunk))

