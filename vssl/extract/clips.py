"""Cut every requested view's clips from one video, decoding it once.

The frames all views need are decoded in one ascending pass; each clip is built as soon
as its last frame arrives and frames no pending clip needs are dropped at once, so memory
is bounded by the clips that overlap in time, not by the video's length. If random access
turns out wrong mid-way (:class:`~vssl.extract.decode.FrameIndexError`), the video is
re-read sequentially and sampled again from the sequential frame count.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from vssl.features_store import BOX_DIM

from .decode import FrameIndexError, VideoInfo, VideoReader, open_video
from .samplers import Clip, SamplerSpec, sample_clips
from .transforms import crop_resize


@dataclass
class VideoClips:
    """One video's result: per view, uint8 clips ``[K, 3, T, S, S]`` and boxes ``[K, 7]``."""

    info: VideoInfo
    clips: dict[str, torch.Tensor]
    boxes: dict[str, np.ndarray]


def plan(views: Mapping[str, SamplerSpec], info: VideoInfo, video_key: str) -> dict[str, list[Clip]]:
    """Every view's clips for a video of this size."""
    return {name: sample_clips(spec, info.num_frames, info.height, info.width, video_key, info.fps)
            for name, spec in views.items()}


def cut_from_reader(reader: VideoReader, views: Mapping[str, SamplerSpec], video_key: str) -> VideoClips:
    """Sample, decode once and crop/resize all views' clips from an open reader."""
    plans = plan(views, reader.info, video_key)
    users: dict[int, list[tuple[str, int]]] = defaultdict(list)  # frame -> clips using it
    remaining: dict[tuple[str, int], int] = {}  # clip -> frames still missing
    for name, clips in plans.items():
        for k, clip in enumerate(clips):
            for f in set(clip.frames):
                users[f].append((name, k))
            remaining[(name, k)] = len(set(clip.frames))
    refs = {f: len(u) for f, u in users.items()}  # frame -> clips not built yet
    cache: dict[int, np.ndarray] = {}
    out = {name: [None] * len(clips) for name, clips in plans.items()}
    for f, frame in reader.frames(sorted(users)):
        cache[f] = frame
        for name, k in users[f]:
            remaining[(name, k)] -= 1
            if remaining[(name, k)] == 0:
                clip = plans[name][k]
                spec = views[name]
                out[name][k] = crop_resize([cache[i] for i in clip.frames], clip.crop, spec.size, clip.flip)
                for i in set(clip.frames):
                    refs[i] -= 1
                    if refs[i] == 0:
                        del cache[i]
    missing = [key for key, n in remaining.items() if n]
    if missing:
        raise FrameIndexError(f"frames of {len(missing)} clips were not produced")
    return VideoClips(
        info=reader.info,
        clips={name: torch.stack(tensors) if tensors else _no_clips(views[name]) for name, tensors in out.items()},
        boxes={name: np.array([c.box for c in clips], dtype=np.float32).reshape(-1, BOX_DIM)
               for name, clips in plans.items()},
    )


def _no_clips(spec: SamplerSpec) -> torch.Tensor:
    """A view that places no clip in this video (a variable-count kind may): an empty batch."""
    return torch.empty((0, 3, spec.frames, spec.size, spec.size), dtype=torch.uint8)


def cut_video(path: str | Path, views: Mapping[str, SamplerSpec], video_key: str, *,
              decoder: str = "auto", threads: int = 0) -> VideoClips:
    """Open ``path`` and cut its clips; falls back to sequential decoding when seeking misleads.

    Raises :class:`~vssl.extract.decode.DecodeError` for files that are not decodable videos.
    """
    try:
        with open_video(path, decoder, threads=threads) as reader:
            return cut_from_reader(reader, views, video_key)
    except FrameIndexError:
        with open_video(path, "pyav", sequential=True, threads=threads) as reader:
            return cut_from_reader(reader, views, video_key)
