"""Parsing ``--views`` and placing one view's clips in a video: the front of the view kinds.

The kinds themselves are modules of :mod:`vssl.extract.view_kinds` (``random``, ``uniform``,
``segment``, ``dense``, and plugins of the ``vssl.view_kinds`` entry-point group); this module turns
``[NAME=]KIND:ARGS[:key=value...]`` into their specs (:func:`parse_view`, :func:`parse_views`) and
applies the time base around a kind's placement (:func:`sample_clips`, :mod:`vssl.extract.timebase`).
The kinds' names stay importable from here as they were before they had a package of their own.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from vssl.errors import VsslError

from .timebase import on_time_base
from .view_kinds import VIEW_KINDS, kind_named
from .view_kinds.base import (Clip, SamplerSpec, VideoGeometry, clip_frames, slowfast_frames, slowfast_max_start,
                              square_crops, video_rng, view_kind)
from .view_kinds.grid import GridClips
from .view_kinds.random import DEFAULT_FLIP, DEFAULT_RATIO, DEFAULT_SCALE, RandomClips, random_resized_crop
from .view_kinds.segment import SegmentClips
from .view_kinds.uniform import UniformClips

__all__ = ["Clip", "DEFAULT_FLIP", "DEFAULT_RATIO", "DEFAULT_SCALE", "GridClips", "RandomClips", "SamplerSpec",
           "SegmentClips", "UniformClips", "VIEW_KINDS", "VideoGeometry", "clip_frames", "parse_view", "parse_views",
           "random_resized_crop", "sample_clips", "slowfast_frames", "slowfast_max_start", "square_crops", "video_rng",
           "view_kind"]


_SPEC_RE = re.compile(r"^([a-z_]+):([^:]*)((?::[a-z_]+=[^:]+)*)$")


def parse_view(text: str, *, frames: int, stride: int, size: int, seed: int = 0,
               fps: float | None = None) -> tuple[str, SamplerSpec]:
    """Parse ``[NAME=]KIND:ARGS[:opt=val...]`` (e.g. ``random:16:flip=0``, ``eval=uniform:5x3``)."""
    text = text.strip()
    name = None
    head, sep, rest = text.partition("=")
    if sep and ":" not in head:
        name, text = head.strip(), rest.strip()
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise VsslError(f"view name {name!r}: use letters, digits, '_', '.', '-'")
    m = _SPEC_RE.match(text)
    kind = kind_named(m.group(1)) if m else None
    if m is None or kind is None or not m.group(2):
        raise VsslError(f"view spec {text!r}: expected {' or '.join(k.syntax for k in VIEW_KINDS.values())}")
    options: dict[str, str] = {}
    for opt in filter(None, m.group(3).split(":")):
        key, _, value = opt.partition("=")
        if key not in kind.options:
            takes = ", ".join(kind.options) or "no options"
            raise VsslError(f"view spec {text!r}: unknown option {key!r} ({kind.kind} takes {takes})")
        options[key] = value
    if frames < 1 or stride < 1 or size < 1:
        raise VsslError("--frames, --stride and --size must be >= 1")
    if fps is not None and fps < 0:
        raise VsslError("--fps must be > 0 (or unset: the file's own frames)")
    spec = kind.parse(m.group(2), options, text, frames=frames, stride=stride, size=size, seed=seed,
                      fps=float(fps or 0.0))
    return name or spec.default_name, spec


def parse_views(views: str | Sequence[str], **kw: Any) -> dict[str, SamplerSpec]:
    """Parse a comma-separated list (or a list) of view specs; names must be unique."""
    items = [v for part in ([views] if isinstance(views, str) else views) for v in part.split(",") if v.strip()]
    if not items:
        raise VsslError("--views: give at least one view, e.g. --views uniform:5x3")
    out: dict[str, SamplerSpec] = {}
    for item in items:
        name, spec = parse_view(item, **kw)
        if name in out:
            raise VsslError(f"two views are named {name!r}; name one of them: --views other={item.strip()}")
        out[name] = spec
    return out



def sample_clips(spec: SamplerSpec, num_frames: int, height: int, width: int, video_key: str,
                 fps: float = 0.0, times: Sequence[float] | None = None) -> list[Clip]:
    """The clips of one video for one view, in storage order (the view kind places them).

    ``fps`` is the file's frame rate and ``times`` its frames' presentation times (seconds, or
    None); with a time base (``spec.fps``) a kind places clips on the video resampled to it
    (:mod:`vssl.extract.timebase`), except a ``timed`` kind, which places them by seconds itself.
    """
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError("a video needs at least one frame of at least one pixel")
    if spec.timed:
        usable = tuple(times) if times is not None and len(times) == num_frames else None
        return spec.place(VideoGeometry(num_frames, height, width, fps, usable), video_key)
    return on_time_base(spec.place, VideoGeometry(num_frames, height, width, fps), spec.fps, video_key)
