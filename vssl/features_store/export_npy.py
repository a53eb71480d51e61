"""`vssl store export --format npy`: one ``[num_clips, D]`` float32 ``.npy`` per video, for other tools.

The layout temporal action localisation code reads (ActionFormer's ``feat_folder``, VideoMAE V2's
TAD features): a file per video named after the video's file stem, in a folder tree mirroring the
videos' (``class/clip.mp4`` → ``DIR/class/clip.npy``), plus ``index.csv`` with one row per file:
the video's path in the store, the file, its clip count and the seconds between clip starts
(``dense:S`` views: S; empty for views whose clips are not evenly spaced in time).

Folders mirror the paths the store records, which are relative to the input root (the folder
given to ``vssl extract``, or the manifest's folder); absolute paths and paths leaving that root
(``..``) are taken relative to their common folder instead.

Only usable videos (done, not failed: :meth:`FeatureStore.usable`) are written. The export is
resumable and idempotent: ``DIR/vssl-export.json`` records the store and view, every file is
written to a temporary name and renamed (so a killed export never leaves half a file, and a
failed write, a full disk say, leaves nothing of it), a file already there is kept only when it
holds the video's rows as the store has them now (compared bit for bit: a re-extracted video's
file is rewritten even when its shape did not change), the file of a video no longer usable is
removed, and ``index.csv`` is written last. A non-empty ``DIR`` that is not an export of the
same store and view is refused.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from vssl.errors import StoreError, working_on

from .store import FeatureStore

MARKER = "vssl-export.json"
INDEX = "index.csv"
INDEX_COLUMNS = ("path", "file", "clips", "seconds_per_clip")


@dataclass
class NpyExport:
    """What one export did: files written now, files kept from before (they held the same rows),
    videos not usable (skipped) and the files of those removed (left by an earlier export)."""

    directory: str
    view: str
    written: int = 0
    kept: int = 0
    skipped: int = 0
    removed: int = 0

    @property
    def files(self) -> int:
        return self.written + self.kept


def npy_names(paths: list[str]) -> list[str]:
    """Relative ``.npy`` file of each video path: its folders and file stem (module docstring).

    Raises :class:`StoreError` naming two videos that would share a file.
    """
    pure = [PurePosixPath(p.replace("\\", "/")) for p in paths]
    if any(p.is_absolute() or ".." in p.parts for p in pure):
        # every path made absolute under one root (relative ones under "/", ".." resolved), then taken
        # relative to their common folder: absolute and relative paths mix, and nothing lands above DIR
        rooted = [posixpath.normpath(str(p) if p.is_absolute() else "/" + str(p)) for p in pure]
        common = posixpath.commonpath([posixpath.dirname(p) for p in rooted])
        pure = [PurePosixPath(posixpath.relpath(p, common)) for p in rooted]
    names = [str(p.with_suffix(".npy")) for p in pure]
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            raise StoreError(f"videos {paths[first[name]]!r} and {paths[i]!r} would both be exported as {name}; "
                             "rename one of them (file stems must be unique per folder)")
        first[name] = i
    return names


def _check_directory(directory: Path, marker: dict) -> None:
    """An empty or new directory, or an export of the same store and view (resumed)."""
    if directory.exists() and not directory.is_dir():
        raise StoreError(f"{directory} is a file; give a directory to export into")
    if not directory.exists() or not any(directory.iterdir()):
        return
    try:
        found = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        raise StoreError(f"{directory} is not empty and is not a vssl npy export; choose an empty or new "
                         "directory") from None
    if {k: found.get(k) for k in marker} != marker:
        raise StoreError(f"{directory} holds an export of {found.get('store')} view '{found.get('view')}' "
                         f"(store id {found.get('store_id')}); export this view into another directory")


def _holds(path: Path, rows: np.ndarray) -> bool:
    """Whether ``path`` is a finished ``.npy`` file holding exactly ``rows`` (float32, bit for bit).

    The content, not the shape: a video re-extracted since the last export has as many clips as
    before and other rows. Reading the file back costs what writing it would, but a resumed
    export rewrites nothing that is already right.
    """
    try:
        found = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return (found.shape == rows.shape and found.dtype == rows.dtype
            and np.array_equal(np.asarray(found).view(np.uint32), rows.view(np.uint32)))


def _npy_bytes(array: np.ndarray) -> memoryview:
    """``array`` as the bytes of a ``.npy`` file.

    Built in memory (a video's rows, megabytes) and written with Python's file object: ``np.save``
    to a file writes with ``tofile``, which reports a full disk as "N requested and M written"
    with no errno, so it could not be told from a bug.
    """
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getbuffer()


def _write_file(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` under a temporary name, then rename it into place; a failed write leaves nothing."""
    tmp = path.with_name(f".{path.name}.partial")
    with working_on("export file", path):  # an OSError from write() names no file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _remove_stale(directory: Path, names: list[str], usable: np.ndarray) -> int:
    """Remove the files an earlier export wrote for videos not usable now; how many there were."""
    removed = 0
    for i in np.flatnonzero(~usable).tolist():
        path = directory / names[i]
        if path.is_file():
            path.unlink()
            removed += 1
    return removed


def export_npy(store: FeatureStore, directory: str | Path, view: str) -> NpyExport:
    """Write view ``view`` of ``store`` as one ``[num_clips, D]`` float32 ``.npy`` per usable video."""
    rows = store.view(view)  # an unknown view: one line naming the views there are
    directory = Path(directory)
    paths = store.paths().tolist()
    names = npy_names(paths)
    # the store's creation id: a store made anew at the same path must not keep the old one's files
    marker = {"store": str(Path(store.path).resolve()), "view": view, "store_id": store.store_id}
    _check_directory(directory, marker)
    directory.mkdir(parents=True, exist_ok=True)
    _write_file(directory / MARKER, json.dumps({**marker, "backbone": store.backbone.to_dict(), "spec": rows.spec},
                                               indent=2).encode())
    usable = store.usable(view)
    result = NpyExport(str(directory), view, skipped=int((~usable).sum()))
    result.removed = _remove_stale(directory, names, usable)
    seconds = rows.spec.get("seconds", "")
    index = io.StringIO()
    table = csv.writer(index, lineterminator="\n")
    table.writerow(INDEX_COLUMNS)
    for start, stop in store.chunk_ranges():  # a chunk at a time: bounded memory
        idx = np.flatnonzero(usable[start:stop]) + start
        if idx.size == 0:
            continue
        counts = rows.counts(idx)
        for j, i in enumerate(idx.tolist()):
            path, k = directory / names[i], int(counts[j])
            # one video at a time: a chunk read whole is padded to its longest film
            features = np.ascontiguousarray(rows.read(np.array([i])).features[0, :k], dtype=np.float32)
            if _holds(path, features):
                result.kept += 1
            else:
                _write_file(path, _npy_bytes(features))
                result.written += 1
            table.writerow((paths[i], names[i], k, seconds))
    _write_file(directory / INDEX, index.getvalue().encode())
    return result
