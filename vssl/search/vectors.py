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

import numpy as np

from vssl.errors import VsslError
from vssl.features_store.ragged import RaggedClips, iter_clips
from vssl.probe.knn import l2_normalize, video_embeddings
from vssl.probe.scale import _mean_of_normalized

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


def pooled_clips(clips: np.ndarray) -> np.ndarray:
    """``[c, *clip_shape]`` -> ``[c, D]`` float32: a clip of one vector as it is, a grid of tokens as
    the mean of its tokens (the clip's one vector a search compares)."""
    clips = np.asarray(clips)
    if clips.ndim < 2:
        raise VsslError(f"search: clips must be [c, D] or [c, tokens..., D], got shape {tuple(clips.shape)}")
    if clips.ndim == 2:
        return clips.astype(np.float32)
    return clips.reshape(len(clips), -1, clips.shape[-1]).astype(np.float32).mean(axis=1)


def video_rows_vectors(clips: RaggedClips, set_tokens: np.ndarray | None) -> np.ndarray:
    """The video vectors ``[n, D']`` of ``n`` videos' pooled clips (``flat [R, D]``) and, with a SCALE
    run, their SET tokens ``[n, H]``: the module's rule, each video independently of the others."""
    if set_tokens is None:
        return video_embeddings(clips)
    return l2_normalize(_mean_of_normalized(clips, set_tokens))


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
    pooled = pooled_clips(clips)
    if len(pooled) == 0:
        raise VsslError("search: the query video has no clips")
    tokens = None if set_token is None else np.asarray(set_token, np.float32)[None]
    return video_rows_vectors(RaggedClips.from_counts(pooled, [len(pooled)]), tokens)[0]


def clip_vectors(clips: np.ndarray, set_token: np.ndarray | None = None) -> np.ndarray:
    """Each clip's vector ``[c, D']`` of one video's clips ``[c, *clip_shape]`` (and its SET token
    ``[H]``): what a clip gallery holds for that video's clips."""
    pooled = pooled_clips(clips)
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
    parts: list = [None] * len(rows)
    box_t0: list = [None] * len(rows)
    for positions, feats, boxes in iter_clips(store.view(view), rows, READ_BATCH):
        pooled = RaggedClips(pooled_clips(feats.flat), feats.offsets)
        tokens = None if scale is None else scale.set_token(rows[positions])
        if clips:
            per_clip = None if tokens is None else np.repeat(tokens, pooled.counts, axis=0)
            vectors = clip_rows_vectors(pooled.flat, per_clip)
            for j, p in enumerate(positions.tolist()):
                parts[p] = vectors[pooled.offsets[j]:pooled.offsets[j + 1]]
                box_t0[p] = boxes.flat[boxes.offsets[j]:boxes.offsets[j + 1], 0]
        else:
            for j, vector in zip(positions.tolist(), video_rows_vectors(pooled, tokens)):
                parts[j] = vector
    run = None if scale is None else Path(scale_run)
    sha = None if scale is None else scale.meta["checkpoint_sha256"]
    features = "backbone" if scale is None else "scale"
    if not clips:
        return Gallery(np.stack(parts).astype(np.float32), rows, None, None, view, features, run, sha)
    counts = np.array([len(p) for p in parts], np.int64)
    duration = store.num_frames()[rows] / np.maximum(store.fps()[rows], 1e-12)
    starts = np.concatenate(box_t0).astype(np.float64) * np.repeat(duration, counts)
    clip_index = np.concatenate([np.arange(c, dtype=np.int64) for c in counts])
    return Gallery(np.concatenate(parts).astype(np.float32), np.repeat(rows, counts), clip_index, starts, view,
                   features, run, sha)
