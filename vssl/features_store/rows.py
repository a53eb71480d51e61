"""Per-video row groups: arrays chunked along N (whole videos per chunk) plus a done flag.

A view (``views/<name>``) and an aggregate (``aggregates/<run>/<view>``) are both row groups.
Writes are whole-chunk read-modify-writes by one writer, data first and the ``status``
chunk last, so a killed writer leaves either the old chunk or the new one (zarr's local
store writes a temporary file and renames it) and never a row marked done without data.

Reads of random rows are served by memory-mapping the chunk files directly when an array
is stored uncompressed and unsharded (a chunk file is then the raw little-endian C-order
block, per the zarr v3 ``bytes`` codec): zarr's generic path costs ~0.1-1 ms per chunk,
which makes a random batch of 512 videos 20-100x slower than a memmap (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import mmap
import os
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from vssl.errors import StoreError, working_on

from .schema import STATUS_DONE

COMPRESSIONS = ("none", "zstd")


def compressors_for(compression: str):
    """zarr compressor list for a compression name ('none' keeps chunks memory-mappable)."""
    if compression == "none":
        return None
    if compression == "zstd":
        return BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle)
    raise StoreError(f"unknown compression '{compression}'; choose one of {', '.join(COMPRESSIONS)}")


MAX_MAPS_ENV = "VSSL_MAX_MAPS"
#: live chunk maps a process keeps at most (Linux refuses maps past vm.max_map_count, 65,530 by default,
#: which a 1M-video store's ~8k chunk files per array pass in one verify or training load)
DEFAULT_MAX_MAPS = 4096

#: every live chunk map of the process, least recently used first: (reader id, chunk) -> reader
_LIVE: "OrderedDict[tuple[int, int], weakref.ref]" = OrderedDict()


def max_maps() -> int:
    """The process's bound on live chunk maps (``VSSL_MAX_MAPS``, default 4096)."""
    try:
        return max(1, int(os.environ.get(MAX_MAPS_ENV, "") or DEFAULT_MAX_MAPS))
    except ValueError:
        return DEFAULT_MAX_MAPS


def live_maps() -> int:
    """Chunk maps currently held by this process's readers."""
    return sum(1 for ref in _LIVE.values() if ref() is not None)


class ChunkMemmapReader:
    """Gathers rows of an uncompressed, unsharded zarr array by memory-mapping its chunk files.

    In a writable store, chunk files are re-mapped when they change on disk (a writer replaced
    them), so a reader that lives across writes never sees stale data; a read-only store maps
    each chunk once. Chunks never written read as the fill value.

    Maps are bounded process-wide (least recently used first out, :func:`max_maps`) and
    :meth:`release` drops a reader's after a sequential scan: every map costs one of the
    kernel's ``vm.max_map_count`` entries until it is unmapped (rows are copied out, so dropping
    the reference unmaps it).
    """

    def __init__(self, array: zarr.Array, root: Path) -> None:
        self.revalidate = not array.read_only
        self.array = array
        self.chunk_rows = array.chunks[0]
        self.row_shape = tuple(array.shape[1:])
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.fill = array.fill_value
        self.root = root
        self._maps: dict[int, tuple[tuple[int, int], np.ndarray | None]] = {}

    @staticmethod
    def supports(array: zarr.Array) -> bool:
        codecs = array.metadata.codecs
        return (len(codecs) == 1 and type(codecs[0]).__name__ == "BytesCodec"
                and tuple(array.chunks[1:]) == tuple(array.shape[1:]) and np.dtype(array.dtype).kind in "fiub")

    def _chunk(self, c: int) -> np.ndarray | None:
        cached = self._maps.get(c)
        if cached is not None and cached[1] is not None and (id(self), c) in _LIVE:
            _LIVE.move_to_end((id(self), c))
        if cached is not None and not self.revalidate:
            return cached[1]  # a read-only store does not change under us
        path = chunk_file(self.root, self.array, c)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if self.revalidate:
                self._maps.pop(c, None)
            else:
                self._maps[c] = ((0, 0), None)
            return None
        stamp = (st.st_mtime_ns, st.st_ino)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        while len(_LIVE) >= max_maps():  # unmap the least recently used (of any reader) first
            (_, old), ref = _LIVE.popitem(last=False)
            owner = ref()
            if owner is not None:
                owner._maps.pop(old, None)
        # A plain ndarray over the mapping: np.memmap's subclass overhead on every slice
        # costs more than the copy for small gathers.
        with working_on("store chunk", path):  # a truncated or emptied file fails here
            with open(path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            arr = np.frombuffer(mapped, dtype=self.dtype).reshape((self.chunk_rows,) + self.row_shape)
        self._maps[c] = (stamp, arr)
        _LIVE[(id(self), c)] = weakref.ref(self)
        _LIVE.move_to_end((id(self), c))
        return arr

    def release(self) -> None:
        """Unmap every chunk this reader holds (after a sequential scan)."""
        for c in list(self._maps):
            _LIVE.pop((id(self), c), None)
        self._maps.clear()

    def read(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices),) + self.row_shape, dtype=self.dtype.newbyteorder("="))
        if len(indices) == 0:
            return out
        order = np.argsort(indices, kind="stable")
        sorted_idx = indices[order]
        chunk_of = sorted_idx // self.chunk_rows
        # boundaries of each run of equal chunk ids in the sorted indices
        cuts = np.flatnonzero(np.diff(chunk_of)) + 1
        starts = np.concatenate(([0], cuts))
        stops = np.concatenate((cuts, [len(sorted_idx)]))
        for a, b in zip(starts.tolist(), stops.tolist()):
            c = int(chunk_of[a])
            mm = self._chunk(c)
            dest = order[a:b]
            if mm is None:
                out[dest] = self.fill
            else:
                out[dest] = mm[sorted_idx[a:b] - c * self.chunk_rows]
        return out


def persistent(array: zarr.Array) -> zarr.Array:
    """The array with every written chunk kept on disk, all-zero ones too.

    By default zarr drops (and deletes) a chunk that equals the fill value; a store row of
    zeros is still data, and "done but its chunk file is missing" must mean a lost write.
    """
    return array.with_config({"write_empty_chunks": True})


def sync_file(path: str | Path) -> None:
    """fsync one file (gone or unreadable: nothing to do). Network file system clients (NFS, Lustre)
    may send writes out of order; what must land before a done flag is synced before it is written."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def chunk_file(root: Path, array: zarr.Array, c: int) -> Path:
    """The file of chunk ``c`` (along N; whole along the other axes) of ``array`` in the store at ``root``."""
    return root / chunk_path(array, c)


def array_dir(array: zarr.Array) -> str:
    """The folder of ``array`` on disk (its address off a local disk), for messages."""
    root = getattr(array.store_path.store, "root", None)
    return str(Path(root) / array.path) if root is not None else str(array.store_path)


def sync_chunk(root: Path, array: zarr.Array, c: int) -> None:
    """fsync the file of chunk ``c`` (along N) of ``array`` in the store at ``root``."""
    sync_file(root / chunk_path(array, c))


def chunk_path(array: zarr.Array, c: int) -> Path:
    """The file of chunk ``c`` (along N) of ``array``, relative to the store's root."""
    return Path(array.path) / array.metadata.encode_chunk_key((c,) + (0,) * (array.ndim - 1))


def chunk_file_problem(root: Path, array: zarr.Array, c: int) -> str | None:
    """Why the file of chunk ``c`` of ``array`` cannot hold its rows, from a ``stat`` alone: "missing", or
    a raw (uncompressed) chunk of another size than its rows take (truncated by a full disk or a copy cut
    short); None otherwise (a compressed chunk tells only when decoded)."""
    try:
        size = os.stat(root / chunk_path(array, c)).st_size
    except FileNotFoundError:
        return "missing"
    if ChunkMemmapReader.supports(array):
        expected = int(np.prod(array.chunks)) * np.dtype(array.dtype).itemsize
        if size != expected:
            return f"{'truncated: ' if size < expected else ''}{size} bytes, {expected} expected"
    return None


def describe_error(exc: BaseException) -> str:
    """An exception as a short clause of a one-line message: its type and first 120 characters."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def chunk_bounds(indices: np.ndarray, chunk_videos: int, num_videos: int) -> tuple[int, int]:
    """(start, stop) of the one chunk holding every index; refuse indices spanning chunks."""
    c = int(indices[0]) // chunk_videos
    if np.any(indices // chunk_videos != c) or indices.min() < 0 or indices.max() >= num_videos:
        raise ValueError("a write must stay inside one chunk of videos (whole-chunk writes)")
    return c * chunk_videos, min(num_videos, (c + 1) * chunk_videos)


def gather_rows(array: zarr.Array, indices: np.ndarray, reader: ChunkMemmapReader | None) -> np.ndarray:
    """Rows ``indices`` (any order, repeats allowed) of ``array``; memmap fast path when possible."""
    if reader is not None:
        return reader.read(indices)
    uniq, inverse = np.unique(indices, return_inverse=True)
    with working_on("store array", array_dir(array)):  # e.g. a chunk file that does not decompress
        return np.asarray(array.oindex[uniq])[inverse]


class RowGroup:
    """A group of per-video arrays (all chunked alike along N) with a ``status`` done flag."""

    def __init__(self, group: zarr.Group, root: Path, chunk_videos: int) -> None:
        self.group = group
        self.root = root
        self.chunk_videos = chunk_videos
        self.num_videos = int(group["status"].shape[0])
        self.array_names = [k for k in sorted(group.array_keys()) if k != "status"]
        self._arrays = {name: persistent(group[name]) for name in (*self.array_names, "status")}
        self._readers: dict[str, ChunkMemmapReader | None] = {}

    # ------------------------------------------------------------- creation

    @staticmethod
    def create(parent: zarr.Group, name: str, num_videos: int, chunk_videos: int,
               arrays: Mapping[str, tuple[tuple[int, ...], str]], attrs: Mapping,
               compression: str = "none") -> zarr.Group:
        group = parent.create_group(name, attributes=dict(attrs))
        for arr_name, (tail, dtype) in arrays.items():
            if arr_name == "status":
                raise StoreError("'status' is reserved for the done flag of a row group")
            group.create_array(arr_name, shape=(num_videos, *tail), chunks=(chunk_videos, *tail),
                               dtype=dtype, fill_value=0, compressors=compressors_for(compression))
        group.create_array("status", shape=(num_videos,), chunks=(chunk_videos,), dtype="uint8",
                           fill_value=0, compressors=None)
        return group

    # ------------------------------------------------------------- reading

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    def array(self, name: str) -> zarr.Array:
        return self._arrays[name]

    def _reader(self, name: str) -> ChunkMemmapReader | None:
        if name not in self._readers:
            arr = self._arrays[name]
            self._readers[name] = ChunkMemmapReader(arr, self.root) if ChunkMemmapReader.supports(arr) else None
        return self._readers[name]

    def read(self, name: str, indices: np.ndarray | slice | Iterable[int]) -> np.ndarray:
        """Rows of array ``name`` for an index array (any order) or a slice."""
        if isinstance(indices, slice):
            return np.asarray(self._arrays[name][indices])
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_videos):
            raise IndexError(f"video index out of range [0, {self.num_videos})")
        return gather_rows(self._arrays[name], idx, self._reader(name))

    def release_maps(self) -> None:
        """Unmap the chunk files read so far (a sequential scan is over; reads map them again)."""
        for reader in self._readers.values():
            if reader is not None:
                reader.release()

    def done(self, rows: slice | None = None) -> np.ndarray:
        """Boolean [N] (or of ``rows``, reading only their chunks): rows whose data is complete."""
        return np.asarray(self._arrays["status"][slice(None) if rows is None else rows]) == STATUS_DONE

    def pending(self, exclude: np.ndarray | None = None) -> np.ndarray:
        """Indices of rows not done (minus the boolean mask ``exclude``, e.g. failed videos)."""
        todo = ~self.done()
        if exclude is not None:
            todo &= ~exclude
        return np.flatnonzero(todo)

    # ------------------------------------------------------------- writing

    def write(self, indices: np.ndarray, data: Mapping[str, np.ndarray],
              done: np.ndarray | None = None, mark: bool = True) -> None:
        """Write rows ``indices`` (inside one chunk) of every array, fsync them, then their done flags.

        ``done`` (bool per index, default all True) lets a caller write rows that stay pending
        (a failed video). Rows of the chunk not in ``indices`` keep their stored values.
        ``mark=False`` writes the data only; the caller sets the flags later (:meth:`mark`).
        """
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return
        missing = set(self.array_names) - set(data)
        if missing:
            raise ValueError(f"write is missing arrays {sorted(missing)}")
        start, stop = chunk_bounds(indices, self.chunk_videos, self.num_videos)
        local = indices - start
        whole = len(np.unique(local)) == stop - start
        for name in self.array_names:
            arr = self._arrays[name]
            with working_on("store chunk", chunk_file(self.root, arr, start // self.chunk_videos)):
                block = (np.zeros((stop - start, *arr.shape[1:]), dtype=arr.dtype) if whole
                         else np.asarray(arr[start:stop]))
                block[local] = np.asarray(data[name], dtype=arr.dtype)
                arr[start:stop] = block
                sync_chunk(self.root, arr, start // self.chunk_videos)
        if mark:
            self.mark(indices, done)

    def mark(self, indices: np.ndarray, done: np.ndarray | None = None) -> None:
        """Set the done flags of rows ``indices`` (inside one chunk; ``done`` False: pending), durably."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return
        start, stop = chunk_bounds(indices, self.chunk_videos, self.num_videos)
        local = indices - start
        status = self._arrays["status"]
        with working_on("store chunk", chunk_file(self.root, status, start // self.chunk_videos)):
            flags = np.asarray(status[start:stop])
            flags[local] = STATUS_DONE if done is None else np.where(np.asarray(done, bool), STATUS_DONE, 0)
            status[start:stop] = flags
            sync_chunk(self.root, status, start // self.chunk_videos)
