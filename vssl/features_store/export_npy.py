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
resumable and idempotent: ``DIR/vssl-export.json`` records the store and view, a video's file
is written to a temporary name and renamed (so a killed export never leaves half a file), a
file already there with the right shape is kept, and ``index.csv`` is written last. A
non-empty ``DIR`` that is not an export of the same store and view is refused.
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

from vssl.errors import StoreError

from .store import FeatureStore

MARKER = "vssl-export.json"
INDEX = "index.csv"
INDEX_COLUMNS = ("path", "file", "clips", "seconds_per_clip")


@dataclass
class NpyExport:
    """What one export did: files written now, files kept from before, videos not usable (skipped)."""

    directory: str
    view: str
    written: int = 0
    kept: int = 0
    skipped: int = 0

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


def _kept(path: Path, shape: tuple[int, int]) -> bool:
    """A finished file of the right shape from an earlier run of this export."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return arr.shape == shape and arr.dtype == np.float32


def _save(path: Path, array: np.ndarray) -> None:
    """Write ``array`` under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


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
    (directory / MARKER).write_text(json.dumps({**marker, "backbone": store.backbone.to_dict(), "spec": rows.spec},
                                               indent=2))
    usable = store.usable(view)
    result = NpyExport(str(directory), view, skipped=int((~usable).sum()))
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
            if _kept(path, (k, rows.dim)):
                result.kept += 1
            else:  # one video at a time: a chunk read whole is padded to its longest film
                features = rows.read(np.array([i])).features[0, :k]
                _save(path, np.ascontiguousarray(features, dtype=np.float32))
                result.written += 1
            table.writerow((paths[i], names[i], k, seconds))
    tmp = directory / f".{INDEX}.partial"
    tmp.write_text(index.getvalue())
    os.replace(tmp, directory / INDEX)
    return result
