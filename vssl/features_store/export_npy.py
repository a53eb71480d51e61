"""`vssl store export --format npy`: one ``[num_clips, *clip_shape]`` float32 ``.npy`` per video, for
other tools.

The layout temporal action localisation code reads (ActionFormer's ``feat_folder``, VideoMAE V2's
TAD features): a file per video named after the video's file stem, in a folder tree mirroring the
videos' (``class/clip.mp4`` → ``DIR/class/clip.npy``), plus ``index.csv`` with one row per file:
the video's path in the store, the file, its clip count and the seconds between clip starts
(``dense:S`` views: S; empty for views whose clips are not evenly spaced in time).

Folders mirror the paths the store records, which are relative to the input root (the folder
given to ``vssl extract``, or the manifest's folder); absolute paths and paths leaving that root
(``..``) are taken relative to their common folder instead.

Only usable videos (done, not failed: :meth:`FeatureStore.iter_videos`) are written. The export is
resumable and idempotent: ``DIR/vssl-export.json`` records the store and view, every file is
written to a temporary name and renamed (so a killed export never leaves half a file, and a
failed write, a full disk say, leaves nothing of it: both rules of :mod:`.exporting`), a file
already there is kept only when it holds the video's rows as the store has them now (compared bit
for bit: a re-extracted video's file is rewritten even when its shape did not change), the file of a video no longer usable is
removed, and ``index.csv`` is written last. A non-empty ``DIR`` that is not an export of the
same store and view is refused.
"""

from __future__ import annotations

import csv
import io
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from vssl.errors import StoreError

from .exporting import MARKER, ExportDirectory
from .store import FeatureStore

__all__ = ["MARKER", "INDEX", "INDEX_COLUMNS", "NpyExport", "NpyExporter", "export_npy", "npy_names"]

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

    def line(self) -> str:
        """What ``vssl store export --format npy`` prints."""
        removed = f", their {self.removed} earlier files removed" if self.removed else ""
        return (f"wrote {self.written} .npy files to {self.directory} ({self.kept} already there and up to date, "
                f"{self.skipped} videos not done or failed left out{removed}) · index {Path(self.directory) / INDEX}")


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


def export_npy(store: FeatureStore, directory: str | Path, view: str) -> NpyExport:
    """Write view ``view`` of ``store`` as one ``[num_clips, *clip_shape]`` float32 ``.npy`` per usable video."""
    stored = store.view(view)  # an unknown view: one line naming the views there are
    target = ExportDirectory(directory, store, view, "npy")
    paths = store.paths().tolist()
    names = npy_names(paths)
    target.claim({"backbone": store.backbone.to_dict(), "spec": stored.spec})
    usable = store.usable(view)
    result = NpyExport(str(target.path), view, skipped=int((~usable).sum()))
    result.removed = sum(target.remove(names[i]) for i in np.flatnonzero(~usable).tolist())
    seconds = stored.spec.get("seconds", "")
    index = io.StringIO()
    table = csv.writer(index, lineterminator="\n")
    table.writerow(INDEX_COLUMNS)
    for video in store.iter_videos(view):
        name = names[video.index]
        features = np.ascontiguousarray(video.features, dtype=np.float32)
        if _holds(target.path / name, features):
            result.kept += 1
        else:
            target.write(name, _npy_bytes(features))
            result.written += 1
        table.writerow((video.path, name, len(features), seconds))
    target.write(INDEX, index.getvalue().encode())
    return result


class NpyExporter:
    """``--format npy`` (:class:`~vssl.features_store.exporting.Exporter`): one view, a file per video."""

    name = "npy"
    per_view = True

    def export(self, store: FeatureStore, output: Path, view: str | None) -> str:
        return export_npy(store, output, str(view)).line()
