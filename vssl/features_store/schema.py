"""What a vssl feature store holds: format constants, the backbone record, video entries.

The layout itself is documented in DESIGN.md ("The feature store"); this module is the
single place its names and codes are spelled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

FORMAT_VERSION = 1          # root attr `vssl_format`; bump on an incompatible layout change
STATUS_PENDING = 0
STATUS_DONE = 1
STATUS_FAILED = 2
BOX_FIELDS = ("t0", "y0", "x0", "t1", "y1", "x1", "flip")
#: the precisions features are computed in (vssl.device resolves ``auto`` to one of them)
PRECISIONS = ("fp32", "bf16", "fp16")
BOX_DIM = len(BOX_FIELDS)

# Chunks along N hold whole videos, sized by bytes: ~4 MiB of a view's rows per chunk (docs/PERFORMANCE.md),
# between 16 and 256 videos while a video's rows are small; fewer than 16 (down to one) only when 16 videos
# would hold more than the target (a token grid per clip: 16 videos of a ViT-B grid are ~580 MB, held in
# memory while their chunk is written).
TARGET_CHUNK_BYTES = 4 << 20
MIN_CHUNK_VIDEOS = 16
MAX_CHUNK_VIDEOS = 256
ASSUMED_CLIPS_PER_VIEW = 16


def chunk_videos_for(video_bytes: int) -> int:
    """Videos per chunk when one video's rows take ``video_bytes``: the largest power of two whose chunk
    fits TARGET_CHUNK_BYTES, clamped to [MIN_CHUNK_VIDEOS, MAX_CHUNK_VIDEOS] unless MIN_CHUNK_VIDEOS
    videos already exceed it (then as many as fit, at least one)."""
    per_video = max(1, int(video_bytes))
    n = MIN_CHUNK_VIDEOS
    while n > 1 and n * per_video > TARGET_CHUNK_BYTES:
        n //= 2
    while n * 2 * per_video <= TARGET_CHUNK_BYTES and n * 2 <= MAX_CHUNK_VIDEOS:
        n *= 2
    return n


def video_bytes(num_clips: int, clip_shape: Sequence[int], itemsize: int = 2) -> int:
    """Bytes of one video's features in a view of ``num_clips`` clips of shape ``clip_shape``."""
    size = num_clips * itemsize
    for n in clip_shape:
        size *= int(n)
    return size


def default_chunk_videos(embed_dim: int, itemsize: int = 2) -> int:
    """Videos per chunk for views of K=16 clips of one ``embed_dim``-wide vector (:func:`chunk_videos_for`):
    the chunking of a store created without knowing its views' size."""
    return chunk_videos_for(video_bytes(ASSUMED_CLIPS_PER_VIEW, (embed_dim,), itemsize))


@dataclass(frozen=True)
class BackboneSpec:
    """The frozen network whose features a store holds, and how its clips were cut."""

    name: str
    embed_dim: int
    frames: int
    stride: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    family: str = ""
    # How the backbone pools its features into one embedding ("mean_tokens", "cls", "avgpool").
    # "" = not recorded (stores written before pooling was): the backbone's default, so it
    # matches any pooling of the same named backbone and checkpoint.
    pooling: str = ""
    # The autocast precision the clips were embedded at (fp32, bf16, fp16): features of two
    # precisions differ beyond rounding, so one store holds one. "" = not recorded (stores written
    # before it was): matches any precision, so those stores still open and resume.
    precision: str = ""

    # Fields that change what the features mean; a store refuses features that differ here.
    IDENTITY_FIELDS = ("name", "checkpoint_sha256", "embed_dim", "frames", "stride", "size", "mean", "std",
                       "pooling", "precision")
    UNRECORDED_MATCHES = ("pooling", "precision")  # identity fields an older store may lack: "" compares equal

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BackboneSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["mean"] = tuple(float(x) for x in known.get("mean", ()))
        known["std"] = tuple(float(x) for x in known.get("std", ()))
        return cls(**known)

    def differences(self, other: "BackboneSpec", fields: Sequence[str] | None = None) -> list[str]:
        """Human-readable list of identity fields (or of ``fields``) where ``other`` differs from ``self``."""
        diffs = []
        for key in fields or self.IDENTITY_FIELDS:
            a, b = getattr(self, key), getattr(other, key)
            if isinstance(a, tuple):
                same = len(a) == len(b) and all(abs(x - y) < 1e-9 for x, y in zip(a, b))
            elif key in self.UNRECORDED_MATCHES and (a == "" or b == ""):
                same = True
            else:
                same = a == b
            if not same:
                diffs.append(f"{key}: store has {a!r}, got {b!r}")
        return diffs


@dataclass(frozen=True)
class VideoEntry:
    """One input video: its path (as given), class index (-1 unlabelled) and split name.

    A multi-label video (manifest label ``a;b;c``) also lists all its classes in ``classes``
    (``label`` is then the first); ``targets`` holds its numeric manifest columns (regression
    targets, e.g. LVU's year) by column name.
    """

    path: str
    label: int = -1
    split: str = ""
    classes: tuple[int, ...] = ()
    targets: tuple[tuple[str, float], ...] = ()
