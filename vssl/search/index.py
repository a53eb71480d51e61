"""faiss indexes of a store's gallery vectors, kept beside the store and never used when stale.

Three kinds (``vssl index --kind``):

- ``flat``: every vector, searched exactly by :func:`vssl.search.exact.exact_search` (the one tie
  rule: an index never changes what a search answers);
- ``ivf``: an inverted file (``IndexIVFFlat``, inner product): ``nlist = 4 sqrt(n)`` k-means lists
  (at most ``n / 39``, faiss's points-per-centroid floor), ``nprobe = 32`` of them searched;
- ``hnsw``: a graph (``IndexHNSWFlat``, inner product), ``M = 32`` links, ``efConstruction = 80``,
  ``efSearch = 128``.

The approximate defaults were chosen on clustered data (50,000 l2-normalised 64-d vectors around
1,000 Gaussian centres, noise as large as the centre): Recall@10 of exact's neighbours 0.99 for
``ivf`` (894 lists) and 1.00 for ``hnsw``; benchmarks/bench_search.py measures them at 1M x 768.

An index of a store lives in ``STORE.indexes/<name>/`` (a sibling, as ``STORE.claims/``: zarr warns
about foreign folders inside a store): the faiss file, the store rows (and clips) of its vectors, and
``record.json`` — the store id, view, features (and SCALE run with its checkpoint's SHA-256), kind and
parameters, vssl version, and a fingerprint of the view's usable rows and of the files that hold
them. :func:`matching_index` compares the record with the store as it is now: an index of another
store, of other rows (a video added, failed or re-extracted), or of another checkpoint is refused in
one line naming the ``vssl index`` command that rebuilds it; it is never searched silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from vssl.errors import VsslError
from vssl.search.exact import exact_search
from vssl.search.vectors import Gallery, clip_gallery, gallery_rows, video_gallery

KINDS = ("flat", "ivf", "hnsw")
#: ivf: lists per square root of the gallery size, and lists searched per query
IVF_LISTS_PER_SQRT = 4
IVF_NPROBE = 32
#: faiss's floor of training points per k-means centroid (it warns below it)
IVF_MIN_POINTS_PER_LIST = 39
#: hnsw: links per node, candidate list while building and while searching
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128

INDEX_FILE = "index.faiss"
ROWS_FILE = "rows.npz"
RECORD_FILE = "record.json"
#: the layout of an index folder; another one is rebuilt, never read
INDEX_FORMAT = 1


# ---------------------------------------------------------------- faiss indexes


def index_params(kind: str, n: int) -> dict:
    """vssl's parameters of a ``kind`` index over ``n`` vectors (recorded with the index)."""
    if kind == "flat":
        return {}
    if kind == "ivf":
        nlist = int(max(1, min(round(IVF_LISTS_PER_SQRT * np.sqrt(n)), n // IVF_MIN_POINTS_PER_LIST)))
        return {"nlist": nlist, "nprobe": min(IVF_NPROBE, nlist)}
    if kind == "hnsw":
        return {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": HNSW_EF_SEARCH}
    raise VsslError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")


def build_index(vectors: np.ndarray, kind: str = "flat") -> faiss.Index:
    """A faiss inner-product index of ``vectors`` ``[n, D]`` (l2-normalised: cosine similarity)
    with vssl's parameters for ``kind`` (:func:`index_params`)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or not len(vectors):
        raise VsslError(f"index: need a non-empty [n, D] array of vectors, got shape {vectors.shape}")
    n, d = vectors.shape
    params = index_params(kind, n)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1        # a small gallery: fewer lists, no faiss warning
        index.train(vectors)
    else:
        index = faiss.IndexHNSWFlat(d, params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["efConstruction"]
    index.add(vectors)
    set_search_params(index, params)
    return index


def set_search_params(index: faiss.Index, params: dict) -> None:
    """Apply the query-time parameters (``nprobe``, ``efSearch``) recorded for an index."""
    if "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    if "efSearch" in params:
        index.hnsw.efSearch = int(params["efSearch"])


def index_kind(index: faiss.Index) -> str:
    """``flat``, ``ivf`` or ``hnsw``: which of vssl's kinds ``index`` is."""
    if isinstance(index, faiss.IndexFlat):
        return "flat"
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    raise VsslError(f"index: a {type(index).__name__} is none of vssl's kinds ({', '.join(KINDS)})")


def flat_vectors(index: faiss.IndexFlat) -> np.ndarray:
    """The vectors a flat index holds, ``[n, D]`` float32, without a copy (a view of faiss's memory,
    valid while ``index`` lives)."""
    return faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)


def search_index(index: faiss.Index, queries: np.ndarray, k: int, device: str = "auto"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest indexed vectors of each query: ``(similarities [Q, k] float32, positions
    [Q, k] int64)``, best first, positions in the order the vectors were added.

    A flat index answers through :func:`~vssl.search.exact.exact_search` (exact, its tie rule). An
    approximate one answers with faiss's neighbours, ordered by the same rule (equal similarity:
    lower position first); a query for which it finds fewer than ``k`` has position -1 and
    similarity -inf in the missing places.
    """
    if index_kind(index) == "flat":
        return exact_search(flat_vectors(index), queries, k, device=device)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != index.d:
        raise VsslError(f"search: queries {queries.shape} must be [Q, {index.d}] for this index")
    k = min(int(k), index.ntotal)
    if k < 1:
        raise VsslError(f"search: k must be at least 1, got {k}")
    sims, positions = index.search(queries, k)
    sims = np.where(positions < 0, -np.inf, sims).astype(np.float32)
    order = np.lexsort((np.where(positions < 0, np.iinfo(np.int64).max, positions), -sims.astype(np.float64)),
                       axis=-1)
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(positions.astype(np.int64), order, axis=1)


# ---------------------------------------------------------------- what a gallery is


@dataclass(frozen=True)
class GallerySpec:
    """Which gallery of a store: a view, backbone features or a SCALE run's, videos or clips."""

    view: str
    scale_run: Path | None = None
    clips: bool = False

    @classmethod
    def from_flags(cls, view: str, features: str | None, scale_run: Path | None, clips: bool = False
                   ) -> "GallerySpec":
        """The spec of ``--view V [--features backbone | --scale RUN] [--clips]``."""
        if features not in (None, "backbone"):
            hint = " (a SCALE run's features: --scale RUN)" if features == "scale" else ""
            raise VsslError(f"--features {features!r}: the features are backbone, or --scale RUN{hint}")
        if features == "backbone" and scale_run is not None:
            raise VsslError("--features backbone and --scale RUN name two feature sources; give one")
        return cls(view, None if scale_run is None else Path(scale_run), clips)

    @property
    def features(self) -> str:
        return "backbone" if self.scale_run is None else "scale"

    def name(self) -> str:
        """The index folder's name: the view, what the vectors are of, and the features (a run by its
        folder name and a hash of its resolved path, so two runs named alike do not share one)."""
        source = "backbone"
        if self.scale_run is not None:
            where = hashlib.sha256(str(self.scale_run.resolve()).encode()).hexdigest()[:8]
            source = f"scale-{self.scale_run.resolve().name}-{where}"
        return f"{self.view}.{'clips' if self.clips else 'videos'}.{source}"

    def command(self, store_path: Path, kind: str | None = None) -> str:
        """The ``vssl index`` command that builds this gallery's index."""
        words = ["vssl index", str(store_path), "--view", self.view]
        if self.scale_run is not None:
            words += ["--scale", str(self.scale_run)]
        if self.clips:
            words.append("--clips")
        if kind:
            words += ["--kind", kind]
        return " ".join(words)

    def gallery(self, store, quiet: bool = False) -> Gallery:
        """The gallery's vectors, computed from the store (:mod:`vssl.search.vectors`)."""
        make = clip_gallery if self.clips else video_gallery
        return make(store, self.view, scale_run=self.scale_run, quiet=quiet)


def indexes_dir(store_path: str | Path) -> Path:
    """Where the indexes of store ``store_path`` live: ``STORE.indexes/`` beside it."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + ".indexes")


def index_dir(store_path: str | Path, spec: GallerySpec) -> Path:
    return indexes_dir(store_path) / spec.name()


def rows_fingerprint(store, view: str, groups: list[str] = ()) -> str:
    """SHA-256 of the usable rows of ``view`` and of the files that hold them.

    The rows say which videos the index holds; the files' names, sizes, modification times and
    inodes change whenever their data is rewritten (a video re-extracted in place, a chunk written
    as a new generation, a SCALE export redone), which reading every feature back would otherwise be
    needed to see. ``groups``: other row groups the vectors were read from (a run's export).
    """
    digest = hashlib.sha256(gallery_rows(store, view).tobytes())
    for group in (f"views/{view}", *groups):
        root = Path(store.path) / group.strip("/")
        for path in sorted(root.rglob("*")):
            if path.is_file():
                st = path.stat()
                digest.update(f"{path.relative_to(store.path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- on disk


@dataclass
class LoadedIndex:
    """An index read from beside a store and checked against it. :meth:`search` answers positions
    into ``rows`` (and ``clips``/``starts`` for a clip index), as exact search over a
    :class:`~vssl.search.vectors.Gallery`'s vectors does."""

    path: Path
    index: faiss.Index
    record: dict
    rows: np.ndarray
    clips: np.ndarray | None
    starts: np.ndarray | None

    @property
    def kind(self) -> str:
        return self.record["kind"]

    def search(self, queries: np.ndarray, k: int, device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """``(similarities [Q, k], positions [Q, k])`` of the nearest indexed vectors (:func:`search_index`)."""
        return search_index(self.index, queries, k, device=device)


def write_store_index(store, spec: GallerySpec, kind: str = "flat", quiet: bool = False) -> LoadedIndex:
    """Build the index of gallery ``spec`` of ``store`` and write it to ``STORE.indexes/<name>/``,
    replacing the one there: written whole in a temporary folder, then renamed into place, so a
    search sees the old index or the new one, never a part."""
    import vssl

    gallery = spec.gallery(store, quiet=quiet)
    index = build_index(gallery.vectors, kind)
    groups = scale_groups(store, spec, gallery)
    record = {
        "format": INDEX_FORMAT, "store_id": store.store_id, "view": spec.view, "features": spec.features,
        "run": None if spec.scale_run is None else str(spec.scale_run.resolve()),
        "checkpoint_sha256": gallery.checkpoint_sha256, "clips": spec.clips, "kind": kind,
        "params": index_params(kind, len(gallery)), "vssl_version": vssl.__version__,
        "dim": int(gallery.vectors.shape[1]), "count": len(gallery), "videos": int(len(np.unique(gallery.rows))),
        "rows_file": ROWS_FILE, "groups": groups, "fingerprint": rows_fingerprint(store, spec.view, groups),
    }
    final = index_dir(store.path, spec)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    temp.mkdir()
    try:
        faiss.write_index(index, str(temp / INDEX_FILE))
        arrays = {"rows": gallery.rows}
        if gallery.clips is not None:
            arrays.update(clips=gallery.clips, starts=gallery.starts)
        np.savez(temp / ROWS_FILE, **arrays)
        (temp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        _replace_dir(temp, final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return LoadedIndex(final, index, record, gallery.rows, gallery.clips, gallery.starts)


def scale_groups(store, spec: GallerySpec, gallery: Gallery) -> list[str]:
    """The store row groups a SCALE gallery's vectors were read from besides the view (the run's
    export), so a re-export makes the index stale; none for backbone features."""
    if spec.scale_run is None:
        return []
    from vssl.aggregate import aggregate_group
    from vssl.aggregate.exporting import find_export_name

    return [aggregate_group(find_export_name(store, spec.scale_run, spec.view, gallery.checkpoint_sha256),
                            spec.view)]


def _replace_dir(new: Path, final: Path) -> None:
    """Move folder ``new`` to ``final``, the old ``final`` (if any) aside first and deleted last."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.rename(final, old)
    os.rename(new, final)
    shutil.rmtree(old, ignore_errors=True)


def matching_index(store, spec: GallerySpec) -> LoadedIndex | None:
    """The index of gallery ``spec`` beside ``store``, checked to hold exactly the gallery's rows as
    they are now; None when none was built. A stale or unreadable one is a :class:`VsslError`
    naming the ``vssl index`` command that rebuilds it."""
    folder = index_dir(store.path, spec)
    if not folder.is_dir():
        return None
    rebuild = f"rebuild it with `{spec.command(store.path)}` (or delete {folder})"
    try:
        record = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise VsslError(f"index {folder} is unreadable ({exc}); {rebuild}") from None
    problem = _stale(store, spec, record)
    if problem:
        raise VsslError(f"index {folder} is stale: {problem}; {rebuild}")
    try:
        index = faiss.read_index(str(folder / INDEX_FILE))
        with np.load(folder / ROWS_FILE) as arrays:
            rows = arrays["rows"]
            clips, starts = (arrays["clips"], arrays["starts"]) if "clips" in arrays else (None, None)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise VsslError(f"index {folder} is unreadable ({' '.join(str(exc).split())}); {rebuild}") from None
    if index.ntotal != len(rows) or index.ntotal != record.get("count"):
        raise VsslError(f"index {folder} holds {index.ntotal} vectors for {len(rows)} rows; {rebuild}")
    set_search_params(index, record.get("params", {}))
    return LoadedIndex(folder, index, record, rows, clips, starts)


def _stale(store, spec: GallerySpec, record: dict) -> str | None:
    """Why ``record`` does not describe the gallery ``spec`` of ``store`` now, or None."""
    if record.get("format") != INDEX_FORMAT:
        return f"it is of index format {record.get('format')}, this vssl reads format {INDEX_FORMAT}"
    if record.get("store_id") != store.store_id:
        return f"it was built for another store than {store.path} (made anew since)"
    if (record.get("view"), record.get("clips"), record.get("features")) != (spec.view, spec.clips, spec.features):
        return "it was built for another view or features"
    if spec.scale_run is not None:
        from vssl.aggregate.checkpoint import checkpoint_path
        from vssl.hashing import sha256_of

        checkpoint = checkpoint_path(spec.scale_run)
        if not checkpoint.is_file():
            raise VsslError(f"--scale {spec.scale_run}: no trained run there (no {checkpoint.name})")
        if sha256_of(checkpoint) != record.get("checkpoint_sha256"):
            return f"the run {spec.scale_run} has another checkpoint than it was built from"
    if rows_fingerprint(store, spec.view, record.get("groups", [])) != record.get("fingerprint"):
        return f"the usable videos of view '{spec.view}' or their features changed since it was built"
    return None
