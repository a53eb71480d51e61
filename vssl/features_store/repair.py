"""`vssl store verify --repair`: the videos of lost chunks become pending, for their command to redo.

A chunk file that cannot be read back (:class:`~vssl.features_store.verify.LostChunk`: truncated,
corrupt, or missing under rows marked done) holds rows that are gone; what is left to do is to say
so in the store, the one truth every stage reads. The damaged file is moved out of the store (to
``STORE.unreadable/<time>/``, keeping its path: nothing is deleted), so that its rows read as never
written and a writer rewriting part of the chunk no longer trips on it; then the chunk's videos are
marked pending where they were lost: in the view or aggregate (its done flags), or, for a video
table column extraction writes, in the video table (every view of those videos is redone). Run
again, the command that wrote them (the same ``vssl extract``, or ``vssl aggregate --export``)
finds them pending and writes them; finished-chunk markers of earlier runs do not hide them
(:mod:`vssl.extract.work`). Like any change to a store's files, a repair is made while no process
writes the store.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from .store import FeatureStore
from .verify import TABLE_EXTRACTED, TABLE_WEIGHTS, LostChunk, video_span


def repair_store(store: FeatureStore, lost: Sequence[LostChunk]) -> list[str]:
    """Make the videos of the repairable ``lost`` chunks pending; one line per chunk repaired.

    Every damaged file is moved aside first: marking a group's videos pending reads its done flags,
    which may be among them. A lost table column that only the inputs hold is left as it is.
    """
    when = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"  # a repair never overwrites an earlier one's
    aside = store.path.with_name(f"{store.path.name}.unreadable") / when
    repairable = [chunk for chunk in lost if chunk.repairable]
    # a ragged chunk's folder goes whole, even when its rows are missing: its pointer names them
    moved = {id(chunk): _move_aside(store.path, chunk.folder or chunk.file, aside)
             for chunk in repairable if chunk.folder is not None or not chunk.missing}
    lines = []
    for chunk in repairable:
        _make_pending(store, chunk)
        where = f"{chunk.folder or chunk.file} moved to {moved[id(chunk)]}; " if id(chunk) in moved else ""
        if chunk.group == "videos" and chunk.array in TABLE_WEIGHTS:
            lines.append(f"videos/{chunk.array}: {where}planning weighs these videos alike")
        else:
            lines.append(f"{chunk.group}/{chunk.array}: {where}{video_span(chunk.start, chunk.stop)} made pending; "
                         f"the same `{chunk.redo_command()}` command redoes them")
    return lines


def _move_aside(root: Path, relative: Path, aside: Path) -> Path:
    """Move ``root/relative`` (a file or a ragged chunk's folder) to ``aside/relative``; returns where it went."""
    target = aside / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(root / relative, target)
    return target


def _make_pending(store: FeatureStore, chunk: LostChunk) -> None:
    """Mark the chunk's videos pending where its rows were lost (a done-flag chunk moved aside already
    reads as all pending; the file sizes are only planning weights)."""
    if chunk.group == "videos":
        if chunk.array in TABLE_EXTRACTED:
            store.mark_pending(chunk.start, chunk.stop)
        return
    if chunk.array != "status":
        videos = np.arange(chunk.start, chunk.stop)
        store.row_group(chunk.group).mark(videos, np.zeros(videos.size, bool))
