"""The feature store: one zarr v3 directory holding a video table, views and aggregates.

Layout (DESIGN.md): root attrs ``vssl_format``, ``vssl_version``, ``backbone``, ``classes``,
``chunk_videos``; ``videos/`` (path, label, split, num_frames, fps, status, error);
``views/<name>/`` (features [N,K,D], boxes [N,K,7], status [N], or the ragged layout of
:mod:`.views`); ``aggregates/<run>/<view>/``.
Every per-video array is chunked by the same ``chunk_videos`` rows along N, so a writer that
owns a chunk-aligned range of videos owns every file those rows live in. The one exception,
``videos/size`` (each file's size, recorded at creation for planning), is written once, by the
creator, as one chunk, and never again: a planner reads it in one file.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import zarr

from vssl import __version__
from vssl.errors import StoreError

from .rows import COMPRESSIONS, RowGroup, chunk_bounds, persistent, sync_chunk
from .schema import (FORMAT_VERSION, PRECISIONS, STATUS_DONE, STATUS_FAILED, BackboneSpec, VideoEntry,
                     chunk_videos_for, default_chunk_videos)
from .views import View, as_clip_shape, open_view

VIDEO_COLUMNS = {  # name -> dtype; strings are zarr variable-length UTF-8
    "path": str, "label": "int64", "split": str, "num_frames": "int64",
    "fps": "float64", "status": "int8", "error": str,
}
#: written at creation by this vssl, absent from older stores: each video's file size in bytes
#: (0: unreadable then), the weight multi-process planning balances by (vssl.distributed.planning)
SIZE_COLUMN = "size"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
#: optional video-table arrays: ``videos/multi_hot`` [N, C] uint8 and ``videos/target_<name>``
#: [N] float64, written only for multi-label / regression data, so older stores open unchanged
TARGET_PREFIX = "target_"


def _write_label_columns(table: zarr.Group, videos: Sequence[VideoEntry], num_classes: int, chunk: int) -> None:
    """The multi-hot classes and numeric targets of ``videos``, when any video has them."""
    n = len(videos)
    if any(v.classes for v in videos):
        hot = np.zeros((n, num_classes), dtype=np.uint8)
        for i, v in enumerate(videos):
            hot[i, list(v.classes)] = 1
        table.create_array("multi_hot", shape=hot.shape, chunks=(chunk, max(num_classes, 1)), dtype="uint8",
                           compressors=None, fill_value=0)
        table["multi_hot"][:] = hot
    names = sorted({name for v in videos for name, _ in v.targets})
    for name in names:
        _check_name("target", name)
        values = np.array([dict(v.targets).get(name, np.nan) for v in videos], dtype=np.float64)
        table.create_array(f"{TARGET_PREFIX}{name}", shape=(n,), chunks=(chunk,), dtype="float64",
                           compressors=None, fill_value=np.nan)
        table[f"{TARGET_PREFIX}{name}"][:] = values


def _to_unicode(values: np.ndarray) -> np.ndarray:
    """A fixed-width unicode copy of a string/object array (what numpy users expect)."""
    return np.array([str(v) for v in values.tolist()], dtype=str) if values.size else np.array([], dtype=str)


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise StoreError(f"invalid {kind} name '{name}': use letters, digits, '_', '-', '.'")


@dataclass(frozen=True)
class VideoClips:
    """One video's clips in a view, as :meth:`FeatureStore.iter_videos` yields them."""

    index: int              # the video's row in the store
    path: str               # its path as the store records it
    features: np.ndarray    # [k, *clip_shape], the view's stored dtype
    boxes: np.ndarray       # [k, 7] float32


def _shape_words(clip_shape: tuple[int, ...]) -> str:
    """A clip's feature shape as the messages have always named a width: "D=768", or "clip shape (8, 768)"."""
    return f"D={clip_shape[0]}" if len(clip_shape) == 1 else f"clip shape {clip_shape}"


def _legacy_store_id(path: Path) -> str:
    st = os.stat(path / "zarr.json")
    return f"{os.stat(path).st_ino}-{st.st_mtime_ns}"


class FeatureStore:
    """A vssl feature store on local disk. Use :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, root: zarr.Group) -> None:
        self.path = path
        self.root = root
        attrs = root.attrs
        self.backbone = BackboneSpec.from_dict(attrs["backbone"])
        self.classes: list[str] = list(attrs.get("classes", []))
        self.chunk_videos = int(attrs["chunk_videos"])
        # stores made before the attribute: the directory's inode and metadata time (a remade store differs)
        self.store_id = str(attrs.get("store_id") or _legacy_store_id(path))
        self.read_only = root.read_only
        # zarr opens an array by reading its metadata from disk: keep the handles.
        columns = [*VIDEO_COLUMNS, *([SIZE_COLUMN] if SIZE_COLUMN in root["videos"].array_keys() else [])]
        self._table = {name: persistent(root[f"videos/{name}"]) for name in columns}
        self.num_videos = int(self._table["status"].shape[0])
        self._views: dict[str, View] = {}

    # ----------------------------------------------------------------- create / open

    @classmethod
    def create(cls, path: str | Path, backbone: BackboneSpec, videos: Sequence[VideoEntry],
               classes: Sequence[str] = (), chunk_videos: int | None = None,
               sizes: Sequence[int] | None = None, video_bytes: int | None = None) -> "FeatureStore":
        """Create a new store for ``videos`` whose clips ``backbone`` will embed.

        ``sizes``: each video's file size in bytes, stored so that every process plans the work
        from the same numbers (a file unreadable on one node must not change anyone's plan).
        ``chunk_videos``: videos per chunk of every per-video array; by default sized by bytes
        (:func:`~vssl.features_store.schema.chunk_videos_for`) from ``video_bytes``, the bytes of one
        video in the store's largest view (:func:`~vssl.features_store.schema.video_bytes`; every view
        shares the store's chunking), else from K=16 clips of one vector each. A store keeps the
        chunking it was created with.
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise StoreError(f"{path} already exists and is not empty; open it or choose another --out")
        if not videos:
            raise StoreError("no videos to put in the store")
        by_bytes = chunk_videos_for(video_bytes) if video_bytes else default_chunk_videos(backbone.embed_dim)
        chunk = chunk_videos or by_bytes
        if chunk < 1:
            raise StoreError(f"chunk_videos must be >= 1, got {chunk}")
        # Built in a hidden sibling directory and renamed into place, so no other process
        # (a shard, a torchrun rank) can open a half-written video table.
        staging = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:8]}")
        try:
            root = zarr.open_group(str(staging), mode="w-", zarr_format=3, attributes={
                "vssl_format": FORMAT_VERSION, "vssl_version": __version__,
                "backbone": backbone.to_dict(), "classes": list(classes), "chunk_videos": chunk,
                "store_id": uuid.uuid4().hex,  # this creation: a store made anew at the same path is another
            })
            n = len(videos)
            table = root.create_group("videos")
            for name, dtype in VIDEO_COLUMNS.items():
                table.create_array(name, shape=(n,), chunks=(chunk,), dtype=dtype, compressors=None,
                                   fill_value="" if dtype is str else 0)
            table["path"][:] = np.array([v.path for v in videos], dtype=str)
            table["label"][:] = np.array([v.label for v in videos], dtype=np.int64)
            table["split"][:] = np.array([v.split for v in videos], dtype=str)
            _write_label_columns(table, videos, len(classes), chunk)
            if sizes is not None:
                table.create_array(SIZE_COLUMN, shape=(n,), chunks=(max(n, 1),), dtype="int64", compressors=None,
                                   fill_value=0)[:] = np.asarray(sizes, dtype=np.int64)
            root.create_group("views")
            root.create_group("aggregates")
            os.rename(staging, path)  # replaces an empty directory; fails if another creator won
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreError(f"cannot create the store {path} ({exc.strerror or exc}); "
                             "is another process creating it?") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls.open(path, mode="r+")

    @staticmethod
    def exists(path: str | Path) -> bool:
        """True when ``path`` holds a store (created whole: creation renames it into place)."""
        return (Path(path) / "zarr.json").is_file()

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "FeatureStore":
        """Open an existing store; ``mode`` 'r' (read) or 'r+' (write rows, add views)."""
        path = Path(path)
        if not path.exists():
            raise StoreError(f"feature store not found: {path}")
        if not cls.exists(path):
            raise StoreError(f"{path} is not a vssl feature store (no zarr.json); create one with `vssl extract`")
        try:
            root = zarr.open_group(str(path), mode=mode)
        except Exception as exc:  # corrupt metadata
            raise StoreError(f"{path}: cannot open as a zarr group ({exc})") from None
        fmt = root.attrs.get("vssl_format")
        if fmt is None or "backbone" not in root.attrs:
            raise StoreError(f"{path} is a zarr group but not a vssl feature store (no vssl_format attribute)")
        if not isinstance(fmt, int) or fmt > FORMAT_VERSION or fmt < 1:
            raise StoreError(f"{path} has vssl_format {fmt!r}; this vssl {__version__} reads format "
                             f"{FORMAT_VERSION} (upgrade vssl)")
        return cls(path, root)

    # ----------------------------------------------------------------- the video table

    def _column(self, name: str) -> np.ndarray:
        return np.asarray(self._table[name][:])

    def _text_column(self, name: str) -> np.ndarray:
        # zarr returns numpy's StringDType, which does not cast to '<U' without a size.
        return _to_unicode(self._column(name))

    def paths(self) -> np.ndarray:
        return self._text_column("path")

    def labels(self) -> np.ndarray:
        return self._column("label").astype(np.int64)

    def multi_hot(self) -> np.ndarray | None:
        """``[N, C]`` uint8 class membership of a multi-label store; None for a single-label one
        (and for every store written before multi-label data existed)."""
        if "multi_hot" not in self.root["videos"]:
            return None
        return np.asarray(self.root["videos/multi_hot"][:])

    def target_names(self) -> list[str]:
        """The numeric manifest columns stored as regression targets (none in older stores)."""
        prefix = TARGET_PREFIX
        return sorted(name[len(prefix):] for name in self.root["videos"].array_keys() if name.startswith(prefix))

    def targets(self, name: str) -> np.ndarray:
        """``[N]`` float64 values of target ``name`` (NaN where a video has none)."""
        if name not in self.target_names():
            have = ", ".join(self.target_names()) or "none"
            raise StoreError(f"{self.path} has no target '{name}' (targets: {have}); give the column in the "
                             "manifest's header (path,label,split,NAME) and extract again")
        return np.asarray(self.root[f"videos/{TARGET_PREFIX}{name}"][:], dtype=np.float64)

    def splits(self) -> np.ndarray:
        return self._text_column("split")

    def video_status(self, rows: slice | None = None) -> np.ndarray:
        """Status of every video, or of the videos of ``rows`` (reads only their chunks)."""
        if rows is not None:
            return np.asarray(self._table["status"][rows]).astype(np.int8)
        return self._column("status").astype(np.int8)

    def sizes(self) -> np.ndarray | None:
        """File size of each video recorded at creation (None for a store made before sizes were kept)."""
        return self._column(SIZE_COLUMN) if SIZE_COLUMN in self._table else None

    def errors(self) -> np.ndarray:
        return self._text_column("error")

    def num_frames(self) -> np.ndarray:
        return self._column("num_frames")

    def fps(self) -> np.ndarray:
        return self._column("fps")

    def split_indices(self, split: str) -> np.ndarray:
        splits = self.splits()
        idx = np.flatnonzero(splits == split)
        if idx.size == 0:
            known = ", ".join(sorted(set(splits.tolist()) - {""})) or "none"
            raise StoreError(f"split '{split}' has no videos in {self.path} (splits: {known})")
        return idx

    def chunk_ranges(self, shard: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Chunk-aligned (start, stop) video ranges; shard ``(i, n)`` gets the i-th contiguous part."""
        n_chunks = -(-self.num_videos // self.chunk_videos)
        chunks = range(n_chunks)
        if shard is not None:
            i, n = shard
            if not (n >= 1 and 0 <= i < n):
                raise StoreError(f"invalid shard {i}/{n}: need 0 <= i < n")
            chunks = range(i * n_chunks // n, (i + 1) * n_chunks // n)
        return [(c * self.chunk_videos, min(self.num_videos, (c + 1) * self.chunk_videos)) for c in chunks]

    def usable(self, view: str) -> np.ndarray:
        """Boolean [N]: videos whose rows in ``view`` are done and whose table entry says done.

        The one rule every stage uses to choose the rows it may read. A view done for a video the
        table calls pending or failed (a writer killed between the two, or an older vssl's order)
        is not done.
        """
        return self.view(view).done() & (self.video_status() == STATUS_DONE)

    def iter_videos(self, view: str) -> Iterator[VideoClips]:
        """The usable videos of ``view`` (:meth:`usable`), in store order, one at a time.

        What an exporter writes from: one video's rows in memory, never a chunk's (a chunk read whole
        is padded to its longest film, and a chunk of token grids is hundreds of megabytes).
        """
        stored = self.view(view)  # an unknown view: one line naming the views there are
        usable = self.usable(view)
        paths = self.paths()
        for start, stop in self.chunk_ranges():
            for i in (np.flatnonzero(usable[start:stop]) + start).tolist():
                got = stored.read(np.array([i]))
                k = int(got.counts[0])
                yield VideoClips(i, str(paths[i]), got.features[0, :k], got.boxes[0, :k])

    def check_backbone(self, backbone: BackboneSpec, fields: Sequence[str] | None = None,
                       fix: str = "use a new --out store", who: str | None = None) -> None:
        """Refuse features of another backbone (or other clip settings) than this store's.

        The one identity rule of the toolkit: extraction into an existing store, a SCALE run's
        export and its probe all compare with it. ``fields`` limits the comparison to what the
        other side recorded (runs of vssl 0.1 recorded the name and checkpoint hash only).
        """
        diffs = self.backbone.differences(backbone, fields)
        if diffs:
            source = f"{who} was made from features of another backbone setup than {self.path}" if who else \
                f"{self.path} holds features of another backbone setup"
            raise StoreError(f"{source} ({'; '.join(diffs)}); {fix}")

    # ----------------------------------------------------------------- views and row groups

    def view_names(self) -> list[str]:
        return sorted(self.root["views"].group_keys())

    def create_view(self, name: str, num_clips: int | None, spec: Mapping, dtype: str = "float16",
                    compression: str = "none", record: Mapping | None = None,
                    clip_shape: Sequence[int] | None = None) -> View:
        """Add ``views/<name>`` (or return it if it exists with the same K, clip shape, dtype and spec).

        ``num_clips`` None: a ragged view (a variable number of clips per video, never compressed).
        ``record``: the settings of the run that creates it (kept as the ``extract`` attribute).
        ``clip_shape``: the shape of one clip's feature (default ``(embed_dim,)``, one vector per clip, which is
        the backbone's width); a grid of tokens ends with the encoder's token width, which may differ (CLIP's
        tokens keep the transformer's width, its embedding is their projection).
        """
        _check_name("view", name)
        if np.dtype(dtype) not in (np.float16, np.float32):
            raise StoreError(f"view dtype must be float16 or float32, got {dtype}")
        if compression not in COMPRESSIONS:
            raise StoreError(f"unknown compression '{compression}'; choose one of {', '.join(COMPRESSIONS)}")
        shape = as_clip_shape(self.backbone.embed_dim if clip_shape is None else clip_shape)
        if len(shape) == 1 and shape[0] != self.backbone.embed_dim:
            raise StoreError(f"view '{name}': one vector per clip of width {shape[0]} must be the backbone's width "
                             f"{self.backbone.embed_dim}")
        spec = dict(spec)
        if name not in self.view_names() and self._create_view_atomically(
                name, num_clips, shape, dtype, spec, compression, record):
            return self.view(name)
        if name in self.view_names():
            view = self.view(name)
            wanted = (num_clips, shape, np.dtype(dtype), spec)
            have = (view.num_clips, view.clip_shape, view.dtype, view.spec)
            if wanted != have:
                k = lambda n: "variable" if n is None else n  # noqa: E731
                raise StoreError(f"view '{name}' exists with K={k(view.num_clips)}, {_shape_words(view.clip_shape)}, "
                                 f"{view.dtype}, spec {view.spec}; requested K={k(num_clips)}, {_shape_words(shape)}, "
                                 f"{np.dtype(dtype)}, spec {spec}; name the new view differently (NAME=SPEC)")
            return view
        raise StoreError(f"cannot create view '{name}' in {self.path}")

    def _create_view_atomically(self, name: str, num_clips: int | None, clip_shape: tuple[int, ...], dtype: str,
                                spec: Mapping, compression: str, record: Mapping | None) -> bool:
        """Build ``views/<name>`` whole in a staging folder beside the store and rename it into place (the
        store's own creation rule), so a concurrent process sees the view complete or not at all (never
        the group before its ``features`` array). False when another process created it first."""
        staging = self.path.with_name(f".{self.path.name}.view-{name}-{uuid.uuid4().hex[:8]}")
        try:
            parent = zarr.open_group(str(staging), mode="w-", zarr_format=3)
            View.create(parent, name, self.num_videos, self.chunk_videos, num_clips, clip_shape, dtype,
                        spec, compression, record)
            try:
                os.rename(staging / name, self.path / "views" / name)
            except OSError:
                if not (self.path / "views" / name / "zarr.json").is_file():
                    raise
                return False  # another process's view is in place
            return True
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def view(self, name: str) -> View:
        if name not in self._views:
            if name not in self.view_names():
                known = ", ".join(self.view_names()) or "none yet"
                raise StoreError(f"{self.path} has no view '{name}' (views: {known})")
            self._views[name] = open_view(name, self.root[f"views/{name}"], self.path, self.chunk_videos)
        return self._views[name]

    def view_precision(self, name: str) -> str:
        """The precision the rows of view ``name`` were computed in; "" when no record says.

        Its record's (a view made by this vssl records the resolved one; before ``auto`` existed a
        record held the flag as given, always a concrete one), else the store's (recorded since
        one store holds one precision). Neither: a view of a store made before precisions were
        recorded, extracted then under the flag's default (fp32), or since under ``auto``.
        """
        recorded = self.view(name).record.get("precision")
        return recorded if recorded in PRECISIONS else self.backbone.precision

    def create_row_group(self, group_path: str, arrays: Mapping[str, tuple[tuple[int, ...], str]],
                         attrs: Mapping | None = None, compression: str = "none") -> RowGroup:
        """Create a per-video row group such as ``aggregates/<run>/<view>`` (parents made as needed)."""
        parent, leaf = self._new_group_parent(group_path)
        RowGroup.create(parent, leaf, self.num_videos, self.chunk_videos, arrays, attrs or {}, compression)
        return self.row_group(group_path)

    def create_ragged_group(self, group_path: str, dim: int | Sequence[int], dtype: str = "float32",
                            attrs: Mapping | None = None) -> View:
        """Create a per-clip row group in the ragged layout outside ``views/`` (a variable number of
        rows of shape ``dim`` per video, a width or a clip's feature shape, with their boxes), e.g.
        SCALE's refined clips of a ragged view;
        written and read as a ragged view (:class:`~vssl.features_store.views.RaggedView`)."""
        parent, leaf = self._new_group_parent(group_path)
        View.create(parent, leaf, self.num_videos, self.chunk_videos, None, dim, dtype, dict(attrs or {}), "none")
        return self.ragged_group(group_path)

    def ragged_group(self, group_path: str) -> View:
        """A ragged row group made by :meth:`create_ragged_group`."""
        if not self.has_row_group(group_path) or self.root[group_path.strip("/")].attrs.get("layout") != "ragged":
            raise StoreError(f"{self.path} has no ragged row group '{group_path}'")
        return open_view(group_path.strip("/"), self.root[group_path.strip("/")], self.path, self.chunk_videos)

    def _new_group_parent(self, group_path: str) -> tuple[zarr.Group, str]:
        """The parent group of a new row group (made as needed) and its leaf name; refuses an existing one."""
        *parents, leaf = group_path.strip("/").split("/")
        for part in (*parents, leaf):
            _check_name("group", part)
        parent = self.root
        for part in parents:
            parent = parent[part] if part in parent.group_keys() else parent.create_group(part)
        if leaf in parent.group_keys():
            raise StoreError(f"{group_path} already exists in {self.path}")
        return parent, leaf

    def has_row_group(self, group_path: str) -> bool:
        """Whether ``group_path`` is a per-video row group (a view or an aggregate)."""
        try:
            node = self.root[group_path.strip("/")]
        except KeyError:
            return False
        return isinstance(node, zarr.Group) and "status" in node.array_keys()

    def row_group(self, group_path: str) -> RowGroup:
        """The per-video row group at ``group_path`` (an aggregate's ``set_token``/``clips``, or a view's
        arrays and done flags read as plain rows)."""
        if not self.has_row_group(group_path):
            raise StoreError(f"{self.path} has no row group '{group_path}'")
        return RowGroup(self.root[group_path.strip("/")], self.path, self.chunk_videos)

    def row_group_paths(self) -> list[str]:
        """Every row group in the store (views and aggregates), as paths from the root."""
        found = []

        def walk(group: zarr.Group, prefix: str) -> None:
            if "status" in group.array_keys():
                found.append(prefix)
                return
            for key in sorted(group.group_keys()):
                walk(group[key], f"{prefix}/{key}" if prefix else key)

        for top in ("views", "aggregates"):
            if top in self.root.group_keys():
                walk(self.root[top], top)
        return found

    # ----------------------------------------------------------------- writing extracted videos

    def write_videos(self, indices: Sequence[int],
                     views: Mapping[str, tuple[np.ndarray | Sequence[np.ndarray], np.ndarray | Sequence[np.ndarray]]],
                     num_frames: Sequence[int], fps: Sequence[float],
                     errors: Sequence[str | None]) -> None:
        """Record a block of extracted videos, all inside one chunk of rows.

        ``views`` maps a view to (features, boxes): stacked arrays, or one ``[k, D]`` / ``[k, 7]``
        array per video (any k for a ragged view).

        A video with an error is marked failed (status 2, its error text kept) and stays pending
        in every view; the others become done. Order: the views' data, then the video table
        (status column last), then the views' done flags, each step synced before the next, so a
        killed writer never leaves a done row without data or without its table entry
        (num_frames, fps, status); readers treat a view done for a video the table does not
        call done as not done (:meth:`usable`, ``views_to_do``).
        """
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return
        if not (len(num_frames) == len(fps) == len(errors) == idx.size):
            raise ValueError("indices, num_frames, fps and errors must have the same length")
        chunk_bounds(idx, self.chunk_videos, self.num_videos)  # refuse a block spanning chunks up front
        ok = np.array([e is None for e in errors])
        for name, (features, boxes) in views.items():
            self.view(name).write_clips(idx, features, boxes, done=ok, mark=False)
        self._record_videos(idx, {
            "num_frames": np.asarray(num_frames, dtype=np.int64),
            "fps": np.asarray(fps, dtype=np.float64),
            "error": np.array(["" if e is None else str(e) for e in errors], dtype=object),
            "status": np.where(ok, STATUS_DONE, STATUS_FAILED).astype(np.int8),
        })
        for name in views:  # the done flags last
            self.view(name).mark(idx, ok)
        failed = idx[~ok]
        if failed.size:  # a video failing while a view is added is failed in every view, not only the new one
            for name in self.view_names():
                if name not in views:
                    self.view(name).mark(failed, np.zeros(failed.size, bool))

    def mark_pending(self, start: int, stop: int) -> None:
        """Make videos ``start``-``stop - 1`` (inside one chunk) pending in the video table, so extraction
        redoes them in every view: what ``vssl store verify --repair`` does once their table rows were lost."""
        idx = np.arange(start, stop)
        self._record_videos(idx, {"status": np.zeros(idx.size, np.int8)})

    def _record_videos(self, idx: np.ndarray, updates: Mapping[str, np.ndarray]) -> None:
        """Second step of :meth:`write_videos`: the video table's columns for ``idx``, status last."""
        table = self._table
        start, stop = chunk_bounds(idx, self.chunk_videos, self.num_videos)
        local = idx - start
        for column, values in updates.items():  # status last
            block = np.asarray(table[column][start:stop])
            if block.dtype.kind in "TU":
                block = block.astype(object)
            block[local] = values
            table[column][start:stop] = _to_unicode(block) if block.dtype == object else block
            sync_chunk(self.path, table[column], start // self.chunk_videos)  # each column lands before status


#: the row-group methods' names before "rows" was kept for rows alone (old name -> new name)
RENAMED_METHODS = {"rows": "row_group", "has_rows": "has_row_group", "create_rows": "create_row_group",
                   "ragged_rows": "ragged_group", "create_ragged_rows": "create_ragged_group"}


def _deprecated_alias(old: str, new: str):
    """``FeatureStore.<old>``: calls ``<new>`` and warns, so code written against the old name keeps working."""
    def method(self, *args, **kwargs):
        warnings.warn(f"FeatureStore.{old} is deprecated: use FeatureStore.{new}", DeprecationWarning, stacklevel=2)
        return getattr(self, new)(*args, **kwargs)
    method.__name__ = method.__qualname__ = old
    method.__doc__ = f"Deprecated name of :meth:`{new}`."
    return method


for _old, _new in RENAMED_METHODS.items():
    setattr(FeatureStore, _old, _deprecated_alias(_old, _new))
