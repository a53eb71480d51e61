"""The vectors a store's videos (or clips) are searched by, and the same rule for a new query.

A video's vector is the k-NN ``dino`` rule (:mod:`vssl.probe.knn`), uncentred, so a query's vector
never depends on the gallery it is searched in (a centred rule would move every vector when a video
is added):

- backbone features: the mean of the video's l2-normalised clip features, l2-normalised
  (:func:`vssl.probe.knn.video_embeddings`; DINO's eval_knn);
- a SCALE run (``--scale RUN``): the mean of the l2-normalised [C_i ⊕ SET], l2-normalised (SCALE §4.1's
  SCALE_kNN input [C_i ⊕ SET] under the ``dino`` rule, as :mod:`vssl.probe.scale` computes it).

A clip's vector (a clip gallery, for finding a moment) is its l2-normalised feature, [C_i ⊕ SET] with a
run. A view of token grids is read one vector per clip, the mean of the clip's tokens.

The gallery and a query go through the same functions, row by row, so a store video searched as a
query has exactly its gallery vector (bit for bit): its nearest neighbour is itself at similarity 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from vssl.errors import VsslError
from vssl.features_store.ragged import RaggedClips, iter_clips, token_means
from vssl.probe.knn import l2_normalize, video_embeddings
from vssl.probe.scale import mean_of_normalized
from vssl.progress import ProgressBar

#: videos read per batch when a gallery is built (bounds memory: a batch's clips only)
READ_BATCH = 256


@dataclass(frozen=True)
class Gallery:
    """What a search compares a query with: one l2-normalised vector per video (or per clip).

    ``rows`` are the store rows the vectors belong to (a clip gallery repeats a video's row for
    each of its clips, with ``clips`` the clip's index within the video and ``starts`` its start
    second); ``run`` and ``checkpoint_sha256`` name the SCALE run of ``features="scale"``.
    """

    vectors: np.ndarray                 # [n, D] float32, l2-normalised
    rows: np.ndarray                    # [n] int64 store rows
    clips: np.ndarray | None            # [n] int64 clip index within its video (clip galleries)
    starts: np.ndarray | None           # [n] float64 start second of the clip (clip galleries)
    view: str
    features: str                       # "backbone" or "scale"
    run: Path | None = None
    checkpoint_sha256: str | None = None

    def __len__(self) -> int:
        return len(self.rows)


def video_rows_vectors(clips: RaggedClips, set_tokens: np.ndarray | None) -> np.ndarray:
    """The video vectors ``[n, D']`` of ``n`` videos' pooled clips (``flat [R, D]``) and, with a SCALE
    run, their SET tokens ``[n, H]``: the module's rule, each video independently of the others."""
    if set_tokens is None:
        return video_embeddings(clips)
    return l2_normalize(mean_of_normalized(clips, set_tokens))


def clip_rows_vectors(flat: np.ndarray, set_tokens: np.ndarray | None) -> np.ndarray:
    """The clip vectors ``[R, D']`` of pooled clips ``flat [R, D]`` and, with a SCALE run, each
    clip's video's SET token ``[R, H]``: l2-normalised C_i or [C_i ⊕ SET] (float64, then float32)."""
    if set_tokens is None:
        return l2_normalize(flat)
    joined = np.concatenate([np.asarray(flat, np.float64), np.asarray(set_tokens, np.float64)], axis=-1)
    return (joined / np.maximum(np.linalg.norm(joined, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def query_vector(clips: np.ndarray, set_token: np.ndarray | None = None) -> np.ndarray:
    """A video's vector ``[D']`` from its clips ``[c, *clip_shape]`` (and its SET token ``[H]`` with a
    SCALE run): what its row of a video gallery holds, computed the same way."""
    pooled = token_means(clips)
    if len(pooled) == 0:
        raise VsslError("search: the query video has no clips")
    tokens = None if set_token is None else np.asarray(set_token, np.float32)[None]
    return video_rows_vectors(RaggedClips.from_counts(pooled, [len(pooled)]), tokens)[0]


def clip_vectors(clips: np.ndarray, set_token: np.ndarray | None = None) -> np.ndarray:
    """Each clip's vector ``[c, D']`` of one video's clips ``[c, *clip_shape]`` (and its SET token
    ``[H]``): what a clip gallery holds for that video's clips."""
    pooled = token_means(clips)
    tokens = None if set_token is None else np.broadcast_to(np.asarray(set_token, np.float32),
                                                            (len(pooled), np.shape(set_token)[-1]))
    return clip_rows_vectors(pooled, tokens)


def video_gallery(store, view: str, scale_run: str | Path | None = None, quiet: bool = False) -> Gallery:
    """One vector per usable video of ``view`` (every split, store order): backbone features, or a
    SCALE run's (its missing aggregates exported first)."""
    return _gallery(store, view, scale_run, quiet, clips=False)


def clip_gallery(store, view: str, scale_run: str | Path | None = None, quiet: bool = False) -> Gallery:
    """One vector per clip of every usable video of ``view`` (video after video in store order, the
    clips in stored order), with each clip's video row, index and start second."""
    return _gallery(store, view, scale_run, quiet, clips=True)


def gallery_rows(store, view: str) -> np.ndarray:
    """The store rows a gallery of ``view`` holds: its usable videos (:meth:`FeatureStore.usable`)."""
    rows = np.flatnonzero(store.usable(view)).astype(np.int64)
    if not len(rows):
        raise VsslError(f"view '{view}' of {store.path} has no usable videos to search; extract some with "
                        f"`vssl extract`")
    return rows


def _gallery(store, view: str, scale_run: str | Path | None, quiet: bool, clips: bool) -> Gallery:
    rows = gallery_rows(store, view)
    scale = None
    if scale_run is not None:
        from vssl.probe.scale import ScaleFeatures

        scale = ScaleFeatures.open(store, Path(scale_run), view, rows, quiet=quiet)
    source = dict(view=view, features="backbone" if scale is None else "scale",
                  run=None if scale is None else Path(scale_run),
                  checkpoint_sha256=None if scale is None else scale.meta["checkpoint_sha256"])
    with ProgressBar(f"gallery of view {view}", len(rows), quiet, transient=True) as bar:
        batches = _read_videos(store, view, rows, scale, bar)
        if not clips:
            return Gallery(_video_vectors(batches, len(rows)), rows, None, None, **source)
        vectors, counts, t0 = _clip_vectors(batches, len(rows))
    duration = store.num_frames()[rows] / np.maximum(store.fps()[rows], 1e-12)    # seconds
    starts = t0.astype(np.float64) * np.repeat(duration, counts)
    clip_index = np.arange(len(vectors), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return Gallery(vectors, np.repeat(rows, counts), clip_index, starts, **source)


def _read_videos(store, view: str, rows: np.ndarray, scale, advance: Callable[[int], None]) -> Iterator[tuple]:
    """The gallery's videos a batch at a time (memory: one batch's clips): positions in ``rows``, their
    pooled clips, their SET tokens (None without a run) and each clip's start as a fraction of its
    video (box t0)."""
    for positions, feats, boxes in iter_clips(store.view(view), rows, READ_BATCH):
        tokens = None if scale is None else scale.set_token(rows[positions])
        yield positions, RaggedClips(token_means(feats.flat), feats.offsets), tokens, boxes.flat[:, 0]
        advance(len(positions))


def _video_vectors(batches: Iterable[tuple], n: int) -> np.ndarray:
    """``[n, D']`` video vectors, in the order of the gallery's rows."""
    out = None
    for positions, pooled, tokens, _ in batches:
        vectors = video_rows_vectors(pooled, tokens)
        if out is None:
            out = np.empty((n, vectors.shape[1]), np.float32)
        out[positions] = vectors
    return out


def _clip_vectors(batches: Iterable[tuple], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip vectors video after video in the order of the gallery's rows, each video's clip count,
    and each clip's start fraction."""
    vectors: list = [None] * n
    starts: list = [None] * n
    for positions, pooled, tokens, t0 in batches:
        per_clip = None if tokens is None else np.repeat(tokens, pooled.counts, axis=0)
        batch = clip_rows_vectors(pooled.flat, per_clip)
        for j, p in enumerate(positions.tolist()):
            vectors[p] = batch[pooled.offsets[j]:pooled.offsets[j + 1]]
            starts[p] = t0[pooled.offsets[j]:pooled.offsets[j + 1]]
    return np.concatenate(vectors), np.array([len(v) for v in vectors], np.int64), np.concatenate(starts)
