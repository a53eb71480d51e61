"""`vssl store info`: what a store holds, how much is done, and what it costs on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .schema import STATUS_DONE, STATUS_FAILED
from .rows import describe_error
from .verify import LostChunk, read_readable

#: what a token or layer view records beside the run's settings (``vssl extract --tokens/--layers``)
TOKEN_RECORD_KEYS = ("tokens", "token_grid", "encoder_grid", "layer")


def _disk_bytes(path: Path, chunks_only: bool = False) -> int:
    """Bytes of the files under ``path`` (only chunk files, not zarr.json, if ``chunks_only``)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            if not (chunks_only and f == "zarr.json"):
                total += os.path.getsize(os.path.join(dirpath, f))
    return total


def _written_logical_bytes(group, done_chunks: int) -> int:
    """Uncompressed size of the chunks that were written (every array of the group)."""
    total = 0
    for name in group.array_keys():
        arr = group[name]
        chunk_bytes = int(np.prod(arr.chunks)) * np.dtype(arr.dtype).itemsize
        total += chunk_bytes * done_chunks
    return total


def _clip_counts(store, view, gpath: str, lost: list[LostChunk]) -> np.ndarray:
    """Clips of every video of ``view``; a ragged chunk whose files cannot be read counts none and is lost."""
    if view.layout != "ragged":
        return view.counts()
    counts = np.zeros(store.num_videos, np.int64)
    for start, stop in store.chunk_ranges():
        try:
            counts[start:stop] = view.counts(np.arange(start, stop))
        except Exception as exc:  # noqa: BLE001 - whatever a damaged pointer raises, its chunk is unreadable
            c = start // store.chunk_videos
            file, why = view.unreadable_file(c) or (view.chunk_folder(c) / "zarr.json", describe_error(exc))
            lost.append(LostChunk(gpath, f"chunks/{c}", file, start, stop, why, folder=view.chunk_folder(c)))
    return counts


def store_summary(store) -> dict:
    """What ``vssl store info`` shows. A chunk that cannot be read back counts its videos as not done and
    is one line of ``unreadable`` (the file, its videos, the repair), as ``vssl store verify`` reports it."""
    status, lost = read_readable(store.path, store.root["videos/status"], "videos", "status")
    status = status.astype(np.int8)
    for chunk in lost:  # unreadable: neither done, failed nor pending
        status[chunk.start:chunk.stop] = -1
    failed_mask = status == STATUS_FAILED
    todo = (status != STATUS_DONE) & ~failed_mask
    summary = {
        "path": str(store.path),
        "vssl_format": store.root.attrs.get("vssl_format"),
        "vssl_version": store.root.attrs.get("vssl_version"),
        "backbone": store.backbone.to_dict(),
        "classes": store.classes,
        "num_videos": store.num_videos,
        "chunk_videos": store.chunk_videos,
        "videos": {
            "done": int((status == STATUS_DONE).sum()),
            "failed": int(failed_mask.sum()),
            "pending": int((status == 0).sum()),
            "incomplete": 0,  # pending in the table or in a view (verify's count), below
        },
        "groups": {},
        "bytes_on_disk": _disk_bytes(store.path),
    }
    for gpath in store.row_group_paths():
        rows = store.row_group(gpath)
        flags, lost_here = read_readable(store.path, rows.array("status"), gpath, "status")
        view = store.view(gpath.split("/", 1)[1]) if gpath.startswith("views/") else None
        counts = None if view is None else _clip_counts(store, view, gpath, lost_here)
        done = flags == STATUS_DONE
        for chunk in lost_here:  # rows that cannot be read are not done
            done[chunk.start:chunk.stop] = False
        lost += lost_here
        chunk_ids = np.unique(np.flatnonzero(done) // store.chunk_videos)
        on_disk = _disk_bytes(store.path / gpath)
        chunk_bytes = _disk_bytes(store.path / gpath, chunks_only=True)
        logical = _written_logical_bytes(rows.group, len(chunk_ids))
        entry = {"done": int(done.sum()), "pending": int((~done & ~failed_mask).sum()),
                 "bytes_on_disk": on_disk,
                 "compression_ratio": (logical / chunk_bytes) if chunk_bytes and logical else 1.0}
        if view is not None:
            todo |= ~done & ~failed_mask
            entry.update(num_clips=view.num_clips, dim=view.dim, clip_shape=list(view.clip_shape),
                         dtype=str(view.dtype), spec=view.spec,
                         layout=view.layout, clips=int(counts[done].sum()),
                         precision=store.view_precision(view.name))  # "": not recorded (an older store)
            # a token or layer view: its grid and block (extract --tokens/--layers), as recorded
            entry.update({k: view.record[k] for k in TOKEN_RECORD_KEYS if k in view.record})
            if view.layout == "ragged":  # rows are stored exactly, uncompressed
                entry["compression_ratio"] = 1.0
        summary["groups"][gpath] = entry
    summary["videos"]["incomplete"] = int(todo.sum())
    summary["unreadable"] = [chunk.line() for chunk in lost]
    return summary
