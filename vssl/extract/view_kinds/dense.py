"""``dense:S`` — one clip every S seconds over the whole video (long videos, temporal localisation).

The TAD feature layout (ActionFormer, VideoMAE V2's TAD features, video_features): a feature
every S seconds from the start of the video to its end, so a 10-minute film at ``dense:1.0``
gives ~600 clips and a 3-second one 3. Placement is by **time**, on the frames' real
presentation times (:attr:`VideoGeometry.times`, from the decoder's timestamps), so a
variable-frame-rate file gets its clips at the right seconds:

- the video lasts ``duration`` = the last frame's time plus its display time (the step before
  it; ``1 / fps`` for a one-frame video), and gets ``ceil(duration / S)`` clips (at least one)
  starting at ``t_j = j * S``;
- a clip starts at the frame on screen at ``t_j`` (the last frame whose time is ``<= t_j``) and
  takes ``frames`` frames ``stride`` apart. With a time base (``--fps F``) its frames are instead
  the frames on screen at ``t_j + m * stride / F``, the clip then spans the same seconds whatever
  the file's rate. Frames past the end repeat the last frame (the short-video rule of every kind);
- one square centre crop of side ``min(H, W)`` (``uniform:Tx1``'s crop: short side to ``size``,
  then centre), no flip; the kind is deterministic (the seed changes neither clips nor record).

**Boxes** carry real time: ``t0`` = the first frame's time / duration and ``t1`` = the end of the
last frame's display (the next frame's time, or the end of the video) / duration, so
``t * duration`` is the clip's span in seconds. On a constant-rate file this is DESIGN.md's
``first / count`` and ``(last + 1) / count``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from vssl.errors import VsslError

from .base import Clip, SamplerSpec, VideoGeometry, clip_frames, square_crops, view_kind

#: slack in seconds when comparing a start time with frame times (float timestamps)
_EPS = 1e-6


def timeline(video: VideoGeometry) -> np.ndarray:
    """Each frame's time in seconds: the decoder's timestamps, else ``i / fps``."""
    if video.times is not None:
        return np.asarray(video.times, dtype=np.float64)
    if video.fps <= 0:
        raise VsslError("dense views place clips by time: this video has neither frame timestamps nor a frame "
                        "rate")
    return np.arange(video.num_frames, dtype=np.float64) / video.fps


def duration_of(times: np.ndarray, fps: float) -> float:
    """The last frame's time plus its display time (the step before it; ``1 / fps`` for one frame)."""
    if len(times) >= 2:
        return float(times[-1] + (times[-1] - times[-2]))
    return float(times[-1] + (1.0 / fps if fps > 0 else 1.0))


def on_screen(times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Index of the frame on screen at each time in ``at`` (clamped to the first and last frame)."""
    idx = np.searchsorted(times, np.asarray(at, np.float64) + _EPS, side="right") - 1
    return np.clip(idx, 0, len(times) - 1)


@view_kind
@dataclass(frozen=True)
class DenseClips(SamplerSpec):
    """``dense:S`` — a clip starting every ``S`` seconds from the start to the end (module docstring)."""

    seconds: float = 1.0  # S

    kind: ClassVar[str] = "dense"
    syntax: ClassVar[str] = "dense:S (seconds, e.g. dense:1.0)"
    fixed_count: ClassVar[bool] = False
    timed: ClassVar[bool] = True

    @property
    def num_clips(self) -> None:
        return None

    @property
    def default_name(self) -> str:
        return f"dense{self.seconds:g}"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "seconds": self.seconds}

    @classmethod
    def parse(cls, args: str, options: dict[str, str], view: str, **clip: Any) -> "DenseClips":
        try:
            seconds = float(args)
        except ValueError:
            seconds = float("nan")
        if not (math.isfinite(seconds) and seconds > 0):
            raise VsslError(f"view spec {view!r}: dense takes the seconds between clip starts, a number > 0 "
                            "(e.g. dense:1.0)")
        return cls(seconds=seconds, **{**clip, "seed": 0})  # deterministic: the seed changes nothing

    def starts(self, duration: float) -> np.ndarray:
        """Clip start times: every ``S`` seconds while inside the video, at least one."""
        count = max(1, math.ceil(duration / self.seconds - _EPS))
        return np.arange(count, dtype=np.float64) * self.seconds

    def place(self, video: VideoGeometry, video_key: str) -> list[Clip]:
        times = timeline(video)
        n = len(times)
        duration = duration_of(times, video.fps)
        y0, x0, h, w = crop = square_crops(1, video.height, video.width)[0]
        out = []
        for start in self.starts(duration).tolist():
            if self.fps:  # the time base: frames on screen every stride / fps seconds from the start
                frames = tuple(on_screen(times, start + np.arange(self.frames) * self.stride / self.fps).tolist())
            else:
                frames = clip_frames(int(on_screen(times, [start])[0]), self, n)
            end = times[frames[-1] + 1] if frames[-1] + 1 < n else duration
            box = (float(times[frames[0]] / duration), y0 / video.height, x0 / video.width,
                   float(end / duration), (y0 + h) / video.height, (x0 + w) / video.width, 0.0)
            out.append(Clip(frames, crop, False, box))
        return out
