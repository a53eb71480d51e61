"""``uniform:TxS`` — evaluation views: T clips with starts evenly spaced, times S square crops.

Starts run evenly from the first to the last possible start; the S crops of side ``min(H, W)`` are
evenly spaced along the long side (S=1: the centre crop; S=3: both ends and the centre). Resizing
the square to ``size`` equals "short side to ``size``, then crop", the usual protocol.
``place=slowfast``: SlowFast's ``decoder_orig`` starts and ``temporal_sampling``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .base import (Clip, VideoGeometry, clip_frames, evenly_spaced, make_clip, parse_choice, parse_grid,
                   slowfast_frames, slowfast_max_start, square_crops, view_kind)
from .grid import GridClips


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
        temporal, spatial = parse_grid(args, view)
        clip = {**clip, "seed": 0}  # deterministic: the seed changes neither its clips nor its record
        place = parse_choice(options.get("place", "even"), "place", ("even", "slowfast"), view)
        return cls(temporal=temporal, spatial=spatial, placement=place, **clip)

    def place(self, video: VideoGeometry, video_key: str) -> list[Clip]:
        """Time-major: clip ``t * S + s`` is temporal position t, spatial crop s."""
        crops = square_crops(self.spatial, video.height, video.width)
        n = video.num_frames
        if self.placement == "slowfast":  # decoder_orig.get_start_end_idx, use_offset=False: delta * i / T
            starts = [slowfast_max_start(self, n) * i / self.temporal for i in range(self.temporal)]
            frames = [slowfast_frames(start, self, n) for start in starts]
        else:
            frames = [clip_frames(start, self, n) for start in evenly_spaced(self.temporal, max(n - self.span, 0))]
        return [make_clip(f, crop, False, video) for f in frames for crop in crops]
