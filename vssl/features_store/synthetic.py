"""Build a finished store straight from arrays: for tests, benchmarks and the aggregate/probe
stages, which need features but not the videos behind them."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .schema import BOX_DIM, BackboneSpec, VideoEntry
from .store import FeatureStore


def uniform_boxes(num_videos: int, num_clips: int) -> np.ndarray:
    """Boxes of K clips tiling each video in time, full frame, not flipped: [N, K, 7]."""
    t = np.arange(num_clips, dtype=np.float32)
    box = np.stack([t / num_clips, 0 * t, 0 * t, (t + 1) / num_clips, 0 * t + 1, 0 * t + 1, 0 * t], axis=-1)
    return np.broadcast_to(box, (num_videos, num_clips, BOX_DIM)).copy()


def make_synthetic_store(path: str | Path, features: np.ndarray | Sequence[np.ndarray], labels: Sequence[int],
                         splits: Sequence[str], view: str = "random16",
                         boxes: np.ndarray | Sequence[np.ndarray] | None = None,
                         classes: Sequence[str] | None = None, chunk_videos: int | None = None,
                         dtype: str = "float16", videos: Sequence[VideoEntry] | None = None) -> FeatureStore:
    """A store whose view ``view`` holds ``features`` [N, K, D] for N done videos (``videos``: the
    video table's entries, e.g. multi-label or with targets, instead of ``labels``/``splits``').

    ``features`` given as a list of per-video ``[k_i, D]`` arrays makes a ragged view (a variable
    number of clips per video); its default boxes tile each video in time, as for a fixed view.
    """
    ragged = not isinstance(features, np.ndarray)
    n, d = len(features), int(features[0].shape[-1])
    labels = np.asarray(labels, dtype=np.int64)
    if classes is None:
        classes = [f"class{i}" for i in range(int(labels.max()) + 1 if labels.size else 0)]
    backbone = BackboneSpec(name="synthetic", embed_dim=d, frames=16, stride=4, size=224,
                            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), family="synthetic")
    if videos is None:
        videos = [VideoEntry(f"video{i:06d}.mp4", int(labels[i]), str(splits[i])) for i in range(n)]
    store = FeatureStore.create(path, backbone, videos, classes, chunk_videos=chunk_videos)
    k = None if ragged else features.shape[1]
    store.create_view(view, num_clips=k, spec={"sampler": "synthetic", "clips": k}, dtype=dtype)
    if boxes is None:
        boxes = [uniform_boxes(1, len(f))[0] for f in features] if ragged else uniform_boxes(n, k)
    for start, stop in store.chunk_ranges():
        idx = np.arange(start, stop)
        store.write_videos(idx, {view: (features[start:stop], boxes[start:stop])},
                           num_frames=[64] * len(idx), fps=[25.0] * len(idx), errors=[None] * len(idx))
    return store
