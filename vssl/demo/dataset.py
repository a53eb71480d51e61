"""A procedural labelled video dataset, drawn from a seed: the demo's data and the tests'.

Six classes. Four differ in what any short clip shows (a bouncing ball, a square sliding to
and fro, a spinning bar, a pulsing ring: local shape and motion). Two differ only in the
*order* of two events far apart in time: a red square flashes early and a blue one late
(``red_then_blue``), or the other way round (``blue_then_red``). Each event looks the same
in both classes, so a single clip, or any order-free pooling of clips, sees the same thing
for both: the case SCALE exists for, where clips must be related across the whole video.

Every video has its own length, frame size and frame rate, a textured background panned
by a random camera motion, and pixel noise; the distributions of all of these are shared
by every class, so nothing but the described content separates them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

from vssl.errors import VsslError

CLASSES = ("bouncing_ball", "sliding_square", "spinning_bar", "pulsing_ring", "red_then_blue", "blue_then_red")
LONG_RANGE_CLASSES = ("red_then_blue", "blue_then_red")
RED, BLUE = np.array([220, 30, 30], np.float32), np.array([30, 60, 220], np.float32)


@dataclass(frozen=True)
class VideoSpec:
    """What one generated video looks like (all drawn from the dataset seed)."""

    label: int
    frames: int
    height: int
    width: int
    fps: float
    seed: int


def _background(rng: np.random.Generator, height: int, width: int, frames: int) -> np.ndarray:
    """A smooth colour texture larger than the frame, panned by a constant camera velocity."""
    pad = 24
    coarse = rng.uniform(40, 140, size=(6, 6, 3)).astype(np.float32)
    big_h, big_w = height + 2 * pad, width + 2 * pad
    ys = np.linspace(0, 5, big_h)[:, None]
    xs = np.linspace(0, 5, big_w)[None, :]
    y0, x0 = np.floor(ys).astype(int).clip(0, 4), np.floor(xs).astype(int).clip(0, 4)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    tex = (coarse[y0, x0] * (1 - fy) * (1 - fx) + coarse[y0 + 1, x0] * fy * (1 - fx)
           + coarse[y0, x0 + 1] * (1 - fy) * fx + coarse[y0 + 1, x0 + 1] * fy * fx)
    vy, vx = rng.uniform(-pad, pad, size=2) / max(frames - 1, 1)
    out = np.empty((frames, height, width, 3), np.float32)
    for t in range(frames):
        oy, ox = int(round(pad + vy * t)), int(round(pad + vx * t))
        out[t] = tex[oy:oy + height, ox:ox + width]
    return out


def _disk_mask(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _draw(frames: np.ndarray, label: int, rng: np.random.Generator) -> None:
    """Paint the class content onto the background in place."""
    T, H, W, _ = frames.shape
    name = CLASSES[label]
    colour = rng.uniform(150, 255, size=3).astype(np.float32)
    s = min(H, W)
    phase, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.3)
    yy, xx = np.ogrid[:H, :W]
    for t in range(T):
        f = frames[t]
        if name == "bouncing_ball":
            cy = H * (0.2 + 0.6 * abs(np.sin(phase + speed * t)))
            f[_disk_mask(H, W, cy, W * 0.5, s * 0.12)] = colour
        elif name == "sliding_square":
            cx = W * (0.5 + 0.3 * np.sin(phase + speed * t))
            half = s * 0.12
            f[int(H * 0.5 - half):int(H * 0.5 + half), int(cx - half):int(cx + half)] = colour
        elif name == "spinning_bar":
            angle = phase + 2 * speed * t
            dy, dx = yy - H / 2, xx - W / 2
            along = dx * np.cos(angle) + dy * np.sin(angle)
            across = -dx * np.sin(angle) + dy * np.cos(angle)
            f[(np.abs(along) < s * 0.35) & (np.abs(across) < s * 0.05)] = colour
        elif name == "pulsing_ring":
            r = s * (0.15 + 0.12 * np.sin(phase + speed * t))
            ring = _disk_mask(H, W, H / 2, W / 2, r + s * 0.04) & ~_disk_mask(H, W, H / 2, W / 2, r)
            f[ring] = colour
    if name in LONG_RANGE_CLASSES:
        first, second = (RED, BLUE) if name == "red_then_blue" else (BLUE, RED)
        length = max(2, int(round(T * rng.uniform(0.18, 0.25))))
        for colour_, lo, hi in ((first, 0.05, 0.25), (second, 0.6, 0.8)):
            start = int(T * rng.uniform(lo, hi))
            half = s * rng.uniform(0.15, 0.22)
            cy, cx = rng.uniform(half, H - half), rng.uniform(half, W - half)
            frames[start:start + length, int(cy - half):int(cy + half), int(cx - half):int(cx + half)] = colour_


def render_video(spec: VideoSpec) -> np.ndarray:
    """The frames of ``spec`` as uint8 [T, H, W, 3]."""
    rng = np.random.default_rng(spec.seed)
    frames = _background(rng, spec.height, spec.width, spec.frames)
    _draw(frames, spec.label, rng)
    frames += rng.normal(0, 6, size=frames.shape).astype(np.float32)
    return np.clip(frames, 0, 255).astype(np.uint8)


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """H.264 (yuv420p, so even sizes) with PyAV, nearly lossless."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def sample_specs(num_videos: int, seed: int = 0, frames: tuple[int, int] = (48, 96),
                 sizes: tuple[int, int] = (64, 112), classes: Sequence[str] = CLASSES) -> list[VideoSpec]:
    """Balanced labels over ``classes``, each video with its own length, even frame size and rate."""
    rng = np.random.default_rng(seed)
    unknown = set(classes) - set(CLASSES)
    if unknown:
        raise VsslError(f"unknown demo classes {sorted(unknown)}; choose from {', '.join(CLASSES)}")
    labels = np.array([CLASSES.index(c) for c in classes])[np.arange(num_videos) % len(classes)]
    rng.shuffle(labels)
    specs = []
    for i, label in enumerate(labels):
        h, w = (int(rng.integers(sizes[0] // 2, sizes[1] // 2 + 1)) * 2 for _ in range(2))
        specs.append(VideoSpec(int(label), int(rng.integers(frames[0], frames[1] + 1)), h, w,
                               float(rng.choice([12.0, 15.0, 24.0, 25.0, 30.0])), seed * 1_000_003 + i))
    return specs


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """'train'/'test' per video, ``test_fraction`` of each class in test (seeded)."""
    rng = np.random.default_rng(seed + 1)
    splits = np.full(len(labels), "train", dtype=object)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        splits[idx[: int(round(len(idx) * test_fraction))]] = "test"
    return splits.astype(str)


def generate_dataset(out_dir: str | Path, num_videos: int = 120, seed: int = 0, test_fraction: float = 0.3,
                     frames: tuple[int, int] = (48, 96), sizes: tuple[int, int] = (64, 112),
                     classes: Sequence[str] = CLASSES) -> Path:
    """Write ``num_videos`` videos in class sub-folders plus ``manifest.csv`` (path,label,split).

    Returns the manifest's path. Files already present are kept (re-running is cheap).
    """
    out_dir = Path(out_dir)
    specs = sample_specs(num_videos, seed, frames, sizes, classes)
    splits = stratified_split(np.array([s.label for s in specs]), test_fraction, seed)
    rows = []
    for i, (spec, split) in enumerate(zip(specs, splits)):
        rel = Path(CLASSES[spec.label]) / f"{CLASSES[spec.label]}_{i:04d}.mp4"
        path = out_dir / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".partial.mp4")
            write_mp4(tmp, render_video(spec), spec.fps)
            tmp.replace(path)
        rows.append((rel.as_posix(), CLASSES[spec.label], split))
    manifest = out_dir / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return manifest
