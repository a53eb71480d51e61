"""Clip samplers: where each clip of a video lies in time and space, and its stored box.

Two kinds (DESIGN.md, SCALE §3.3 and §4):

- ``random:K`` — training views: K clips, each at a random temporal start and a
  RandomResizedCrop-style spatial crop (area fraction drawn from ``scale``, log-uniform
  aspect ratio from ``ratio``), optionally mirrored with probability ``flip``. Options
  follow the count, colon-separated: ``random:16:scale=0.2-1:ratio=0.75-1.333:flip=0.5``.
- ``uniform:TxS`` — evaluation views: T clips with starts evenly spaced from the first
  to the last possible start, times S square crops of side ``min(H, W)`` evenly spaced
  along the long side (S=1: the centre crop; S=3: both ends and the centre). Resizing
  the square to ``size`` equals "short side to ``size``, then crop", the usual protocol.

A clip is ``frames`` frames, ``stride`` apart. **Short videos**: when a video has fewer
frames than a clip spans, the clip starts at frame 0 and indices past the end repeat the
last frame (so every clip has exactly ``frames`` frames).

**Boxes** are stored as DESIGN.md defines them: ``(t0, y0, x0, t1, y1, x1, flip)`` with
``t0 = first index / count``, ``t1 = (last index + 1) / count`` (``count`` = decoded
frames; ``last`` is the last index actually used, after the short-video rule), y/x the
crop's pixel edges in the decoded frame divided by its height/width, flip 1.0 if mirrored.

**Randomness** is a function of ``(seed, view spec, video key)`` only (a generator seeded
from a hash of them), never of a global stream, so resumed, sharded and parallel runs
sample exactly what one uninterrupted run samples.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from vssl.errors import VsslError

#: RandomResizedCrop's usual ranges (area fraction, aspect ratio w/h).
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)
DEFAULT_FLIP = 0.5


@dataclass(frozen=True)
class SamplerSpec:
    """One view's sampler, complete enough to be recorded in the store and compared."""

    kind: str  # "random" | "uniform"
    temporal: int  # K for random, T for uniform
    spatial: int = 1  # S for uniform, 1 for random
    frames: int = 16
    stride: int = 4
    size: int = 224
    scale: tuple[float, float] = DEFAULT_SCALE
    ratio: tuple[float, float] = DEFAULT_RATIO
    flip: float = DEFAULT_FLIP
    seed: int = 0

    @property
    def num_clips(self) -> int:
        return self.temporal * self.spatial

    @property
    def span(self) -> int:
        """Frames from a clip's first to its last frame, inclusive."""
        return (self.frames - 1) * self.stride + 1

    @property
    def default_name(self) -> str:
        """``random16`` / ``uniform5x3``: the spec without the colon and options."""
        return f"random{self.temporal}" if self.kind == "random" else f"uniform{self.temporal}x{self.spatial}"

    def to_dict(self) -> dict[str, Any]:
        """What the store records (``views/<name>`` attrs); only the fields that matter to the kind."""
        d: dict[str, Any] = {"sampler": self.kind, "frames": self.frames, "stride": self.stride, "size": self.size}
        if self.kind == "random":
            d.update(clips=self.temporal, scale=list(self.scale), ratio=list(self.ratio), flip=self.flip,
                     seed=self.seed)
        else:
            d.update(temporal=self.temporal, spatial=self.spatial)
        return d


@dataclass(frozen=True)
class Clip:
    """One clip: its frame indices, crop rectangle in decoded pixels, mirror flag and box."""

    frames: tuple[int, ...]
    crop: tuple[int, int, int, int]  # y0, x0, height, width
    flip: bool
    box: tuple[float, ...] = field(default=())  # t0, y0, x0, t1, y1, x1, flip


_SPEC_RE = re.compile(r"^(random|uniform):(\d+)(?:x(\d+))?((?::[a-z_]+=[^:]+)*)$")


def _range(text: str, key: str, view: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split("-"))
    except ValueError:
        raise VsslError(f"view {view!r}: {key}={text!r} must be LOW-HIGH, e.g. {key}=0.2-1.0") from None
    if not 0 < lo <= hi:
        raise VsslError(f"view {view!r}: {key} range must satisfy 0 < LOW <= HIGH")
    return lo, hi


def parse_view(text: str, *, frames: int, stride: int, size: int, seed: int = 0) -> tuple[str, SamplerSpec]:
    """Parse ``[NAME=]random:K[:opt=val...]`` or ``[NAME=]uniform:TxS`` into (name, spec)."""
    text = text.strip()
    name = None
    head, sep, rest = text.partition("=")
    if sep and ":" not in head:
        name, text = head.strip(), rest.strip()
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise VsslError(f"view name {name!r}: use letters, digits, '_', '.', '-'")
    m = _SPEC_RE.match(text)
    if not m:
        raise VsslError(f"view spec {text!r}: expected random:K[:scale=A-B:ratio=A-B:flip=P] or uniform:TxS")
    kind, a, b, opts = m.group(1), int(m.group(2)), m.group(3), m.group(4)
    if a < 1 or (b is not None and int(b) < 1):
        raise VsslError(f"view spec {text!r}: clip counts must be >= 1")
    if kind == "random" and b is not None:
        raise VsslError(f"view spec {text!r}: random takes one count (random:K)")
    kw: dict[str, Any] = {}
    for opt in filter(None, opts.split(":")):
        key, _, value = opt.partition("=")
        if kind != "random" or key not in ("scale", "ratio", "flip"):
            raise VsslError(f"view spec {text!r}: unknown option {key!r} (random takes scale, ratio, flip)")
        if key == "flip":
            try:
                kw["flip"] = float(value)
            except ValueError:
                raise VsslError(f"view spec {text!r}: flip must be a probability") from None
            if not 0 <= kw["flip"] <= 1:
                raise VsslError(f"view spec {text!r}: flip must be in [0, 1]")
        else:
            kw[key] = _range(value, key, text)
    if kw.get("scale", (0, 0))[1] > 1:
        raise VsslError(f"view spec {text!r}: scale is an area fraction, at most 1")
    if frames < 1 or stride < 1 or size < 1:
        raise VsslError("--frames, --stride and --size must be >= 1")
    if kind == "random":
        spec = SamplerSpec("random", a, 1, frames, stride, size, seed=seed, **kw)
    else:
        spec = SamplerSpec("uniform", a, int(b or 1), frames, stride, size, flip=0.0, seed=0)
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


def video_rng(spec: SamplerSpec, video_key: str) -> np.random.Generator:
    """The generator of one (seed, view, video): independent of every other video and run."""
    text = json.dumps(spec.to_dict(), sort_keys=True) + "\0" + video_key
    words = np.frombuffer(hashlib.blake2b(text.encode(), digest_size=16).digest(), dtype=np.uint32)
    return np.random.default_rng([spec.seed & 0xFFFFFFFF, *words.tolist()])


def clip_frames(start: int, spec: SamplerSpec, count: int) -> tuple[int, ...]:
    """``frames`` indices from ``start``, ``stride`` apart, past-the-end ones repeating the last frame."""
    return tuple(min(start + j * spec.stride, count - 1) for j in range(spec.frames))


def _box(frames: Sequence[int], crop: tuple[int, int, int, int], flip: bool,
         count: int, height: int, width: int) -> tuple[float, ...]:
    y0, x0, h, w = crop
    return (frames[0] / count, y0 / height, x0 / width, (frames[-1] + 1) / count,
            (y0 + h) / height, (x0 + w) / width, 1.0 if flip else 0.0)


def random_resized_crop(rng: np.random.Generator, height: int, width: int,
                        scale: tuple[float, float], ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """A crop of random area fraction in ``scale`` and log-uniform aspect (w/h) in ``ratio``.

    Ten tries at a rectangle that fits; then the largest centred crop with the aspect
    clamped into ``ratio`` (the RandomResizedCrop rule).
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    h, w = max(1, min(h, height)), max(1, min(w, width))
    return (height - h) // 2, (width - w) // 2, h, w


def _even(n: int, hi: int) -> list[int]:
    """``n`` integers evenly spaced over [0, hi] (the middle one when n == 1)."""
    if n == 1:
        return [hi // 2]
    return [int(round(i * hi / (n - 1))) for i in range(n)]


def sample_clips(spec: SamplerSpec, num_frames: int, height: int, width: int, video_key: str) -> list[Clip]:
    """The clips of one video for one view, in storage order.

    ``uniform``: time-major (clip ``t * S + s`` is temporal position t, spatial crop s).
    """
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError("a video needs at least one frame of at least one pixel")
    last_start = max(num_frames - spec.span, 0)
    clips: list[Clip] = []
    if spec.kind == "random":
        rng = video_rng(spec, video_key)
        for _ in range(spec.temporal):
            start = int(rng.integers(0, last_start + 1))
            crop = random_resized_crop(rng, height, width, spec.scale, spec.ratio)
            flip = bool(spec.flip > 0 and rng.random() < spec.flip)
            frames = clip_frames(start, spec, num_frames)
            clips.append(Clip(frames, crop, flip, _box(frames, crop, flip, num_frames, height, width)))
        return clips
    side = min(height, width)
    if width >= height:  # crops slide along the long side, centred on the short one
        crops = [((height - side) // 2, x, side, side) for x in _even(spec.spatial, width - side)]
    else:
        crops = [(y, (width - side) // 2, side, side) for y in _even(spec.spatial, height - side)]
    for start in _even(spec.temporal, last_start):
        frames = clip_frames(start, spec, num_frames)
        for crop in crops:
            clips.append(Clip(frames, crop, False, _box(frames, crop, False, num_frames, height, width)))
    return clips
