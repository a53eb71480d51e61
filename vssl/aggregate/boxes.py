"""How SCALE reads a clip's box: the stored absolute box, or the released code's per-video encoding.

The store keeps every box absolute (DESIGN.md: ``(t0, y0, x0, t1, y1, x1, flip)``, fractions of
the decoded frame and of the video, flip 1.0 or 0.0); this module only transforms boxes where
SCALE reads them (stage-two batches, ``--export``, the set probes), under a run's
``box_encoding``:

- ``absolute`` (vssl's default, every run made before the setting existed): the stored box.
- ``released``: what the released SCALE model saw (Separius/SCALE, SlowFast
  ``datasets/dataset.py`` ``VideoDataset.normalize_pos_info``). There, one dataset item is all
  the clips extracted together for a video: in ``train`` mode the ``TRAIN_CROP_NUM_TEMPORAL``
  clips of the ``lin``/``aug`` features, in ``val`` mode the ``NUM_ENSEMBLE_VIEWS x
  NUM_SPATIAL_CROPS`` evaluation clips. Over those clips the vertical coordinates are min-max
  normalised by ``min(y0)`` and ``max(y1)``, the horizontal ones by ``min(x0)`` and ``max(x1)``,
  time by ``min(t0)`` and ``max(t1)``; the flip is ``+1`` for a mirrored clip and ``-1`` for any
  other, deterministic test crops included (``utils_orig.spatial_sampling`` returns ``-1`` for
  them, ``transform_orig.detailed_horizontal_flip`` ``1.0 if flip else -1.0``). vssl's item is
  the same: every clip of one video in the view read (not the sampled set), so the sets drawn
  for pretraining, and the evaluation clips, carry the coordinates the released model saw.
  Min-max per axis is invariant to the units, so the released pixel coordinates and frame
  indices and vssl's fractions give the same values; the one difference left is the end of a
  clip in time (released: the last frame's index, vssl: one frame past it).

A range of zero, where the released code divides 0 by 0 (a NaN that its extraction then
rejects), cannot occur for real clips (every crop has a height and a width, every clip a
duration); such an axis is encoded as 0 here rather than as NaN.
"""

from __future__ import annotations

import numpy as np

from vssl.errors import VsslError
from vssl.features_store.ragged import RaggedClips

BOX_ENCODINGS = ("absolute", "released")

# (start, end) columns of each axis in DESIGN.md's box layout (t0, y0, x0, t1, y1, x1, flip)
_AXES = ((0, 3), (1, 4), (2, 5))
_FLIP = 6


def check_box_encoding(encoding: str) -> str:
    """``encoding`` when it is known; one line naming the choices otherwise."""
    if encoding not in BOX_ENCODINGS:
        raise VsslError(f"box encoding {encoding!r} is unknown; use one of {', '.join(BOX_ENCODINGS)}")
    return encoding


def encode_flat(boxes: np.ndarray, offsets: np.ndarray, encoding: str) -> np.ndarray:
    """``boxes [R, 7]`` of videos whose clips are rows ``offsets[i]:offsets[i + 1]``, encoded per video.

    ``absolute`` returns ``boxes`` unchanged (no copy); ``released`` a new float32 array.
    """
    if check_box_encoding(encoding) == "absolute" or len(boxes) == 0:
        return boxes
    boxes = np.asarray(boxes, np.float32)
    offsets = np.asarray(offsets, np.int64)
    counts = np.diff(offsets)
    starts = offsets[:-1][counts > 0]            # reduceat needs non-empty segments
    video = np.repeat(np.arange(len(starts)), counts[counts > 0])
    out = np.empty_like(boxes)
    for a, b in _AXES:
        low = np.minimum.reduceat(boxes[:, a], starts)[video]
        high = np.maximum.reduceat(boxes[:, b], starts)[video]
        span = high - low
        span = np.where(span > 0, span, np.float32(1))      # zero range: 0, not the released 0/0
        out[:, a] = (boxes[:, a] - low) / span
        out[:, b] = (boxes[:, b] - low) / span
    out[:, _FLIP] = np.where(boxes[:, _FLIP] > 0.5, np.float32(1), np.float32(-1))
    return out


def encode_boxes(boxes: np.ndarray | RaggedClips, encoding: str) -> np.ndarray | RaggedClips:
    """Boxes of whole videos, ``[n, K, 7]`` (every clip real) or a ragged view's :class:`RaggedClips`,
    encoded per video (see the module docstring); ``absolute`` returns them unchanged."""
    if check_box_encoding(encoding) == "absolute" or boxes is None:
        return boxes
    if isinstance(boxes, RaggedClips):
        return RaggedClips(encode_flat(boxes.flat, boxes.offsets, encoding), boxes.offsets)
    boxes = np.asarray(boxes)
    n, k = boxes.shape[:2]
    flat = encode_flat(boxes.reshape(n * k, boxes.shape[-1]), np.arange(n + 1, dtype=np.int64) * k, encoding)
    return flat.reshape(boxes.shape)
