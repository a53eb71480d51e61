"""``segment:TxS`` — TSN-style views (VideoMAE-SSv2, SCMA): one frame per equal segment of the video.

``frames`` frames, one per equal segment of the whole video (segment centres, or T evenly shifted
picks; ``jitter=1`` a random frame per segment for training), times uniform's S crops. ``stride``
does not apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Clip, VideoGeometry, make_clip, parse_choice, parse_grid, square_crops, video_rng, view_kind
from .grid import GridClips


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
        temporal, spatial = parse_grid(args, view)
        jitter = parse_choice(options.get("jitter", "0"), "jitter", ("0", "1"), view) == "1"
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
        return [make_clip(f, crop, False, video) for f in frames for crop in crops]
