"""A generated video set where *where* a thing is decides the class: the data token grids are for.

Four classes, one per quadrant of the frame: a small disk of a random colour wanders inside its
quadrant over a textured, drifting background with pixel noise. Every clip of every class shows the
same thing (one disk, the same sizes, speeds and colours), so a feature that averages over space —
one pooled vector per clip — keeps little of the class, while a token grid of 2 x 2 or finer keeps it.

    python benchmarks/where_videos.py OUT_DIR --per-class 30
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CLASSES = ("top_left", "top_right", "bottom_left", "bottom_right")


def where_frames(label: int, rng: np.random.Generator, frames: int = 48, size: int = 64) -> np.ndarray:
    """``[frames, size, size, 3]`` uint8: a disk wandering in quadrant ``label`` over a drifting texture."""
    coarse = rng.uniform(40, 160, size=(5, 5, 3))
    big = size * 2
    ys = np.linspace(0, 4, big)[:, None, None]
    xs = np.linspace(0, 4, big)[None, :, None]
    texture = coarse[ys.astype(int).clip(0, 3)[..., 0], xs.astype(int).clip(0, 3)[..., 0]]
    texture = texture + 20 * np.sin(ys * 3 + xs * 2)
    drift = rng.uniform(-0.5, 0.5, size=2)
    qy, qx = divmod(label, 2)
    centre = np.array([size * (0.25 + 0.5 * qy), size * (0.25 + 0.5 * qx)])
    phase, colour, radius = rng.uniform(0, 2 * np.pi, 2), rng.uniform(150, 255, 3), rng.uniform(5, 8)
    yy, xx = np.ogrid[:size, :size]
    out = np.empty((frames, size, size, 3), np.float32)
    for t in range(frames):
        oy, ox = (size // 2 + drift * t).astype(int).clip(0, size)
        frame = texture[oy:oy + size, ox:ox + size].copy()
        cy, cx = centre + size * 0.12 * np.sin(phase + 0.2 * t)
        frame[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = colour
        out[t] = frame + rng.normal(0, 6, frame.shape)
    return out.clip(0, 255).astype(np.uint8)


def write_mp4(path: Path, frames: np.ndarray, fps: int = 16) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_where_videos(out: Path, per_class: int, seed: int = 0) -> Path:
    """``out/<class>/<i>.mp4``, ``per_class`` videos of each class (a class-per-subfolder input of `vssl extract`)."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = out / name / f"{i:03d}.mp4"
            if not path.exists():
                write_mp4(path, where_frames(label, rng))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_where_videos(args.out, args.per_class, args.seed))
