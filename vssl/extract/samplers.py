"""View kinds: where each clip of a video lies in time and space, and its stored box.

A view kind is one registered class (:func:`view_kind`): it parses its ``--views`` text,
places the clips of one video from the decoded geometry and time base, and says whether
every video gets the same number of clips (the store's fixed-K layout) or not (ragged).
Adding a kind is one class here. Built in (DESIGN.md, SCALE §3.3 and §4):

- ``random:K`` — training views: K clips, each at a random temporal start and a
  RandomResizedCrop-style spatial crop (area fraction drawn from ``scale``, log-uniform
  aspect ratio from ``ratio``), optionally mirrored with probability ``flip``. Options
  follow the count, colon-separated: ``random:16:scale=0.2-1:ratio=0.75-1.333:flip=0.5``.
  ``crop=lin`` gives SCALE's linear-probe crops, ``crop=aug`` its RandomResizedCrop ranges
  (:mod:`vssl.extract.crops`); ``place=slowfast`` a float start drawn as SlowFast draws it.
- ``uniform:TxS`` — evaluation views: T clips with starts evenly spaced from the first
  to the last possible start, times S square crops of side ``min(H, W)`` evenly spaced
  along the long side (S=1: the centre crop; S=3: both ends and the centre). Resizing
  the square to ``size`` equals "short side to ``size``, then crop", the usual protocol.
- ``segment:TxS`` — TSN-style views (VideoMAE-SSv2, SCMA): ``frames`` frames, one per equal
  segment of the whole video (segment centres, or T evenly shifted picks; ``jitter=1`` a
  random frame per segment for training), times uniform's S crops. ``stride`` does not apply.
- ``dense:S`` — one centre-cropped clip every S seconds over the whole video, placed on the
  frames' presentation times (:mod:`vssl.extract.dense`; a variable count: the ragged layout).

A clip is ``frames`` frames, ``stride`` apart (``segment``: one per segment). **Short videos**: when a video has fewer
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
from typing import Any, ClassVar, Sequence

import numpy as np

from vssl.errors import VsslError

from .crops import AUG_SCALE, CROPS, LIN_CROP, LIN_SIDES, short_side_jitter_crop
from .timebase import on_time_base

#: RandomResizedCrop's usual ranges (area fraction, aspect ratio w/h).
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)
DEFAULT_FLIP = 0.5


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


def _range(text: str, key: str, view: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split("-"))
    except ValueError:
        raise VsslError(f"view {view!r}: {key}={text!r} must be LOW-HIGH, e.g. {key}=0.2-1.0") from None
    if not 0 < lo <= hi:
        raise VsslError(f"view {view!r}: {key} range must satisfy 0 < LOW <= HIGH")
    return lo, hi


def _probability(text: str, key: str, view: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise VsslError(f"view spec {view!r}: {key} must be a probability") from None
    if not 0 <= p <= 1:
        raise VsslError(f"view spec {view!r}: {key} must be in [0, 1]")
    return p


def _choice(text: str, key: str, choices: Sequence[str], view: str) -> str:
    if text not in choices:
        raise VsslError(f"view spec {view!r}: {key}={text!r}; choose {' or '.join(choices)}")
    return text


def _count(text: str, view: str, what: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise VsslError(f"view spec {view!r}: {what} must be a whole number >= 1")
    return int(text)


def _t_by_s(args: str, view: str) -> tuple[int, int]:
    """``T`` or ``TxS`` (S defaults to 1): the clip grid of the evaluation kinds."""
    t, cross, s = args.partition("x")
    return _count(t, view, "T"), _count(s, view, "S") if cross else 1


def square_crops(spatial: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """``spatial`` square crops of side ``min(H, W)`` evenly spaced along the long side (y0, x0, h, w).

    One home for the evaluation crops (``uniform``, ``segment``): S=1 is the centre crop, S=3
    both ends and the centre; the square sits centred on the short side.
    """
    side = min(height, width)
    if width >= height:  # crops slide along the long side, centred on the short one
        return [((height - side) // 2, x, side, side) for x in _even(spatial, width - side)]
    return [(y, (width - side) // 2, side, side) for y in _even(spatial, height - side)]


def _box(frames: Sequence[int], crop: tuple[int, int, int, int], flip: bool,
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


def _clip(frames: tuple[int, ...], crop: tuple[int, int, int, int], flip: bool, video: VideoGeometry) -> Clip:
    return Clip(frames, crop, flip, _box(frames, crop, flip, video.num_frames, video.height, video.width))


def video_rng(spec: SamplerSpec, video_key: str) -> np.random.Generator:
    """The generator of one (seed, view, video): independent of every other video and run."""
    text = json.dumps(spec.to_dict(), sort_keys=True) + "\0" + video_key
    words = np.frombuffer(hashlib.blake2b(text.encode(), digest_size=16).digest(), dtype=np.uint32)
    return np.random.default_rng([spec.seed & 0xFFFFFFFF, *words.tolist()])


@view_kind
@dataclass(frozen=True)
class RandomClips(SamplerSpec):
    """``random:K`` — K clips at random starts with RandomResizedCrop-style crops (SCALE §3.3)."""

    temporal: int = 1  # K
    scale: tuple[float, float] = DEFAULT_SCALE
    ratio: tuple[float, float] = DEFAULT_RATIO
    flip: float = DEFAULT_FLIP
    crop: str = "rrc"  # rrc | lin | aug (see CROPS)
    placement: str = "start"  # place=start|slowfast: where clips start in time

    kind: ClassVar[str] = "random"
    syntax: ClassVar[str] = "random:K[:crop=rrc|lin|aug:scale=A-B:ratio=A-B:flip=P:place=start|slowfast]"
    options: ClassVar[tuple[str, ...]] = ("scale", "ratio", "flip", "crop", "place")

    @property
    def num_clips(self) -> int:
        return self.temporal

    @property
    def default_name(self) -> str:
        return f"random{self.temporal}"

    def to_dict(self) -> dict[str, Any]:
        d = {**super().to_dict(), "clips": self.temporal, "scale": list(self.scale),
             "ratio": list(self.ratio), "flip": self.flip, "seed": self.seed}
        if self.crop != "rrc":  # defaults unrecorded: older views keep their record and their seeds
            d["crop"] = self.crop
        if self.placement != "start":
            d["place"] = self.placement
        return d

    @classmethod
    def parse(cls, args: str, options: dict[str, str], view: str, **clip: Any) -> "RandomClips":
        if "x" in args:
            raise VsslError(f"view spec {view!r}: random takes one count (random:K)")
        kw: dict[str, Any] = {}
        for key, value in options.items():
            if key == "crop":
                kw[key] = _choice(value, key, CROPS, view)
            elif key == "place":
                kw["placement"] = _choice(value, key, ("start", "slowfast"), view)
            else:
                kw[key] = _probability(value, key, view) if key == "flip" else _range(value, key, view)
        if kw.get("scale", (0, 0))[1] > 1:
            raise VsslError(f"view spec {view!r}: scale is an area fraction, at most 1")
        if kw.get("crop") == "lin" and ("scale" in kw or "ratio" in kw):
            raise VsslError(f"view spec {view!r}: crop=lin has no scale/ratio (short side {LIN_SIDES[0]}-"
                            f"{LIN_SIDES[1]}, a {LIN_CROP} crop)")
        if kw.get("crop") == "aug":  # the released byol config's ranges unless given
            kw = {"scale": AUG_SCALE, "ratio": DEFAULT_RATIO, **kw}
        return cls(temporal=_count(args, view, "the clip count"), **clip, **kw)

    def place(self, video: VideoGeometry, video_key: str) -> list[Clip]:
        rng = video_rng(self, video_key)
        clips = []
        for _ in range(self.temporal):
            if self.placement == "slowfast":  # decoder_orig.get_start_end_idx, clip_idx -1: a float start
                frames = slowfast_frames(rng.uniform(0, slowfast_max_start(self, video.num_frames)), self,
                                         video.num_frames)
            else:
                frames = clip_frames(int(rng.integers(0, max(video.num_frames - self.span, 0) + 1)), self,
                                     video.num_frames)
            if self.crop == "lin":
                crop = short_side_jitter_crop(rng, video.height, video.width)
            else:
                crop = random_resized_crop(rng, video.height, video.width, self.scale, self.ratio)
            flip = bool(self.flip > 0 and rng.random() < self.flip)
            clips.append(_clip(frames, crop, flip, video))
        return clips


@dataclass(frozen=True)
class GridClips(SamplerSpec):
    """The evaluation kinds' shared grid: ``TxS`` clips, T temporal positions x S crops, time-major.

    Not registered; ``uniform`` and ``segment`` subclass it and differ only in where a
    temporal position's frames lie (both use :func:`square_crops`).
    """

    temporal: int = 1  # T
    spatial: int = 1  # S

    @property
    def num_clips(self) -> int:
        return self.temporal * self.spatial

    @property
    def default_name(self) -> str:
        return f"{self.kind}{self.temporal}x{self.spatial}"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "temporal": self.temporal, "spatial": self.spatial}


@view_kind
@dataclass(frozen=True)
class UniformClips(GridClips):
    """``uniform:TxS`` — T evenly spaced starts x S square crops along the long side (evaluation)."""

    placement: str = "even"  # place=even|slowfast: where clips start in time

    kind: ClassVar[str] = "uniform"
    syntax: ClassVar[str] = "uniform:TxS[:place=even|slowfast]"
    options: ClassVar[tuple[str, ...]] = ("place",)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if self.placement != "even":  # unrecorded default: views written before keep their record
            d["place"] = self.placement
        return d

    @classmethod
    def parse(cls, args: str, options: dict[str, str], view: str, **clip: Any) -> "UniformClips":
        temporal, spatial = _t_by_s(args, view)
        clip = {**clip, "seed": 0}  # deterministic: the seed changes neither its clips nor its record
        place = _choice(options.get("place", "even"), "place", ("even", "slowfast"), view)
        return cls(temporal=temporal, spatial=spatial, placement=place, **clip)

    def place(self, video: VideoGeometry, video_key: str) -> list[Clip]:
        """Time-major: clip ``t * S + s`` is temporal position t, spatial crop s."""
        crops = square_crops(self.spatial, video.height, video.width)
        n = video.num_frames
        if self.placement == "slowfast":  # decoder_orig.get_start_end_idx, use_offset=False: delta * i / T
            starts = [slowfast_max_start(self, n) * i / self.temporal for i in range(self.temporal)]
            frames = [slowfast_frames(start, self, n) for start in starts]
        else:
            frames = [clip_frames(start, self, n) for start in _even(self.temporal, max(n - self.span, 0))]
        return [_clip(f, crop, False, video) for f in frames for crop in crops]


@view_kind
@dataclass(frozen=True)
class SegmentClips(GridClips):
    """``segment:TxS`` — TSN-style clips: ``frames`` frames, one per equal segment of the whole video.

    For models trained on frames spread over the whole video rather than on a dense clip
    (VideoMAE on SSv2, SCMA's uniform frames): a clip of K = ``frames`` frames divides the
    ``n`` decoded frames into K equal segments, segment k covering ``[k n / K, (k + 1) n / K)``,
    and takes one frame from each. ``stride`` does not apply (the gap is the segment length),
    so it is recorded as ``None`` and changing ``--stride`` changes neither the clips nor the record.

    - Evaluation (default): clip i of T takes, in every segment, the frame at offset
      ``(i + 0.5) / T`` of the segment, i.e. index ``floor(n (2 T k + 2 i + 1) / (2 T K))``
      (integer arithmetic, no float rounding). T=1 is each segment's centre, TSN's and
      VideoMAE's test pick; T>1 are multi-view TSN testing's evenly shifted picks.
    - Training (``jitter=1``): each clip takes a uniformly random frame inside each segment,
      ``floor(k n / K) <= index < floor((k + 1) n / K)``, drawn from :func:`video_rng`, so a
      function of (seed, spec, video) and of the clip's position only.

    Spatially every temporal position gets uniform's S square crops (:func:`square_crops`),
    time-major like ``uniform``. **Short videos** (``n < K``): segments are shorter than a frame,
    so indices repeat (each frame for about K / n segments, in order); an empty integer
    segment takes its first frame, ``floor(k n / K)``.
    """

    jitter: bool = False

    kind: ClassVar[str] = "segment"
    syntax: ClassVar[str] = "segment:TxS[:jitter=0|1]"
    options: ClassVar[tuple[str, ...]] = ("jitter",)

    @property
    def default_name(self) -> str:
        return super().default_name + ("j" if self.jitter else "")  # beside segment:TxS in one run

    def to_dict(self) -> dict[str, Any]:
        d = {**super().to_dict(), "stride": None}
        if self.jitter:  # only random picks depend on the seed
            d.update(jitter=True, seed=self.seed)
        return d

    @classmethod
    def parse(cls, args: str, options: dict[str, str], view: str, **clip: Any) -> "SegmentClips":
        temporal, spatial = _t_by_s(args, view)
        jitter = _choice(options.get("jitter", "0"), "jitter", ("0", "1"), view) == "1"
        if not jitter:
            clip = {**clip, "seed": 0}  # deterministic: the seed changes neither its clips nor its record
        return cls(temporal=temporal, spatial=spatial, jitter=jitter, **clip)

    def segment_frames(self, num_frames: int, clip: int, rng: np.random.Generator | None = None) -> tuple[int, ...]:
        """The ``frames`` indices of temporal clip ``clip``: a draw from ``rng`` per segment if given."""
        n, k, t = num_frames, self.frames, self.temporal
        if rng is None:
            return tuple(n * (2 * t * j + 2 * clip + 1) // (2 * t * k) for j in range(k))
        lo = np.arange(k) * n // k
        hi = np.maximum(np.arange(1, k + 1) * n // k, lo + 1)  # an empty segment (n < K) keeps its first frame
        return tuple(int(i) for i in rng.integers(lo, hi))

    def place(self, video: VideoGeometry, video_key: str) -> list[Clip]:
        """Time-major: clip ``t * S + s`` is temporal clip t, spatial crop s."""
        crops = square_crops(self.spatial, video.height, video.width)
        rng = video_rng(self, video_key) if self.jitter else None
        frames = [self.segment_frames(video.num_frames, i, rng) for i in range(self.temporal)]
        return [_clip(f, crop, False, video) for f in frames for crop in crops]


# ---------------------------------------------------------------------- parsing


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
    kind = VIEW_KINDS.get(m.group(1)) if m else None
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


from . import dense  # noqa: E402,F401  (registers the dense:S view kind, which builds on this module)
