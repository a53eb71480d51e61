"""`vssl store verify`: is every row that says "done" really there and sane?

Checked: array shapes agree with the video table and the backbone; done rows have finite
features and boxes inside [0, 1] with t0 < t1, y0 < y1, x0 < x1 and a 0/1 flip flag; a done
row's chunk file exists; a row is not done in a view while its video is failed; a failed
video has its error text. Returns a list of problems, empty when the store is consistent.

Consistent is not complete: :func:`pending_videos` counts the videos extraction has not
finished (no failure recorded, not done in the table or in some view), which ``vssl store
verify`` and ``vssl store info`` report as "incomplete: N videos pending" — a store whose
chunks were left without an owner must not look finished.
Under torchrun each rank checks the rows of its own share of chunks (``ranges``) and rank 0
alone the video table (``table``), so nobody reads the whole store.
"""

from __future__ import annotations

import numpy as np

from .schema import BOX_DIM, STATUS_DONE, STATUS_FAILED


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


def verify_store(store, ranges=None, table: bool = True) -> list[str]:
    """Problems of ``store`` (see the module docstring); ``ranges``: check the done rows of these
    chunk-aligned video ranges only (default all); ``table``: check the video table too."""
    problems: list[str] = []
    n = store.num_videos
    status = store.video_status()
    if not table:
        return _check_views(store, status, problems, ranges, whole=False)
    for column in ("path", "label", "split", "num_frames", "fps", "status", "error"):
        shape = store.root[f"videos/{column}"].shape
        if shape != (n,):
            problems.append(f"videos/{column}: shape {shape}, expected ({n},)")
    failed = status == STATUS_FAILED
    errors = store.errors()
    no_text = np.flatnonzero(failed & (errors == ""))
    if no_text.size:
        problems.append(f"videos: failed rows without error text: {no_text[:5].tolist()}")
    done_videos = status == STATUS_DONE
    bad_frames = np.flatnonzero(done_videos & (store.num_frames() <= 0))
    if bad_frames.size:
        problems.append(f"videos: done rows with num_frames <= 0: {bad_frames[:5].tolist()}")
    labels = store.labels()
    if store.classes and ((labels < -1) | (labels >= len(store.classes))).any():
        problems.append(f"videos: labels outside [-1, {len(store.classes)})")
    return _check_views(store, status, problems, ranges)


def _check_views(store, status: np.ndarray, problems: list[str], ranges, whole: bool = True) -> list[str]:
    """Each row group's done rows in ``ranges``; with ``whole``, also the checks of the whole view
    (shapes, done flags of failed videos), which one rank of a split verify makes for all."""
    n = store.num_videos
    failed = status == STATUS_FAILED
    for gpath in store.row_group_paths():
        rows = store.rows(gpath)
        done = rows.done()
        for name in rows.array_names if whole else ():
            if rows.array(name).shape[0] != n:
                problems.append(f"{gpath}/{name}: {rows.array(name).shape[0]} rows, store has {n} videos")
        if whole and gpath.startswith("views/"):
            view = store.view(gpath.split("/", 1)[1])
            if view.dim != store.backbone.embed_dim:
                problems.append(f"{gpath}: features dim {view.dim} != backbone embed_dim {store.backbone.embed_dim}")
            if view.layout == "fixed" and rows.array("boxes").shape[1:] != (view.num_clips, BOX_DIM):
                problems.append(f"{gpath}/boxes: shape {rows.array('boxes').shape}, expected (N, {view.num_clips}, {BOX_DIM})")
            stray = np.flatnonzero(done & failed)
            if stray.size:
                problems.append(f"{gpath}: rows done for failed videos {stray[:5].tolist()}")
        problems += _check_done_rows(store, gpath, rows, done, ranges)
        rows.release_maps()  # a sequential scan: none of its chunk maps is read again
        if gpath.startswith("views/"):
            store.view(gpath.split("/", 1)[1]).release_maps()
    return problems


def _check_ragged_view(store, view, done: np.ndarray, gpath: str, ranges=None) -> list[str]:
    """A ragged view (or ragged row group), chunk by chunk: counts agree with the stored rows,
    values finite, boxes valid."""
    problems = []
    for start, stop in _chunks(store, ranges):
        local_done = np.flatnonzero(done[start:stop]) + start
        if local_done.size == 0:
            continue
        found = view.check_chunk(start, stop, local_done)
        problems += found
        if found:
            continue
        rows = view.read(local_done)
        mask = rows.mask
        if not np.isfinite(rows.features[mask].astype(np.float32)).all():
            bad = local_done[~np.isfinite(np.where(mask[..., None], rows.features, 0).astype(np.float32)).all(axis=(1, 2))]
            problems.append(f"{gpath}/features: NaN/inf in done rows {bad[:5].tolist()}")
        flat_boxes = rows.boxes[mask][:, None, :]
        video_of = np.repeat(local_done, rows.counts)
        problems += _check_boxes(f"{gpath}/boxes", flat_boxes, video_of)
    return problems


def _chunks(store, ranges) -> list[tuple[int, int]]:
    """The store's chunks inside ``ranges`` (chunk-aligned video ranges; None: every chunk)."""
    if ranges is None:
        return store.chunk_ranges()
    return [c for c in store.chunk_ranges() if any(a <= c[0] < b for a, b in ranges)]


def _check_done_rows(store, gpath: str, rows, done: np.ndarray, ranges=None) -> list[str]:
    """Read done rows chunk by chunk (bounded memory): present on disk and finite."""
    if gpath.startswith("views/") and store.view(gpath.split("/", 1)[1]).layout == "ragged":
        return _check_ragged_view(store, store.view(gpath.split("/", 1)[1]), done, gpath, ranges)
    if rows.attrs.get("layout") == "ragged":       # e.g. the refined clips of a ragged view's SCALE export
        return _check_ragged_view(store, store.ragged_rows(gpath), done, gpath, ranges)
    problems = []
    for start, stop in _chunks(store, ranges):
        local_done = np.flatnonzero(done[start:stop]) + start
        if local_done.size == 0:
            continue
        for name in rows.array_names:
            arr = rows.array(name)
            key = arr.metadata.encode_chunk_key((start // store.chunk_videos,) + (0,) * (arr.ndim - 1))
            if not (store.path / arr.path / key).exists():
                problems.append(f"{gpath}/{name}: rows {start}-{stop - 1} marked done but never written")
                continue
            values = rows.read(name, local_done).astype(np.float32)
            if name == "boxes":
                problems += _check_boxes(f"{gpath}/boxes", values, local_done)
            elif not np.isfinite(values).all():
                bad = local_done[~np.isfinite(values.reshape(len(values), -1)).all(axis=1)]
                problems.append(f"{gpath}/{name}: NaN/inf in done rows {bad[:5].tolist()}")
    return problems
