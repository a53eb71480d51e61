"""Small test videos written with PyAV, with the frame number encoded in the pixels.

Other test files import this module, so it has a small function API:

- :func:`write_video` writes an MP4/AVI/MKV file whose frame ``n`` shows ``n`` as flat colour
  levels (pattern ``"number"``) or as a position ramp plus a coarse number (``"ramp"``);
- :func:`frame_number` reads the number back from an RGB frame (uint8 ``H x W x 3`` or a
  ``3 x H x W`` array in [0, 255]), robust to crops, resizes and lossy coding;
- :func:`write_broken` makes the bad inputs a real collection holds (truncated, zero-frame,
  text named ``.mp4``).

Encoding ("number"): ``n`` in base 8, digits in R (high), G (middle), B (low), each digit
``d`` drawn as level ``32*d + 16``; a flat frame survives chroma subsampling, limited-range
YUV and lossy coding within ~6 levels, far below the ±16 the reader tolerates. Up to 512
frames. Grayscale videos (pattern ``"gray"``) carry ``n % 8`` as the grey level only.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

BASE = 8
STEP = 256 // BASE
MAX_FRAMES = BASE ** 3


def number_frame(n: int, height: int, width: int) -> np.ndarray:
    """A flat RGB frame showing ``n`` (see module docstring)."""
    if not 0 <= n < MAX_FRAMES:
        raise ValueError(f"frame number {n} outside [0, {MAX_FRAMES})")
    digits = (n // BASE ** 2, (n // BASE) % BASE, n % BASE)
    frame = np.empty((height, width, 3), np.uint8)
    for c, d in enumerate(digits):
        frame[..., c] = STEP * d + STEP // 2
    return frame


def gray_frame(n: int, height: int, width: int) -> np.ndarray:
    """A flat grey frame showing ``n % 8`` (read back with ``frame_number(..) % 8``)."""
    return np.full((height, width, 3), STEP * (n % BASE) + STEP // 2, np.uint8)


def ramp_frame(n: int, height: int, width: int) -> np.ndarray:
    """R rises with x, G with y (0..255 over the frame), B shows ``n % 8`` as a level.

    Lets a test find which part of the frame a crop came from and whether it was flipped.
    """
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = np.round(np.linspace(0, 255, width))[None, :]
    frame[..., 1] = np.round(np.linspace(0, 255, height))[:, None]
    frame[..., 2] = STEP * (n % BASE) + STEP // 2
    return frame


def frame_number(frame) -> int:
    """Read back the number of a ``"number"`` frame; accepts HxWx3 or 3xHxW (numpy or torch)."""
    a = np.asarray(frame, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"expected one frame with 3 dims, got shape {a.shape}")
    means = a.mean(axis=(1, 2)) if a.shape[0] == 3 and a.shape[-1] != 3 else a.mean(axis=(0, 1))
    digits = [int(np.clip(np.round((m - STEP // 2) / STEP), 0, BASE - 1)) for m in means]
    return digits[0] * BASE ** 2 + digits[1] * BASE + digits[2]


def write_video(
    path: str | Path,
    num_frames: int,
    *,
    width: int = 64,
    height: int = 48,
    fps: float = 25,
    codec: str = "libx264",
    pix_fmt: str | None = None,
    pattern: str = "number",
    b_frames: int | None = None,
    gop: int = 12,
    options: dict[str, str] | None = None,
    pts: Sequence[int] | None = None,
) -> Path:
    """Write a video of ``num_frames`` frames and return its path.

    ``codec`` ``"mpeg4"`` with ``b_frames=2`` in an ``.avi`` gives MPEG-4 ASP with B-frames
    (the layout on which decord's random access is off by frames). ``pts`` (in units of
    ``1/fps``... i.e. frame ticks of a 1/1000 s time base when given) makes a
    variable-frame-rate file. ``pix_fmt`` defaults to yuv420p (gray for ``"gray"`` codecs).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make = {"number": number_frame, "ramp": ramp_frame, "gray": gray_frame}[pattern]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt or "yuv420p"
        opts = {"crf": "4"} if codec == "libx264" else ({"qmin": "1", "qmax": "2"} if codec == "mpeg4" else {})
        opts.update(options or {})
        stream.options = opts
        stream.codec_context.gop_size = gop
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for n in range(num_frames):
            frame = av.VideoFrame.from_ndarray(make(n, height, width), format="rgb24")
            if pts is not None:
                frame.pts = int(pts[n])
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_broken(path: str | Path, kind: str, source: str | Path | None = None) -> Path:
    """Write a bad input: ``"text"`` (text in a .mp4), ``"empty"`` (0 bytes), ``"zero_frames"``
    (a valid container with a video stream and no frames), ``"truncated"`` (the first third of
    ``source`` or of a fresh video), ``"garbage"`` (random bytes)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "text":
        path.write_text("this is not a video\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "zero_frames":
        # AVI keeps the stream header of an empty file (MP4 drops the track), whatever the suffix.
        with av.open(str(path), "w", format="avi") as container:
            stream = container.add_stream("mpeg4", rate=25)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            container.start_encoding()
    elif kind == "truncated":
        if source is None:
            source = write_video(path.with_suffix(".full" + path.suffix), 60)
        data = Path(source).read_bytes()
        path.write_bytes(data[: len(data) // 3])
    else:
        raise ValueError(f"unknown broken kind {kind!r}")
    return path


def write_class_folder(root: str | Path, frames: dict[str, int]) -> Path:
    """A class-per-subfolder input of `vssl extract`: ``{relative path: frame count}`` readable videos plus
    one broken file (``b/bad.mp4``, text), the mix a real collection holds."""
    root = Path(root)
    for name, count in frames.items():
        write_video(root / name, count)
    write_broken(root / "b" / "bad.mp4", "text")
    return root
