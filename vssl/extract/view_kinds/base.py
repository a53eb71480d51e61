"""What every view kind shares: the clip, the video it is placed in, the kind's base class and registry.

A view kind says where each clip of a video lies in time and space, and its stored box. It is one
class, subclassing :class:`SamplerSpec` and registered with :func:`view_kind` (one module of this
package per built-in kind; a third-party one through the ``vssl.view_kinds`` entry-point group,
:mod:`vssl.extract.view_kinds`).

A clip is ``frames`` frames, ``stride`` apart. **Short videos**: when a video has fewer frames than
a clip spans, the clip starts at frame 0 and indices past the end repeat the last frame (so every
clip has exactly ``frames`` frames).

**Boxes** are stored as DESIGN.md defines them: ``(t0, y0, x0, t1, y1, x1, flip)`` with
``t0 = first index / count``, ``t1 = (last index + 1) / count`` (``count`` = decoded
frames; ``last`` is the last index actually used, after the short-video rule), y/x the
crop's pixel edges in the decoded frame divided by its height/width, flip 1.0 if mirrored.

**Randomness** is a function of ``(seed, view spec, video key)`` only (a generator seeded
from a hash of them, :func:`video_rng`), never of a global stream, so resumed, sharded and parallel
runs sample exactly what one uninterrupted run samples.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from vssl.errors import VsslError

@dataclass(frozen=True)
class Clip:
    """One clip: its frame indices, crop rectangle in decoded pixels, mirror flag and box."""

    frames: tuple[int, ...]
    crop: tuple[int, int, int, int]  # y0, x0, height, width
    flip: bool
    box: tuple[float, ...] = field(default=())  # t0, y0, x0, t1, y1, x1, flip


@dataclass(frozen=True)
class VideoGeometry:
    """What a view kind may use to place clips: the decoded frame count, size and time base.

    ``times``: each decoded frame's presentation time in seconds from the first (from the
    decoder's timestamps; None when the file has none). Only kinds that place clips by seconds
    (``timed``) are given them; the others count frames on the time base.
    """

    num_frames: int
    height: int
    width: int
    fps: float = 0.0
    times: tuple[float, ...] | None = field(default=None, compare=False, repr=False)


# ---------------------------------------------------------------------- the view-kind protocol


@dataclass(frozen=True)
class SamplerSpec:
    """One view's sampler, complete enough to be recorded in the store and compared.

    The base of every view kind: how one clip is cut (``frames`` frames ``stride`` apart,
    resized to ``size``) and the seed of random choices. A kind subclasses it with its own
    fields and registers with :func:`view_kind`; it then

    - parses its text form (:meth:`parse`, from ``KIND:ARGS[:key=value...]``),
    - places the clips of one video (:meth:`place`, from the decoded geometry and time base),
    - says whether every video gets the same number of clips (``fixed_count``; the store
      then uses the fixed-K row layout, else the ragged one),
    - names itself (``default_name``) and records itself (:meth:`to_dict`, what the store keeps).
    """

    frames: int = 16
    stride: int = 4
    size: int = 224
    seed: int = 0
    #: the time base (``--fps``): 0 = the file's own frames; else frames are chosen by time at this rate
    fps: float = 0.0

    kind: ClassVar[str] = ""
    #: the text form after ``KIND:`` (for help and error messages)
    syntax: ClassVar[str] = ""
    #: options accepted after the count, ``:key=value``
    options: ClassVar[tuple[str, ...]] = ()
    fixed_count: ClassVar[bool] = True
    #: True for a kind that places clips by seconds on the frames' real presentation times: it gets
    #: the file's geometry with ``times`` and applies the time base (``fps``) itself
    timed: ClassVar[bool] = False

    @property
    def num_clips(self) -> int | None:
        """Clips per video, or None when it depends on the video (ragged layout)."""
        raise NotImplementedError

    @property
    def span(self) -> int:
        """Frames from a clip's first to its last frame, inclusive."""
        return (self.frames - 1) * self.stride + 1

    @property
    def default_name(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """What the store records (``views/<name>`` attrs): the kind and the fields that matter to it."""
        d = {"sampler": self.kind, "frames": self.frames, "stride": self.stride, "size": self.size}
        if self.fps:  # only when set: views written before the time base keep their record (and seeds)
            d["fps"] = self.fps
        return d

    @classmethod
    def parse(cls, args: str, options: dict[str, str], view: str, **clip: Any) -> "SamplerSpec":
        """Build from the text after ``KIND:`` (``args``) and the ``key=value`` options."""
        raise NotImplementedError

    def place(self, video: VideoGeometry, video_key: str) -> list[Clip]:
        """The clips of one video, in storage order."""
        raise NotImplementedError


VIEW_KINDS: dict[str, type[SamplerSpec]] = {}


def view_kind(cls: type[SamplerSpec]) -> type[SamplerSpec]:
    """Register a view kind (class decorator): ``KIND:...`` in ``--views`` then builds it."""
    if not cls.kind or cls.kind in VIEW_KINDS:
        raise ValueError(f"view kind {cls.kind!r} has no name or is registered twice")
    VIEW_KINDS[cls.kind] = cls
    return cls


def parse_range(text: str, key: str, view: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split("-"))
    except ValueError:
        raise VsslError(f"view {view!r}: {key}={text!r} must be LOW-HIGH, e.g. {key}=0.2-1.0") from None
    if not 0 < lo <= hi:
        raise VsslError(f"view {view!r}: {key} range must satisfy 0 < LOW <= HIGH")
    return lo, hi


def parse_probability(text: str, key: str, view: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise VsslError(f"view spec {view!r}: {key} must be a probability") from None
    if not 0 <= p <= 1:
        raise VsslError(f"view spec {view!r}: {key} must be in [0, 1]")
    return p


def parse_choice(text: str, key: str, choices: Sequence[str], view: str) -> str:
    if text not in choices:
        raise VsslError(f"view spec {view!r}: {key}={text!r}; choose {' or '.join(choices)}")
    return text


def parse_count(text: str, view: str, what: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise VsslError(f"view spec {view!r}: {what} must be a whole number >= 1")
    return int(text)


def parse_grid(args: str, view: str) -> tuple[int, int]:
    """``T`` or ``TxS`` (S defaults to 1): the clip grid of the evaluation kinds."""
    t, cross, s = args.partition("x")
    return parse_count(t, view, "T"), parse_count(s, view, "S") if cross else 1


def square_crops(spatial: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """``spatial`` square crops of side ``min(H, W)`` evenly spaced along the long side (y0, x0, h, w).

    One home for the evaluation crops (``uniform``, ``segment``): S=1 is the centre crop, S=3
    both ends and the centre; the square sits centred on the short side.
    """
    side = min(height, width)
    if width >= height:  # crops slide along the long side, centred on the short one
        return [((height - side) // 2, x, side, side) for x in evenly_spaced(spatial, width - side)]
    return [(y, (width - side) // 2, side, side) for y in evenly_spaced(spatial, height - side)]


def clip_box(frames: Sequence[int], crop: tuple[int, int, int, int], flip: bool,
         count: int, height: int, width: int) -> tuple[float, ...]:
    """DESIGN.md's box: ``t0 = first / count``, ``t1 = (last + 1) / count``, y/x as fractions of the frame."""
    y0, x0, h, w = crop
    return (frames[0] / count, y0 / height, x0 / width, (frames[-1] + 1) / count,
            (y0 + h) / height, (x0 + w) / width, 1.0 if flip else 0.0)


def clip_frames(start: int, spec: SamplerSpec, count: int) -> tuple[int, ...]:
    """``frames`` indices from ``start``, ``stride`` apart, past-the-end ones repeating the last frame."""
    return tuple(min(start + j * spec.stride, count - 1) for j in range(spec.frames))


def slowfast_max_start(spec: SamplerSpec, count: int) -> float:
    """SlowFast's ``delta``: the last start of a clip of ``stride * frames`` positions (not the span)."""
    return float(max(count - max(1, spec.stride * spec.frames), 0))


def slowfast_frames(start: float, spec: SamplerSpec, count: int) -> tuple[int, ...]:
    """The frames SlowFast picks from a (float) start: ``decoder_orig.temporal_sampling``.

    ``frames`` points of ``torch.linspace(start, start + stride * frames - 1)`` truncated and
    clamped to the video, so a 16x4 clip steps by 63/15 = 4.2 frames, not 4 (torch's own
    float32 linspace, so the truncation matches the released decoder bit for bit).
    """
    import torch

    end = start + max(1, spec.stride * spec.frames) - 1
    index = torch.linspace(start, end, spec.frames).clamp(0, count - 1).long()
    return tuple(int(i) for i in index)


def make_clip(frames: tuple[int, ...], crop: tuple[int, int, int, int], flip: bool, video: VideoGeometry) -> Clip:
    return Clip(frames, crop, flip, clip_box(frames, crop, flip, video.num_frames, video.height, video.width))


def video_rng(spec: SamplerSpec, video_key: str) -> np.random.Generator:
    """The generator of one (seed, view, video): independent of every other video and run."""
    text = json.dumps(spec.to_dict(), sort_keys=True) + "\0" + video_key
    words = np.frombuffer(hashlib.blake2b(text.encode(), digest_size=16).digest(), dtype=np.uint32)
    return np.random.default_rng([spec.seed & 0xFFFFFFFF, *words.tolist()])



def evenly_spaced(n: int, hi: int) -> list[int]:
    """``n`` integers evenly spaced over [0, hi] (the middle one when n == 1)."""
    if n == 1:
        return [hi // 2]
    return [int(round(i * hi / (n - 1))) for i in range(n)]

