"""Cut every requested view's clips from one video, decoding it once, in bounded memory.

The frames all views need are decoded in one ascending pass; each clip is built as soon
as its last frame arrives and frames no pending clip needs are dropped at once, so the
decoded frames held are bounded by the clips that overlap in time, not by the video's length.
Built clips leave in parts of at most ``PART_CLIPS`` clips (:func:`stream_video`), so a long
film (600 clips of a 10-minute video at ``dense:1.0``, 1.4 GB of uint8 clips at 16x224 px)
never sits in memory whole: extraction embeds a part while the next one is cut.

If random access turns out wrong mid-way (:class:`~vssl.extract.decode.FrameIndexError`), the
video is re-read sequentially and sampled again from the sequential frame count: the stream
then starts again with a new :class:`VideoPlan` (``restart``), voiding the parts sent before.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch

from vssl.errors import working_on
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


#: the most clips one part of a video's stream holds (a part is one view's clips, in any order)
PART_CLIPS = 32


@dataclass
class VideoPlan:
    """The start of a video's stream: what was decoded and every view's boxes ``[K, 7]``.

    ``restart``: the video is being read again sequentially; parts sent before this plan are void.
    """

    info: VideoInfo
    boxes: dict[str, np.ndarray]
    restart: bool = False


@dataclass
class ClipPart:
    """Some clips of one view of a video: ``clips [n, 3, T, S, S]`` uint8 at positions ``index [n]``."""

    view: str
    index: np.ndarray
    clips: torch.Tensor


def plan(views: Mapping[str, SamplerSpec], info: VideoInfo, video_key: str) -> dict[str, list[Clip]]:
    """Every view's clips for a video of this size (and these frame times)."""
    return {name: sample_clips(spec, info.num_frames, info.height, info.width, video_key, info.fps, info.times)
            for name, spec in views.items()}


def _boxes(plans: Mapping[str, list[Clip]]) -> dict[str, np.ndarray]:
    return {name: np.array([c.box for c in clips], dtype=np.float32).reshape(-1, BOX_DIM)
            for name, clips in plans.items()}


def stream_from_reader(reader: VideoReader, views: Mapping[str, SamplerSpec], video_key: str,
                       part_clips: int = PART_CLIPS, restart: bool = False) -> Iterator[VideoPlan | ClipPart]:
    """A :class:`VideoPlan`, then every view's clips in parts of at most ``part_clips``.

    No parts follow a plan in which a view places no clip (the video cannot be stored whole).
    """
    plans = plan(views, reader.info, video_key)
    yield VideoPlan(reader.info, _boxes(plans), restart)
    if any(not clips for clips in plans.values()):
        return
    users: dict[int, list[tuple[str, int]]] = defaultdict(list)  # frame -> clips using it
    remaining: dict[tuple[str, int], int] = {}  # clip -> frames still missing
    for name, clips in plans.items():
        for k, clip in enumerate(clips):
            for f in set(clip.frames):
                users[f].append((name, k))
            remaining[(name, k)] = len(set(clip.frames))
    refs = {f: len(u) for f, u in users.items()}  # frame -> clips not built yet
    cache: dict[int, np.ndarray] = {}
    out = {name: _InOrder(name, part_clips) for name in plans}
    for f, frame in reader.frames(sorted(users)):
        cache[f] = frame
        del frame
        for name, k in users[f]:
            remaining[(name, k)] -= 1
            if remaining[(name, k)] == 0:
                clip = plans[name][k]
                built = crop_resize([cache[i] for i in clip.frames], clip.crop, views[name].size, clip.flip)
                for i in set(clip.frames):
                    refs[i] -= 1
                    if refs[i] == 0:
                        del cache[i]
                yield from out[name].add(k, built)
                del built
    missing = [key for key, n in remaining.items() if n]
    if missing:
        raise FrameIndexError(f"frames of {len(missing)} clips were not produced")
    for name in plans:
        if out[name].ready:
            yield out[name].part()


class _InOrder:
    """One view's built clips, sent in storage order in parts of at most ``part_clips``.

    A kind whose clips finish in time order (``dense``, ``uniform``) holds at most ``part_clips``
    built clips here; a random view at most its K.
    """

    def __init__(self, view: str, part_clips: int) -> None:
        self.view, self.part_clips = view, part_clips
        self.built: dict[int, torch.Tensor] = {}  # built, waiting for an earlier clip
        self.ready: list[tuple[int, torch.Tensor]] = []  # in order, not sent yet
        self.next = 0  # the next clip to become ready

    def add(self, k: int, clip: torch.Tensor) -> Iterator[ClipPart]:
        self.built[k] = clip
        while self.next in self.built:
            self.ready.append((self.next, self.built.pop(self.next)))
            self.next += 1
            if len(self.ready) >= self.part_clips:
                yield self.part()

    def part(self) -> ClipPart:
        """The ready clips as one part."""
        part = ClipPart(self.view, np.array([k for k, _ in self.ready], dtype=np.int64),
                        torch.stack([c for _, c in self.ready]))
        self.ready = []
        return part


def collect(events: Iterator[VideoPlan | ClipPart], views: Mapping[str, SamplerSpec]) -> VideoClips:
    """A video's stream gathered whole (a ``restart`` plan voids the parts before it)."""
    head, parts = None, []
    for event in events:
        if isinstance(event, VideoPlan):
            head, parts = event, []
        else:
            parts.append(event)
    assert head is not None, "a video's stream starts with its plan"
    clips = {}
    for name, spec in views.items():
        own = [p for p in parts if p.view == name]
        if not own:
            clips[name] = _no_clips(spec)
            continue
        order = np.argsort(np.concatenate([p.index for p in own]), kind="stable")
        clips[name] = torch.cat([p.clips for p in own])[torch.from_numpy(order)]
    return VideoClips(info=head.info, clips=clips, boxes=head.boxes)


def cut_from_reader(reader: VideoReader, views: Mapping[str, SamplerSpec], video_key: str) -> VideoClips:
    """Sample, decode once and crop/resize all views' clips from an open reader, whole (small videos,
    tests, benchmarks; extraction streams them with :func:`stream_video`)."""
    return collect(stream_from_reader(reader, views, video_key), views)


def _no_clips(spec: SamplerSpec) -> torch.Tensor:
    """A view that places no clip in this video (a variable-count kind may): an empty batch."""
    return torch.empty((0, 3, spec.frames, spec.size, spec.size), dtype=torch.uint8)


def cut_video(path: str | Path, views: Mapping[str, SamplerSpec], video_key: str, *,
              decoder: str = "auto", threads: int = 0) -> VideoClips:
    """Open ``path`` and cut its clips, whole; falls back to sequential decoding when seeking misleads.

    Raises :class:`~vssl.extract.decode.DecodeError` for files that are not decodable videos.
    """
    return collect(stream_video(path, views, video_key, decoder=decoder, threads=threads), views)


def stream_video(path: str | Path, views: Mapping[str, SamplerSpec], video_key: str, *, decoder: str = "auto",
                 threads: int = 0, part_clips: int = PART_CLIPS) -> Iterator[VideoPlan | ClipPart]:
    """Open ``path`` and stream its clips (:func:`stream_from_reader`); when seeking misleads, the
    stream starts again from a sequential read with a ``restart`` plan.

    Raises :class:`~vssl.extract.decode.DecodeError` for files that are not decodable videos; any
    other exception carries a note naming ``path`` (:func:`~vssl.errors.working_on`).
    """
    with working_on("video", path):
        try:
            with open_video(path, decoder, threads=threads) as reader:
                yield from stream_from_reader(reader, views, video_key, part_clips)
        except FrameIndexError:
            with open_video(path, "pyav", sequential=True, threads=threads) as reader:
                yield from stream_from_reader(reader, views, video_key, part_clips, restart=True)
