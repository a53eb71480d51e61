"""Views: clip embeddings and boxes per video, behind one reader/writer whatever the row layout.

:class:`View` is the interface; two row layouts implement it (the view kind decides which, by
whether its clip count is fixed):

- :class:`FixedView` — ``features [N, K, *clip_shape]`` and ``boxes [N, K, 7]``, chunked by whole
  videos along N (every view written before layouts existed is one of these);
- :class:`RaggedView` — a variable number of clips per video (``dense:S`` views of long videos). Each
  chunk of videos ``c`` is a group ``chunks/<c>`` whose attributes hold the clip count of
  each of its videos and the name of the generation that holds their rows,
  ``chunks/<c>/<gen>/{features [R, *clip_shape], boxes [R, 7]}`` (R = the chunk's total clips, rows in
  video order). A chunk is written whole, in one go, as a new generation; then the
  ``chunks/<c>`` attributes are replaced in one atomic file write; then the done flags; the
  old generation is deleted last. A killed writer therefore leaves the old chunk or the new
  one, never counts that disagree with their rows, and never a done flag without data.

A clip's feature has a shape, ``clip_shape``: ``(D,)`` for one pooled vector per clip (every view
until now, stored exactly as before), or e.g. ``(T'·H'·W', D)`` for a grid of tokens; ``dim`` is its
last axis: the backbone's width for a vector, the encoder's token width for a grid (they may differ).

Stages read either layout through :meth:`View.read`, which returns a :class:`ViewRows`: the
features and boxes padded to the most clips among the rows read, each video's clip count, and
the mask of real clips. For a fixed view nothing is padded and ``f, b = view.read(idx)``
unpacks as it always did.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import zarr

from vssl.errors import StoreError, working_on

from .rows import (ChunkMemmapReader, RowGroup, array_dir, chunk_bounds, chunk_file_problem, chunk_path,
                   compressors_for, describe_error, persistent, sync_chunk, sync_file)
from .schema import BOX_DIM

LAYOUTS = ("fixed", "ragged")


@dataclass(frozen=True)
class ViewRows:
    """Rows of a view: ``features [n, K, *clip_shape]``, ``boxes [n, K, 7]`` padded with zeros past
    ``counts [n]`` (K = the most clips among these rows, or ``pad_to``)."""

    features: np.ndarray
    boxes: np.ndarray
    counts: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """Boolean ``[n, K]``: True where a clip is real, False on padding."""
        return np.arange(self.features.shape[1])[None, :] < self.counts[:, None]

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features [R, *clip_shape], boxes [R, 7], offsets [n + 1]): the real clips, video after video."""
        m = self.mask
        return self.features[m], self.boxes[m], np.concatenate(([0], np.cumsum(self.counts)))

    def __iter__(self) -> Iterator[np.ndarray]:
        """``features, boxes = view.read(idx)``."""
        yield self.features
        yield self.boxes


def _as_clip_list(values: np.ndarray | Sequence[np.ndarray], n: int) -> list[np.ndarray]:
    if len(values) != n:
        raise ValueError(f"expected {n} per-video arrays, got {len(values)}")
    return [np.asarray(v) for v in values]


def as_clip_shape(clip: int | Sequence[int]) -> tuple[int, ...]:
    """A clip's feature shape from a width ``D`` (what every caller gave before clips had a shape) or a shape."""
    shape = (int(clip),) if np.isscalar(clip) else tuple(int(n) for n in clip)
    if not shape or min(shape) < 1:
        raise StoreError(f"a clip's feature shape must be one or more positive sizes, got {clip!r}")
    return shape


class View(ABC):
    """``views/<name>``: what one sampler produced for every video, whatever its row layout.

    The interface every stage reads and writes through; :class:`FixedView` and :class:`RaggedView` are
    its two layouts (:func:`open_view` picks one by the group's ``layout`` attribute). A view is not a
    :class:`RowGroup`: it reads videos, not named arrays; its done flags live in one (``flags``).
    """

    layout: str = ""

    def __init__(self, name: str, group: zarr.Group, root: Path, chunk_videos: int) -> None:
        self.name = name
        self.group = group
        self.root = root
        self.chunk_videos = chunk_videos
        self.flags = RowGroup(group, root, chunk_videos)  # the done flags (and the fixed layout's arrays)
        self.num_videos = self.flags.num_videos
        self.spec = dict(group.attrs.get("spec", {}))
        self.record = dict(group.attrs.get("extract", {}))  # the settings that extracted it ({}: not recorded)
        self.num_clips: int | None = None
        self.clip_shape: tuple[int, ...] = ()
        self.dtype = np.dtype("float32")
        self._init_shape()

    @abstractmethod
    def _init_shape(self) -> None:
        """Set ``num_clips`` (None: it varies per video), ``clip_shape`` and ``dtype`` from the stored group."""

    @property
    def dim(self) -> int:
        """D, the last axis of a clip's feature (its width when a clip is one vector)."""
        return self.clip_shape[-1]

    # ------------------------------------------------------------- creation

    @classmethod
    def create(cls, parent: zarr.Group, name: str, num_videos: int, chunk_videos: int, num_clips: int | None,
               dim: int | Sequence[int], dtype: str, spec: Mapping, compression: str,
               record: Mapping | None = None) -> None:
        """Create the group of a view; ``num_clips=None`` gives the ragged layout. ``dim``: the clip's
        feature shape, or its width D for a clip of one vector."""
        clip_shape = as_clip_shape(dim)
        attrs: dict = {"spec": dict(spec), **({"extract": dict(record)} if record else {})}
        if num_clips is None:
            attrs.update(layout="ragged", dim=clip_shape[-1], dtype=str(np.dtype(dtype)))
            if len(clip_shape) > 1:  # a view of one vector per clip is stored as before clips had a shape
                attrs["clip_shape"] = list(clip_shape)
            group = RowGroup.create(parent, name, num_videos, chunk_videos, {}, attrs)
            group.create_group("chunks")
            return
        RowGroup.create(parent, name, num_videos, chunk_videos,
                        {"features": ((num_clips, *clip_shape), str(np.dtype(dtype))),
                         "boxes": ((num_clips, BOX_DIM), "float32")}, attrs, compression)

    def update_record(self, **settings) -> None:
        """Add ``settings`` to the view's record of how it was extracted (one atomic metadata write)."""
        self.record = {**self.record, **settings}
        self.group.attrs["extract"] = self.record

    # ------------------------------------------------------------- reading

    @abstractmethod
    def read(self, indices, pad_to: int | None = None) -> ViewRows:
        """Features (stored dtype), boxes (float32) and clip counts of videos ``indices``, padded to the
        most clips among them (or ``pad_to``)."""

    @abstractmethod
    def counts(self, indices=None) -> np.ndarray:
        """Clips of each video (of ``indices``, default all); 0 where nothing is stored."""

    def read_features(self, indices) -> np.ndarray:
        """Features only, ``[n, K, *clip_shape]``."""
        return self.read(indices).features

    def read_boxes(self, indices) -> np.ndarray:
        """Boxes only, ``[n, K, 7]``."""
        return self.read(indices).boxes

    def fixed_clips(self, reader: str) -> int:
        """K, for a stage that reads fixed-K views only; one clear line for a ragged view."""
        if self.num_clips is None:
            raise StoreError(f"view '{self.name}' has a variable number of clips per video (ragged layout); "
                             f"{reader} reads views of a fixed clip count: choose such a view (e.g. random:16)")
        return self.num_clips

    # ------------------------------------------------------------- done flags

    @property
    def attrs(self) -> dict:
        return self.flags.attrs

    def array(self, name: str) -> zarr.Array:
        """A stored array of the view's group (``status``; the fixed layout's ``features`` and ``boxes``)."""
        return self.flags.array(name)

    def done(self, rows: slice | None = None) -> np.ndarray:
        """Boolean [N] (or of ``rows``): videos whose clips are complete (:meth:`RowGroup.done`)."""
        return self.flags.done(rows)

    def pending(self, exclude: np.ndarray | None = None) -> np.ndarray:
        """Indices of videos not done (:meth:`RowGroup.pending`)."""
        return self.flags.pending(exclude)

    def mark(self, indices: np.ndarray, done: np.ndarray | None = None) -> None:
        """Set the done flags of videos ``indices`` (inside one chunk), durably (:meth:`RowGroup.mark`)."""
        self.flags.mark(indices, done)

    def release_maps(self) -> None:
        """Unmap the chunk files read so far (a sequential scan is over)."""
        self.flags.release_maps()

    # ------------------------------------------------------------- writing and checking

    @abstractmethod
    def write_clips(self, indices: Sequence[int], features: np.ndarray | Sequence[np.ndarray],
                    boxes: np.ndarray | Sequence[np.ndarray], done: np.ndarray | None = None, mark: bool = True) -> None:
        """Write videos ``indices`` (inside one chunk): per video ``[k, *clip_shape]`` features and ``[k, 7]``
        boxes. ``mark=False``: data only, the done flags are set later by the caller (:meth:`mark`)."""

    @abstractmethod
    def check_chunk(self, start: int, stop: int, done_rows: np.ndarray) -> list[str]:
        """Problems of the done rows of one chunk that its layout alone can tell."""


class FixedView(View):
    """The fixed layout: ``features [N, K, *clip_shape]``, ``boxes [N, K, 7]``, K clips for every video."""

    layout = "fixed"

    def _init_shape(self) -> None:
        feats = self.group["features"]
        self.num_clips = int(feats.shape[1])
        self.clip_shape = tuple(int(n) for n in feats.shape[2:])
        self.dtype = np.dtype(feats.dtype)

    def read(self, indices, pad_to: int | None = None) -> ViewRows:
        features = self.flags.read("features", indices)
        counts = np.full(len(features), self.num_clips, dtype=np.int64)
        return ViewRows(features, self.flags.read("boxes", indices), counts)

    def read_features(self, indices) -> np.ndarray:
        """Features only (the fixed layout reads that one array)."""
        return self.flags.read("features", indices)

    def read_boxes(self, indices) -> np.ndarray:
        """Boxes only (the fixed layout reads that one array)."""
        return self.flags.read("boxes", indices)

    def counts(self, indices=None) -> np.ndarray:
        n = self.num_videos if indices is None else len(np.asarray(indices).reshape(-1))
        return np.full(n, self.num_clips, dtype=np.int64)

    def write_clips(self, indices: Sequence[int], features: np.ndarray | Sequence[np.ndarray],
                    boxes: np.ndarray | Sequence[np.ndarray], done: np.ndarray | None = None, mark: bool = True) -> None:
        self.flags.write(np.asarray(indices, dtype=np.int64), {"features": features, "boxes": boxes}, done=done,
                         mark=mark)

    def write(self, indices: np.ndarray, data: Mapping[str, np.ndarray], done: np.ndarray | None = None,
              mark: bool = True) -> None:
        """:meth:`RowGroup.write` of the ``features`` and ``boxes`` arrays: what a fixed view offered when it
        was a row group, kept for its callers; :meth:`write_clips` writes either layout."""
        self.flags.write(indices, data, done=done, mark=mark)

    def check_chunk(self, start: int, stop: int, done_rows: np.ndarray) -> list[str]:
        """None for the fixed layout: its arrays are checked array by array."""
        return []


class RaggedView(View):
    """A view with a variable number of clips per video (see the module docstring)."""

    layout = "ragged"

    def _init_shape(self) -> None:
        self.num_clips = None
        self.clip_shape = tuple(int(n) for n in self.group.attrs.get("clip_shape", [self.group.attrs["dim"]]))
        self.dtype = np.dtype(self.group.attrs["dtype"])
        self._chunks_dir = self.root / self.group.path / "chunks"
        self._pointers: dict[int, tuple[tuple[int, int], dict]] = {}
        self._pointer_files: dict[int, str] = {}
        self._row_readers: dict[tuple[int, str, str], ChunkMemmapReader | None] = {}

    # ------------------------------------------------------------- the chunk pointers

    def _pointer(self, c: int) -> dict:
        """``{"data": generation or None, "counts": [...]}`` of chunk ``c`` (re-read when replaced)."""
        stamp = self._stamp(c)
        if stamp is None:
            return {"data": None, "counts": None}
        cached = self._pointers.get(c)
        if cached is None or cached[0] != stamp:
            with working_on("store chunk", self._pointer_files[c]), open(self._pointer_files[c]) as f:
                attrs = json.load(f).get("attributes", {})
            cached = (stamp, {"data": attrs.get("data"), "counts": attrs.get("counts")})
            self._pointers[c] = cached
        return cached[1]

    def _chunk_counts(self, c: int, pointer: dict | None = None) -> np.ndarray:
        start, stop = c * self.chunk_videos, min(self.num_videos, (c + 1) * self.chunk_videos)
        counts = (pointer or self._pointer(c))["counts"]
        return np.zeros(stop - start, np.int64) if counts is None else np.asarray(counts, np.int64)

    def _rows_reader(self, c: int, gen: str, name: str) -> ChunkMemmapReader | None:
        key = (c, gen, name)
        if key not in self._row_readers:
            arr = self._rows_array(c, gen, name)
            # the memmap reader finds chunk files from the store root and the array's path in it
            self._row_readers[key] = ChunkMemmapReader(arr, self.root) if ChunkMemmapReader.supports(arr) else None
        return self._row_readers[key]

    def _rows_array(self, c: int, gen: str, name: str) -> zarr.Array:
        return self.group[f"chunks/{c}/{gen}/{name}"]

    def _chunk_rows(self, c: int, name: str, rows: np.ndarray, gen: str) -> np.ndarray:
        reader = self._rows_reader(c, gen, name)
        if reader is not None:
            return reader.read(rows)
        array = self._rows_array(c, gen, name)
        with working_on("store array", array_dir(array)):
            return np.asarray(array.oindex[rows])

    # ------------------------------------------------------------- reading

    def counts(self, indices=None) -> np.ndarray:
        idx = np.arange(self.num_videos) if indices is None else np.asarray(indices, np.int64).reshape(-1)
        out = np.zeros(len(idx), np.int64)
        chunk_of = idx // self.chunk_videos
        for c in np.unique(chunk_of).tolist():
            sel = chunk_of == c
            out[sel] = self._chunk_counts(c)[idx[sel] - c * self.chunk_videos]
        return out

    def read(self, indices, pad_to: int | None = None) -> ViewRows:
        """As :meth:`View.read`. Optimistic against a writer rewriting a chunk meanwhile: the rows
        are read between two looks at the chunks' pointers and read again if one changed (the old
        generation may be gone: its rows would read as zeros)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_videos):
            raise IndexError(f"video index out of range [0, {self.num_videos})")
        chunks = np.unique(idx // self.chunk_videos).tolist()
        for _ in range(3):
            before = [self._stamp(c) for c in chunks]
            rows = self._read_once(idx, pad_to)
            if [self._stamp(c) for c in chunks] == before:
                return rows
        raise StoreError(f"view '{self.name}': its chunks kept changing while being read (another process is "
                         "rewriting them); read again when that writer is done")

    def _stamp(self, c: int) -> tuple[int, int] | None:
        path = self._pointer_files.get(c)
        if path is None:  # the path as a string, once: pathlib joins cost more than the stat itself
            path = self._pointer_files[c] = str(self._chunks_dir / str(c) / "zarr.json")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_ino

    def _read_once(self, idx: np.ndarray, pad_to: int | None) -> ViewRows:
        chunk_of = idx // self.chunk_videos
        chunks = np.unique(chunk_of).tolist()
        pointers = {c: self._pointer(c) for c in chunks}  # one look per chunk: counts and rows agree
        counts = np.zeros(len(idx), np.int64)
        offsets = {}
        for c in chunks:
            chunk_counts = self._chunk_counts(c, pointers[c])
            sel = chunk_of == c
            counts[sel] = chunk_counts[idx[sel] - c * self.chunk_videos]
            offsets[c] = np.concatenate(([0], np.cumsum(chunk_counts)))
        width = int(counts.max(initial=0)) if pad_to is None else int(pad_to)
        if counts.size and counts.max() > width:
            raise ValueError(f"pad_to={pad_to} is less than the {int(counts.max())} clips of a video read")
        features = np.zeros((len(idx), width, *self.clip_shape), self.dtype)
        boxes = np.zeros((len(idx), width, BOX_DIM), np.float32)
        for c in chunks:
            positions = np.flatnonzero((chunk_of == c) & (counts > 0))
            if positions.size == 0:
                continue
            lens = counts[positions]
            clip = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)  # 0..k-1 per video
            rows = np.repeat(offsets[c][idx[positions] - c * self.chunk_videos], lens) + clip
            slot = np.repeat(positions, lens)
            gen = pointers[c]["data"]
            features[slot, clip] = self._chunk_rows(c, "features", rows, gen)
            boxes[slot, clip] = self._chunk_rows(c, "boxes", rows, gen)
        return ViewRows(features, boxes, counts)

    # ------------------------------------------------------------- writing

    def write_clips(self, indices: Sequence[int], features: np.ndarray | Sequence[np.ndarray],
                    boxes: np.ndarray | Sequence[np.ndarray], done: np.ndarray | None = None, mark: bool = True) -> None:
        """Replace videos ``indices`` (inside one chunk) and write the chunk whole as a new generation.

        Videos of the chunk not in ``indices`` keep their stored clips; a video written with
        ``done`` False (a failure) stores no clips.
        """
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return
        start, stop = chunk_bounds(idx, self.chunk_videos, self.num_videos)
        c = start // self.chunk_videos
        ok = np.ones(idx.size, bool) if done is None else np.asarray(done, bool)
        feats, bxs = _as_clip_list(features, idx.size), _as_clip_list(boxes, idx.size)
        old = self.read(np.arange(start, stop))
        per_video_f = [old.features[v, :n] for v, n in enumerate(old.counts.tolist())]
        per_video_b = [old.boxes[v, :n] for v, n in enumerate(old.counts.tolist())]
        for j, v in enumerate((idx - start).tolist()):
            f, b = (feats[j], bxs[j]) if ok[j] else (np.zeros((0, *self.clip_shape)), np.zeros((0, BOX_DIM)))
            if f.shape[1:] != self.clip_shape or b.shape != (len(f), BOX_DIM):
                raise ValueError(f"video {start + v}: features {f.shape} / boxes {b.shape} do not match "
                                 f"[k, {', '.join(map(str, self.clip_shape))}] / [k, {BOX_DIM}]")
            per_video_f[v], per_video_b[v] = f, b
        counts = [len(f) for f in per_video_f]
        chunk = self._chunk_group(c)
        gen = None
        with working_on("store chunk", self._chunks_dir / str(c)):
            if sum(counts):
                gen = f"g{uuid.uuid4().hex[:12]}"
                data = chunk.create_group(gen)
                for name, values, dtype in (("features", per_video_f, self.dtype), ("boxes", per_video_b, np.float32)):
                    flat = np.concatenate(values).astype(dtype, copy=False)
                    arr = data.create_array(name, shape=flat.shape, chunks=flat.shape, dtype=dtype, fill_value=0,
                                            compressors=compressors_for("none"))
                    persistent(arr)[...] = flat
                    sync_chunk(self.root, arr, 0)
            chunk.attrs.update({"data": gen, "counts": counts})  # the switch: one atomic file write
            sync_file(self._chunks_dir / str(c) / "zarr.json")
        self.flags.write(idx, {}, done=ok, mark=mark)  # no arrays of its own: the done flags (with ``mark``)
        # the old generation, and any left by a writer killed before its switch
        for stale in (p for p in (self._chunks_dir / str(c)).iterdir() if p.is_dir() and p.name != gen):
            shutil.rmtree(stale, ignore_errors=True)
        for key in [k for k in self._row_readers if k[0] == c]:
            del self._row_readers[key]

    def release_maps(self) -> None:
        self.flags.release_maps()
        for reader in self._row_readers.values():
            if reader is not None:
                reader.release()
        self._row_readers.clear()

    def _chunk_group(self, c: int) -> zarr.Group:
        chunks = self.group["chunks"]
        try:  # one lookup: listing every chunk group's metadata per write costs ~1 s at 8k chunks
            return chunks[str(c)]
        except KeyError:
            return chunks.create_group(str(c))

    # ------------------------------------------------------------- checking

    def chunk_folder(self, c: int) -> Path:
        """The folder of chunk ``c`` (its pointer and generations), relative to the store's root."""
        return Path(self.group.path) / "chunks" / str(c)

    def unreadable_file(self, c: int) -> tuple[Path, str] | None:
        """The first file of chunk ``c`` that cannot be read back (its pointer, its rows' metadata, a rows
        file of another size than the pointer's generation holds), relative to the store, and why."""
        folder = self.chunk_folder(c)
        try:
            gen = self._pointer(c)["data"]
        except Exception as exc:  # noqa: BLE001 - whatever a damaged pointer raises, it is unreadable
            return folder / "zarr.json", describe_error(exc)
        if gen is None:
            return None
        for name in ("features", "boxes"):
            try:
                arr = self._rows_array(c, str(gen), name)
            except KeyError:
                return folder / str(gen) / name, "missing"
            except Exception as exc:  # noqa: BLE001
                return folder / str(gen) / name / "zarr.json", describe_error(exc)
            problem = chunk_file_problem(self.root, arr, 0)
            if problem:
                return chunk_path(arr, 0), problem
        return None

    def check_chunk(self, start: int, stop: int, done_rows: np.ndarray) -> list[str]:
        """Done videos of one chunk have clips, and the chunk's rows are on disk in the stated number."""
        where = self.name if "/" in self.name else f"views/{self.name}"  # a view, or a ragged row group
        c = start // self.chunk_videos
        pointer = self._pointer(c)
        counts = self._chunk_counts(c)
        if len(counts) != stop - start:
            return [f"{where}: chunk {c} records {len(counts)} videos, expected {stop - start}"]
        empty = done_rows[counts[done_rows - start] < 1]
        problems = [f"{where}: done videos without clips {empty[:5].tolist()}"] if empty.size else []
        if counts.sum():
            for name in ("features", "boxes"):
                try:
                    arr = self._rows_array(c, str(pointer["data"]), name)
                except KeyError:
                    problems.append(f"{where}: rows of videos {start}-{stop - 1} marked done but never written")
                    return problems
                if arr.shape[0] != counts.sum():
                    problems.append(f"{where}/{name}: chunk {c} holds {arr.shape[0]} rows, counts say {counts.sum()}")
        return problems


def open_view(name: str, group: zarr.Group, root: Path, chunk_videos: int) -> View:
    """The view object for a stored group, by its layout (no ``layout`` attribute: fixed)."""
    layout = group.attrs.get("layout", "fixed")
    if layout not in LAYOUTS:
        raise StoreError(f"view '{name}' has layout {layout!r}; this vssl reads {', '.join(LAYOUTS)} (upgrade vssl)")
    return (RaggedView if layout == "ragged" else FixedView)(name, group, root, chunk_videos)
