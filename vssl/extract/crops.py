"""Spatial crops of the released SCALE pipeline that are not RandomResizedCrop.

``lin`` (SCALE's linear-probe training views, ``SlowFast/configs/linear_k400_16x4.yaml``:
``TRAIN_JITTER_SCALES [256, 320]``, ``TRAIN_CROP_SIZE 224``) follows
``SlowFast/slowfast/datasets/utils_orig.py:spatial_sampling`` with ``spatial_idx = -1``:
``transform_orig.random_short_side_scale_jitter`` draws the short side
``s = int(round(uniform(256, 320)))`` and scales the long side to ``floor(long / short * s)``;
``transform_orig.detailed_random_crop`` takes a 224 square at offsets
``randint(0, scaled - 224)`` (numpy's exclusive upper bound, so never the last offset).
vssl cuts the same rectangle from the *decoded* frame (scaled back by ``H / new_h``,
``W / new_w``, rounded to pixels) and resizes it once to the view's size, instead of resizing
the whole frame and cropping.

``aug`` (``byol_k400_16x4.yaml``) is RandomResizedCrop with area 0.2-0.766 and aspect
0.75-1.3333; its colour jitter and grayscale are *not* applied: a view's clips are geometric
(a box per clip), and the released colour jitter is not recorded anywhere a probe could use.
"""

from __future__ import annotations

import math
from typing import Any

CROPS = ("rrc", "lin", "aug")
LIN_SIDES = (256, 320)
LIN_CROP = 224
AUG_SCALE = (0.2, 0.766)


def short_side_jitter_crop(rng: Any, height: int, width: int, sides: tuple[int, int] = LIN_SIDES,
                           crop: int = LIN_CROP) -> tuple[int, int, int, int]:
    """``(y0, x0, h, w)`` in decoded pixels of a ``crop`` square of the frame scaled to a short side in ``sides``.

    ``rng`` needs ``uniform`` and ``integers`` (numpy's Generator); draws, in order: the side,
    the y offset, the x offset (each offset drawn only when the scaled side exceeds ``crop``).
    """
    side = int(round(rng.uniform(sides[0], sides[1])))
    if width < height:
        new_w, new_h = side, int(math.floor(height / width * side))
    else:
        new_h, new_w = side, int(math.floor(width / height * side))
    y_off = int(rng.integers(0, new_h - crop)) if new_h > crop else 0
    x_off = int(rng.integers(0, new_w - crop)) if new_w > crop else 0
    sy, sx = height / new_h, width / new_w
    h, w = min(height, max(1, round(min(crop, new_h) * sy))), min(width, max(1, round(min(crop, new_w) * sx)))
    y0, x0 = min(round(y_off * sy), height - h), min(round(x_off * sx), width - w)
    return y0, x0, h, w
