"""Clip features with learnable structure, for tests, benchmarks and demos of stage two.

Random features teach the predictor nothing, so MCM accuracy on them says nothing. Here each
video has a start point a and a direction b in feature space; a clip whose box covers times
[t0, t0 + 0.2] has the embedding a + 3 (t_centre - 1/2) b plus a little noise. A masked clip is
therefore predictable from the other clips of its set (they reveal a and b) and its own box
(t_centre), and the two sets of one video share a and b (what SET must discover).
"""

from __future__ import annotations

import numpy as np


def structured_clip_features(num_videos: int, num_clips: int, dim: int, seed: int = 0,
                             noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, K, D] float32, boxes [N, K, 7] float32) in the store's box layout."""
    rng = np.random.default_rng(seed)
    t0 = rng.uniform(0, 0.8, size=(num_videos, num_clips)).astype(np.float32)
    y0, x0 = rng.uniform(0, 0.3, size=(2, num_videos, num_clips)).astype(np.float32)
    boxes = np.stack([t0, y0, x0, t0 + 0.2, y0 + 0.7, x0 + 0.7, np.zeros_like(t0)], -1).astype(np.float32)
    a, b = rng.normal(size=(2, num_videos, 1, dim))
    feats = a + 3 * (t0 + 0.1 - 0.5)[..., None] * b + noise * rng.normal(size=(num_videos, num_clips, dim))
    return feats.astype(np.float32), boxes
