"""The time base: clips chosen by time on a fixed frame rate, whatever the file's own rate.

SCALE's features were cut by SlowFast's decoder, which converts every video to a target rate
(``DATA.TARGET_FPS``, 30) before choosing frames (``SlowFast/slowfast/datasets/decoder_orig.py``:
``decode``, ``torchvision_decode``: a clip of ``stride * frames`` target-rate frames covers
``stride * frames / 30 * fps`` file frames). So a 16x4 clip spans the same ~2.1 s on a 25-fps and
a 60-fps video. vssl does this once, for every view kind: a kind places its clips on the video
*resampled* to the target rate (``count`` target-rate frames), and each target-rate index ``k``
becomes the file frame on screen at time ``k / target``: ``floor(k * file_fps / target)``.
Kinds never see the file's rate, so a new kind gets the time base for free.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

from vssl.errors import VsslError

from .view_kinds.base import Clip, VideoGeometry, clip_box

#: tolerance for k * fps / target landing a hair under an integer (29.97 vs 30000/1001)
_EPS = 1e-6


def time_base_count(num_frames: int, file_fps: float, target_fps: float) -> int:
    """Target-rate frames of a video of ``num_frames`` at ``file_fps``: every k whose time is inside it."""
    return max(1, math.ceil(num_frames * target_fps / file_fps - _EPS))


def file_index(k: int, file_fps: float, target_fps: float, num_frames: int) -> int:
    """The file frame shown at time ``k / target_fps`` (clamped to the last frame)."""
    return min(int(math.floor(k * file_fps / target_fps + _EPS)), num_frames - 1)


def on_time_base(place: Callable[[VideoGeometry, str], list[Clip]], video: VideoGeometry, target_fps: float,
                 video_key: str) -> list[Clip]:
    """Place clips with ``place(geometry, key)`` on the video resampled to ``target_fps``.

    ``video`` is the decoded :class:`~vssl.extract.view_kinds.base.VideoGeometry` (its ``fps`` is the
    file's). Returns the clips with file frame indices and boxes in file frames.
    """
    if target_fps <= 0 or video.fps == target_fps:
        return place(video, video_key)
    if video.fps <= 0:
        raise VsslError(f"--fps {target_fps:g}: the video reports no frame rate, so its frames cannot be "
                        "chosen by time")
    n = video.num_frames
    resampled = replace(video, num_frames=time_base_count(n, video.fps, target_fps), fps=target_fps)
    out = []
    for clip in place(resampled, video_key):
        frames = tuple(file_index(k, video.fps, target_fps, n) for k in clip.frames)
        box = clip_box(frames, clip.crop, clip.flip, n, video.height, video.width)
        out.append(Clip(frames, clip.crop, clip.flip, box))
    return out
