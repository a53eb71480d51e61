"""`vssl store verify`: is every row that says "done" really there and sane?

Checked: array shapes agree with the video table and the backbone; done rows have finite
features and boxes inside [0, 1] with t0 < t1, y0 < y1, x0 < x1 and a 0/1 flip flag; a done
row's chunk file exists; a row is not done in a view while its video is failed; a failed
video has its error text. Returns a list of problems, empty when the store is consistent.

A chunk file that cannot be read back (truncated by a full disk or a copy cut short, corrupt, or
missing under rows marked done) is a :class:`LostChunk`, reported with its file and its videos
instead of ending the check in an exception; :func:`vssl.features_store.repair.repair_store`
(``vssl store verify --repair``) makes those videos pending, so that the command that wrote them
writes them again.

Consistent is not complete: :func:`pending_videos` counts the videos extraction has not
finished (no failure recorded, not done in the table or in some view), which ``vssl store
verify`` and ``vssl store info`` report as "incomplete: N videos pending" — a store whose
chunks were left without an owner must not look finished.
Under torchrun each rank checks the rows of its own share of chunks (``ranges``) and rank 0
alone the video table (``table``), so nobody reads the whole store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from .rows import chunk_file_problem, chunk_path, describe_error
from .schema import BOX_DIM, STATUS_DONE, STATUS_FAILED

#: video-table columns extraction writes for each video: lost ones are rewritten by extracting the video again
TABLE_EXTRACTED = ("status", "num_frames", "fps", "error")
#: the file sizes recorded at creation: only weights for planning (a video without one weighs one unit)
TABLE_WEIGHTS = ("size",)


@dataclass(frozen=True)
class LostChunk:
    """One chunk of a per-video array whose rows cannot be read back.

    ``group``: "videos" (the video table), "views/NAME" or "aggregates/RUN/VIEW"; ``array``: the
    array ("features", "status", a table column), or "chunks/C" for a chunk of a ragged group,
    whose folder ``folder`` is then replaced whole; ``file``: the damaged or missing file,
    relative to the store; videos ``start``-``stop - 1``; ``reason``: "missing", a size that is
    wrong, or what reading it raised.
    """

    group: str
    array: str
    file: Path
    start: int
    stop: int
    reason: str
    folder: Path | None = None

    @property
    def missing(self) -> bool:
        return self.reason == "missing"

    @property
    def repairable(self) -> bool:
        """False for a video-table column that only the inputs hold (paths, labels, splits, targets)."""
        return self.group != "videos" or self.array in TABLE_EXTRACTED + TABLE_WEIGHTS

    def redo_command(self) -> str:
        """The command that writes these rows again once they are pending."""
        return "vssl aggregate --export" if self.group.startswith("aggregates/") else "vssl extract"

    def line(self, names: np.ndarray | None = None) -> str:
        """The one-line report: the file, why, the videos (with the first paths, from ``names``) and the fix."""
        shown = [] if names is None else names[self.start:min(self.stop, self.start + 3)].tolist()
        more = ", ..." if names is not None and self.stop - self.start > 3 else ""
        videos = video_span(self.start, self.stop) + (f" ({', '.join(shown)}{more})" if shown else "")
        if not self.repairable:
            fix = "this column comes from the inputs: extract them into a new --out store"
        elif self.group == "videos" and self.array in TABLE_WEIGHTS:
            fix = "`vssl store verify --repair` moves it aside (planning then weighs these videos alike)"
        else:
            fix = f"`vssl store verify --repair` marks them pending, then the same `{self.redo_command()}` redoes them"
        where = f"{self.group}/{self.array}"
        if self.missing:
            return f"{where}: rows {video_span(self.start, self.stop, '')} marked done but never written " \
                   f"({self.file} missing): {videos} lost; {fix}"
        return f"{where}: chunk file {self.file} is unreadable ({self.reason}): {videos} lost; {fix}"


def video_span(start: int, stop: int, noun: str = "video") -> str:
    """Videos ``start``-``stop - 1`` in words: "video 4", "videos 2-3" (no noun: "4", "2-3")."""
    span = str(start) if stop - start == 1 else f"{start}-{stop - 1}"
    return f"{noun}{'s' if stop - start > 1 else ''} {span}" if noun else span


@dataclass
class StoreCheck:
    """What :func:`check_store` found: lost chunks, other problems, and the videos still pending."""

    lost: list[LostChunk] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    pending: int = 0
    names: np.ndarray | None = None  # video paths, for the lines (None: their column is unreadable)

    def lines(self) -> list[str]:
        return [chunk.line(self.names) for chunk in self.lost] + self.problems


def _check_boxes(name: str, boxes: np.ndarray, rows: np.ndarray) -> list[str]:
    problems = []
    if not np.isfinite(boxes).all():
        problems.append(f"{name}: non-finite boxes in done rows {rows[~np.isfinite(boxes).all(axis=(1, 2))][:5].tolist()}")
        return problems
    lo, hi = boxes[..., :3], boxes[..., 3:6]
    bad = ((lo < 0) | (hi > 1 + 1e-6) | (hi <= lo)).any(axis=(1, 2)) | ~np.isin(boxes[..., 6], (0.0, 1.0)).all(axis=1)
    if bad.any():
        problems.append(f"{name}: invalid boxes in done rows {rows[bad][:5].tolist()}")
    return problems


def pending_videos(store) -> int:
    """Videos not finished: not failed, and not done in the video table or in one of the views."""
    status = store.video_status()
    todo = status != STATUS_DONE
    for name in store.view_names():
        todo |= ~store.view(name).done()
    return int((todo & (status != STATUS_FAILED)).sum())


def incomplete_line(pending: int) -> str:
    """The one line that says a store is not finished."""
    return f"incomplete: {pending} videos pending"


def read_readable(root: Path, arr: zarr.Array, group: str, name: str) -> tuple[np.ndarray, list[LostChunk]]:
    """All of a per-video array of the store at ``root``, and its chunks that cannot be read back, which
    read as the fill value: whoever reads a whole array to report on it (verify, info) names a damaged
    file instead of ending in whatever decoding it raised."""
    try:
        return np.asarray(arr[:]), []
    except Exception:  # noqa: BLE001 - find the chunks that cannot be read, one by one
        pass
    step, n = arr.chunks[0], arr.shape[0]
    parts, lost = [], []
    for c, start in enumerate(range(0, n, step)):
        stop = min(n, start + step)
        try:
            parts.append(np.asarray(arr[start:stop]))
        except Exception as exc:  # noqa: BLE001 - whatever a damaged chunk raises, it is lost
            why = chunk_file_problem(root, arr, c) or describe_error(exc)
            lost.append(LostChunk(group, name, chunk_path(arr, c), start, stop, why))
            parts.append(np.full((stop - start, *arr.shape[1:]), arr.fill_value))
    return np.concatenate(parts), lost


def verify_store(store, ranges=None, table: bool = True) -> list[str]:
    """Problems of ``store`` (see the module docstring); ``ranges``: check the done rows of these
    chunk-aligned video ranges only (default all); ``table``: check the video table too."""
    return check_store(store, ranges, table).lines()


def check_store(store, ranges=None, table: bool = True) -> StoreCheck:
    """:func:`verify_store` with the lost chunks apart (what ``--repair`` works from) and the pending count."""
    return _Checker(store, ranges).run(table)


class _Checker:
    """One verification: reads every array once, chunk by chunk where a chunk cannot be read."""

    def __init__(self, store, ranges) -> None:
        self.store, self.ranges = store, ranges
        self.found = StoreCheck()

    def run(self, table: bool) -> StoreCheck:
        store = self.store
        if table:
            columns = self._table()
            status = columns["status"].astype(np.int8)
        else:  # another rank reports the video table
            status = self._read(store.root["videos/status"], "videos", "status", report=False).astype(np.int8)
        todo = status != STATUS_DONE
        for gpath in store.row_group_paths():
            done = self._row_group(gpath, status, whole=table)
            if gpath.startswith("views/"):
                todo |= ~done
        self.found.pending = int((todo & (status != STATUS_FAILED)).sum())
        return self.found

    # ------------------------------------------------------------- reading

    def _mine(self, start: int) -> bool:
        return self.ranges is None or any(a <= start < b for a, b in self.ranges)

    def _read(self, arr: zarr.Array, group: str, name: str, report: bool = True) -> np.ndarray:
        """All of a per-video array; a chunk that cannot be read reads as the fill value and, with
        ``report`` (and in this check's ranges), is a lost chunk."""
        values, lost = read_readable(self.store.path, arr, group, name)
        if report:
            self.found.lost += [chunk for chunk in lost if self._mine(chunk.start)]
        return values

    # ------------------------------------------------------------- the video table

    def _table(self) -> dict[str, np.ndarray]:
        store, problems, n = self.store, self.found.problems, self.store.num_videos
        group = store.root["videos"]
        columns = {name: self._read(group[name], "videos", name) for name in sorted(group.array_keys())}
        for name in ("path", "label", "split", "num_frames", "fps", "status", "error"):
            shape = group[name].shape
            if shape != (n,):
                problems.append(f"videos/{name}: shape {shape}, expected ({n},)")
        if not any(c.group == "videos" and c.array == "path" for c in self.found.lost):
            self.found.names = np.array([str(p) for p in columns["path"].tolist()])
        readable = np.ones(n, bool)  # rows of lost chunks read as fill values: reported once, as lost
        for chunk in self.found.lost:
            readable[chunk.start:chunk.stop] = False
        status = np.where(readable, columns["status"], -1)
        no_text = np.flatnonzero((status == STATUS_FAILED) & (columns["error"] == ""))
        if no_text.size:
            problems.append(f"videos: failed rows without error text: {no_text[:5].tolist()}")
        bad_frames = np.flatnonzero((status == STATUS_DONE) & (columns["num_frames"] <= 0))
        if bad_frames.size:
            problems.append(f"videos: done rows with num_frames <= 0: {bad_frames[:5].tolist()}")
        labels = columns["label"]
        if store.classes and (readable & ((labels < -1) | (labels >= len(store.classes)))).any():
            problems.append(f"videos: labels outside [-1, {len(store.classes)})")
        return columns

    # ------------------------------------------------------------- row groups

    def _row_group(self, gpath: str, status: np.ndarray, whole: bool) -> np.ndarray:
        """Check one row group (a view or an aggregate); returns its done flags. With ``whole``, also
        the checks of the whole group (shapes, done flags of failed videos), which one rank of a
        split verify makes for all."""
        store, problems = self.store, self.found.problems
        n = store.num_videos
        group = store.row_group(gpath)
        done = self._read(group.array("status"), gpath, "status") == STATUS_DONE
        for name in group.array_names if whole else ():
            if group.array(name).shape[0] != n:
                problems.append(f"{gpath}/{name}: {group.array(name).shape[0]} rows, store has {n} videos")
        view = store.view(gpath.split("/", 1)[1]) if gpath.startswith("views/") else None
        if whole and view is not None:
            if len(view.clip_shape) == 1 and view.dim != store.backbone.embed_dim:  # a token grid has its own width
                problems.append(f"{gpath}: features dim {view.dim} != backbone embed_dim {store.backbone.embed_dim}")
            if view.layout == "fixed" and group.array("boxes").shape[1:] != (view.num_clips, BOX_DIM):
                problems.append(f"{gpath}/boxes: shape {group.array('boxes').shape}, expected (N, {view.num_clips}, {BOX_DIM})")
            stray = np.flatnonzero(done & (status == STATUS_FAILED))
            if stray.size:
                problems.append(f"{gpath}: rows done for failed videos {stray[:5].tolist()}")
        if view is not None and view.layout == "ragged":
            self._ragged_rows(view, done, gpath)
        elif group.attrs.get("layout") == "ragged":  # e.g. the refined clips of a ragged view's SCALE export
            self._ragged_rows(store.ragged_group(gpath), done, gpath)
        else:
            self._fixed_rows(group, done, gpath)
        group.release_maps()  # a sequential scan: none of its chunk maps is read again
        if view is not None:
            view.release_maps()
        return done

    def _chunks(self) -> list[tuple[int, int]]:
        """The store's chunks inside ``ranges`` (chunk-aligned video ranges; None: every chunk)."""
        return [c for c in self.store.chunk_ranges() if self._mine(c[0])]

    def _fixed_rows(self, group, done: np.ndarray, gpath: str) -> None:
        """Read done rows chunk by chunk (bounded memory): present on disk, readable and finite."""
        problems = self.found.problems
        for start, stop in self._chunks():
            local_done = np.flatnonzero(done[start:stop]) + start
            if local_done.size == 0:
                continue
            c = start // self.store.chunk_videos
            for name in group.array_names:
                arr = group.array(name)
                why = chunk_file_problem(self.store.path, arr, c)
                if why is None:
                    try:
                        values = group.read(name, local_done).astype(np.float32)
                    except Exception as exc:  # noqa: BLE001 - a chunk that decodes to nothing usable is lost
                        why = describe_error(exc)
                if why is not None:
                    self.found.lost.append(LostChunk(gpath, name, chunk_path(arr, c), start, stop, why))
                    continue
                if name == "boxes":
                    problems += _check_boxes(f"{gpath}/boxes", values, local_done)
                elif not np.isfinite(values).all():
                    bad = local_done[~np.isfinite(values.reshape(len(values), -1)).all(axis=1)]
                    problems.append(f"{gpath}/{name}: NaN/inf in done rows {bad[:5].tolist()}")

    def _ragged_rows(self, view, done: np.ndarray, gpath: str) -> None:
        """A ragged view (or ragged row group), chunk by chunk: its files readable, counts agree with
        the stored rows, values finite, boxes valid."""
        problems = self.found.problems
        for start, stop in self._chunks():
            local_done = np.flatnonzero(done[start:stop]) + start
            if local_done.size == 0:
                continue
            c = start // self.store.chunk_videos
            damaged = view.unreadable_file(c)
            if damaged is not None:
                self.found.lost.append(LostChunk(gpath, f"chunks/{c}", damaged[0], start, stop, damaged[1],
                                                 folder=view.chunk_folder(c)))
                continue
            found = view.check_chunk(start, stop, local_done)
            problems += found
            if found:
                continue
            clips = view.read(local_done)
            mask = clips.mask
            if not np.isfinite(clips.features[mask].astype(np.float32)).all():
                real = clips.features.reshape(*mask.shape, -1)  # [n, K, prod(clip_shape)]
                bad = local_done[~np.isfinite(np.where(mask[..., None], real, 0).astype(np.float32)).all(axis=(1, 2))]
                problems.append(f"{gpath}/features: NaN/inf in done rows {bad[:5].tolist()}")
            flat_boxes = clips.boxes[mask][:, None, :]
            video_of = np.repeat(local_done, clips.counts)
            problems += _check_boxes(f"{gpath}/boxes", flat_boxes, video_of)
