"""``random:K`` — training views: K clips, each at a random temporal start and a random crop.

A RandomResizedCrop-style spatial crop (area fraction drawn from ``scale``, log-uniform aspect ratio
from ``ratio``), optionally mirrored with probability ``flip``. Options follow the count,
colon-separated: ``random:16:scale=0.2-1:ratio=0.75-1.333:flip=0.5``. ``crop=lin`` gives SCALE's
linear-probe crops, ``crop=aug`` its RandomResizedCrop ranges (:mod:`vssl.extract.crops`);
``place=slowfast`` a float start drawn as SlowFast draws it (SCALE §3.3, DESIGN.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from vssl.errors import VsslError

from ..crops import AUG_SCALE, CROPS, LIN_CROP, LIN_SIDES, short_side_jitter_crop
from .base import (Clip, SamplerSpec, VideoGeometry, clip_frames, make_clip, parse_choice, parse_count,
                   parse_probability, parse_range, slowfast_frames, slowfast_max_start, video_rng, view_kind)


#: RandomResizedCrop's usual ranges (area fraction, aspect ratio w/h).
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)
DEFAULT_FLIP = 0.5


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
                kw[key] = parse_choice(value, key, CROPS, view)
            elif key == "place":
                kw["placement"] = parse_choice(value, key, ("start", "slowfast"), view)
            else:
                kw[key] = parse_probability(value, key, view) if key == "flip" else parse_range(value, key, view)
        if kw.get("scale", (0, 0))[1] > 1:
            raise VsslError(f"view spec {view!r}: scale is an area fraction, at most 1")
        if kw.get("crop") == "lin" and ("scale" in kw or "ratio" in kw):
            raise VsslError(f"view spec {view!r}: crop=lin has no scale/ratio (short side {LIN_SIDES[0]}-"
                            f"{LIN_SIDES[1]}, a {LIN_CROP} crop)")
        if kw.get("crop") == "aug":  # the released byol config's ranges unless given
            kw = {"scale": AUG_SCALE, "ratio": DEFAULT_RATIO, **kw}
        return cls(temporal=parse_count(args, view, "the clip count"), **clip, **kw)

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
            clips.append(make_clip(frames, crop, flip, video))
        return clips



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
