"""`vssl store info`: what a store holds, how much is done, and what it costs on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .schema import STATUS_DONE, STATUS_FAILED
from .verify import pending_videos


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


def store_summary(store) -> dict:
    status = store.video_status()
    failed_mask = status == STATUS_FAILED
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
            "incomplete": pending_videos(store),  # pending in the table or in a view (verify's count)
        },
        "groups": {},
        "bytes_on_disk": _disk_bytes(store.path),
    }
    for gpath in store.row_group_paths():
        rows = store.rows(gpath)
        done = rows.done()
        chunk_ids = np.unique(np.flatnonzero(done) // store.chunk_videos)
        on_disk = _disk_bytes(store.path / gpath)
        chunk_bytes = _disk_bytes(store.path / gpath, chunks_only=True)
        logical = _written_logical_bytes(rows.group, len(chunk_ids))
        entry = {"done": int(done.sum()), "pending": int((~done & ~failed_mask).sum()),
                 "bytes_on_disk": on_disk,
                 "compression_ratio": (logical / chunk_bytes) if chunk_bytes and logical else 1.0}
        if gpath.startswith("views/"):
            view = store.view(gpath.split("/", 1)[1])
            entry.update(num_clips=view.num_clips, dim=view.dim, dtype=str(view.dtype), spec=view.spec,
                         layout=view.layout, clips=int(view.counts()[done].sum()),
                         precision=store.view_precision(view.name))  # "": not recorded (an older store)
            if view.layout == "ragged":  # rows are stored exactly, uncompressed
                entry["compression_ratio"] = 1.0
        summary["groups"][gpath] = entry
    return summary
