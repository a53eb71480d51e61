"""``vssl search``: a query video's nearest videos (or moments) in a store.

The query's clips come from :mod:`.query` (stored, or embedded with the store's recorded settings),
its vector and the gallery's from :mod:`.vectors` (one rule for both, so a store video's query vector
is its gallery row), and the ranking from :func:`.exact.exact_search` (one tie rule: equal
similarity, earlier gallery row first), or from the gallery's index where ``vssl index`` built one that
still matches the store (:func:`.index.matching_index`; a stale one is refused, never searched). A
query that is a store video is left out of its own results.
With ``moments`` the gallery holds every clip of every video, and a hit is a (video, start second)
pair: a short clip finds where it happens in a film.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vssl.errors import StoreError, VsslError
from vssl.features_store import FeatureStore

from .exact import exact_search
from .index import GallerySpec, matching_index
from .query import QueryClips, query_clips
from .vectors import query_vector


@dataclass
class Hit:
    """One result: a gallery video (and, for a moment, the clip and its start second)."""

    rank: int
    row: int
    path: str
    label: str
    similarity: float
    clip: int | None = None
    start: float | None = None


@dataclass
class SearchResult:
    """A search's hits, best first, and what was searched."""

    query: str
    query_row: int | None
    view: str
    features: str
    run: str | None
    moments: bool
    gallery_size: int
    searched: str  # "exact search", or the index that answered
    hits: list[Hit] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "hits"},
                "hits": [asdict(h) for h in self.hits]}


def search(store_path: str | Path, query: str | Path, *, k: int = 10, view: str | None = None,
           features: str | None = None, scale_run: str | Path | None = None, moments: bool = False,
           checkpoint: str | Path | None = None, device: str = "auto", quiet: bool = False) -> SearchResult:
    """The ``k`` nearest videos of ``query`` in the store (``moments``: the ``k`` nearest clips).

    ``scale_run`` searches by a SCALE run's features instead of the backbone's (``features`` may only
    say ``backbone``; its aggregates are exported into the store first where missing). ``checkpoint``
    points at the backbone's file when it moved since extraction (only needed for a query that is
    not a store video).
    """
    if k < 1:
        raise VsslError(f"-k {k}: give at least 1")
    store = FeatureStore.open(store_path)
    spec = GallerySpec.from_flags(search_view(store, view), features,
                                  None if scale_run is None else Path(scale_run), clips=moments)
    clips = query_clips(store, spec.view, query, checkpoint=checkpoint, device=device)
    token = None if spec.scale_run is None else query_set_token(store, spec.view, spec.scale_run, clips, device,
                                                                quiet)
    ranked = ranked_gallery(store, spec, device, quiet)
    own = 0 if clips.row is None else int((ranked.rows == clips.row).sum())
    sims, positions = ranked.search(query_vector(clips.features, token)[None], k + own)
    result = SearchResult(clips.path, clips.row, spec.view, spec.features,
                          None if spec.scale_run is None else str(spec.scale_run), moments, len(ranked.rows),
                          ranked.searched)
    result.hits = hits_of(store, ranked, sims[0], positions[0], k, clips.row)
    return result


def hits_of(store: FeatureStore, ranked: "RankedGallery", sims: np.ndarray, positions: np.ndarray, k: int,
            left_out: int | None) -> list[Hit]:
    """The first ``k`` of one query's ranked gallery positions as hits, the clips of store row
    ``left_out`` (the query itself) and the places an index left empty (position -1) skipped."""
    kept = [(float(s), int(p)) for s, p in zip(sims, positions) if p >= 0 and ranked.rows[p] != left_out][:k]
    rows = [int(ranked.rows[p]) for _, p in kept]
    paths, labels = store.paths(), label_names(store, rows)
    return [Hit(rank, row, str(paths[row]), label, similarity,
                None if ranked.clips is None else int(ranked.clips[p]),
                None if ranked.starts is None else float(ranked.starts[p]))
            for rank, ((similarity, p), row, label) in enumerate(zip(kept, rows, labels), 1)]


@dataclass
class RankedGallery:
    """What a search ranks: the store row (and clip, start second) of each gallery position, and the
    search that answers ``(similarities [Q, k], positions [Q, k])`` for queries ``[Q, D]``."""

    rows: np.ndarray
    clips: np.ndarray | None
    starts: np.ndarray | None
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
    searched: str


def ranked_gallery(store: FeatureStore, spec: GallerySpec, device: str = "auto", quiet: bool = False
                   ) -> RankedGallery:
    """The one place a search finds its gallery: the index ``vssl index`` built for it when one
    matches the store (a stale one is refused in one line by :func:`.index.matching_index`), else the
    gallery's vectors computed now and searched exactly (the tie rule of :mod:`.exact`)."""
    loaded = matching_index(store, spec)
    if loaded is not None:
        return RankedGallery(loaded.rows, loaded.clips, loaded.starts,
                             lambda q, k: loaded.search(q, k, device=device), f"the {loaded.kind} index {loaded.path}")
    gallery = spec.gallery(store, quiet=quiet)
    return RankedGallery(gallery.rows, gallery.clips, gallery.starts,
                         lambda q, k: exact_search(gallery.vectors, q, k, device=device), "exact search")


def search_view(store: FeatureStore, view: str | None) -> str:
    """The view to search: ``view`` if the store has it, else the store's only pooled view (one vector
    per clip); with several, one line listing them."""
    names = store.view_names()
    if view is not None:
        if view not in names:
            raise StoreError(f"--view {view}: {store.path} has no such view (views: {', '.join(names) or 'none'})")
        return view
    pooled = [name for name in names if len(store.view(name).clip_shape) == 1]
    if len(pooled) == 1:
        return pooled[0]
    listed = ", ".join(pooled or names) or "none"
    raise VsslError(f"{store.path} has {len(pooled)} pooled views ({listed}); choose one with --view")


def query_set_token(store: FeatureStore, view: str, scale_run: str | Path, clips: QueryClips, device: str,
                    quiet: bool = False) -> np.ndarray:
    """The query's SET token ``[H]`` of a SCALE run: a store video's from the run's export, a new file's by
    encoding its clips with the run's model as the export encodes a video (fp32, the run's box encoding,
    the export's clips per pass)."""
    import torch

    from vssl.aggregate.boxes import encode_boxes
    from vssl.aggregate.exporting import encode_video_clips
    from vssl.device import resolve_device
    from vssl.probe.scale import ScaleFeatures

    needed = np.flatnonzero(store.usable(view))
    scale = ScaleFeatures.open(store, Path(scale_run), view, needed, quiet=quiet)
    if clips.row is not None:
        return scale.set_token(np.array([clips.row]))[0]
    dev = resolve_device(device)
    model = scale.model.to(dev)
    boxes = encode_boxes(clips.boxes[None], scale.config.box_encoding)[0]
    max_clips = int(scale.exported.attrs.get("max_clips") or len(clips.features))
    with torch.inference_mode():
        tokens, _ = encode_video_clips(model, [clips.features.astype(np.float32)], [boxes], max_clips, 1, dev, "fp32")
    return tokens[0]


def label_names(store: FeatureStore, rows: list[int]) -> list[str]:
    """The labels of store ``rows`` as text: the class name (a multi-label store's classes joined by
    ``;``), "" for an unlabelled video."""
    classes = store.classes
    multi = store.multi_hot()
    if multi is not None:
        return [";".join(classes[c] for c in np.flatnonzero(multi[r])) for r in rows]
    labels = store.labels()
    return [(classes[c] if c < len(classes) else str(c)) if c >= 0 else "" for c in labels[rows].tolist()]
