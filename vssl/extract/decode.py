"""Frame-accurate video decoding by frame index, in bounded memory.

A frame's index is its rank in presentation order among the frames the decoder actually
produces — never the container header's count, which lies on real files (the sample
``tree.avi`` claims 444 frames and decodes 68). Three readers share one interface
(:class:`VideoReader`: ``info`` + ``frames(indices)`` yielding ``(index, HxWx3 uint8)`` in
ascending order, one frame at a time, so memory never grows with the video's length):

- ``pyav`` *seek* mode: one demux pass (no decoding) lists the presentation timestamps of
  the non-empty video packets; frame ``i`` is the ``i``-th smallest. Reading seeks to the
  keyframe before a wanted frame and decodes forward, converting only wanted frames to
  RGB. Every decoded frame's timestamp is checked against the index; a frame that is not
  where the index says raises :class:`FrameIndexError` and the caller reopens the file in
  sequential mode.
- ``pyav`` *sequential* mode: decodes front to back (a counting pass first, so the count
  is what the decoder yields). Used where random access is unsafe: no or duplicate
  timestamps, and AVI files whose codec reorders frames (MPEG-4 ASP / Xvid with
  B-frames), on which index-based seeking — decord's in particular — lands frames off by
  several positions.
- ``decord``: ``VideoReader.get_batch`` in small batches. Only used when the PyAV probe
  says random access is safe and decord's frame count agrees with the packet index;
  otherwise the file is read with PyAV.

Which is the default (``auto``) is decided by ``benchmarks/bench_decode.py``; see
docs/PERFORMANCE.md.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from vssl.errors import VsslError

DECODERS = ("auto", "pyav", "decord")
#: the reader ``auto`` picks for random-access-safe files (evidence: benchmarks/bench_decode.py)
AUTO_DECODER = "pyav"
#: frames per decord ``get_batch`` call: bounds the memory of one call
DECORD_BATCH = 16


class DecodeError(VsslError):
    """The file cannot be decoded (not a video, corrupt, no frames); it is marked failed."""


class FrameIndexError(Exception):
    """Random access did not land where the packet index said; re-read sequentially."""


@dataclass(frozen=True)
class VideoInfo:
    """What samplers need to know about a video, from the decoder, not the header."""

    num_frames: int
    fps: float
    height: int
    width: int
    sequential: bool
    #: presentation time of each frame in seconds from the first one (None: the file has no usable
    #: timestamps; frame ``i`` is then taken to be at ``i / fps``). Variable-fps files have uneven steps.
    times: tuple[float, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class _Probe:
    """Result of the demux pass: presentation timestamps of frame packets, keyframe ranks."""

    pts: list[int]  # sorted, one per frame
    keyframes: list[int]  # frame indices of keyframes, sorted
    random_access_safe: bool
    fps: float
    height: int
    width: int
    time_base: float = 0.0  # seconds per pts unit (0: unknown)


def frame_times(pts: Sequence[int | None], time_base: float) -> tuple[float, ...] | None:
    """Seconds from the first frame of frames with presentation timestamps ``pts`` (in order).

    None when they cannot place frames in time: a timestamp or the time base missing, or not
    strictly increasing (frame ``i`` is then taken to be at ``i / fps`` by whoever needs times).
    """
    if not pts or time_base <= 0 or any(p is None for p in pts):
        return None
    if any(b <= a for a, b in zip(pts, pts[1:])):
        return None
    first = pts[0]
    return tuple((p - first) * time_base for p in pts)


class VideoReader(ABC):
    """Reads chosen frames of one video; use as a context manager."""

    info: VideoInfo

    @abstractmethod
    def frames(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame)`` for the sorted, unique ``indices``, in that order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_indices(indices: Sequence[int], count: int) -> list[int]:
    idx = [int(i) for i in indices]
    if any(b <= a for a, b in zip(idx, idx[1:])):
        raise ValueError("frame indices must be sorted and unique")
    if idx and (idx[0] < 0 or idx[-1] >= count):
        raise ValueError(f"frame index out of range [0, {count}): {idx[0]}..{idx[-1]}")
    return idx


def _open_container(path: str | Path):
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise DecodeError(f"{path}: cannot open as a video ({_short(exc)})") from None
    if not container.streams.video:
        container.close()
        raise DecodeError(f"{path}: no video stream")
    return container


def _short(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)  # FFmpeg errors: the reason without the path
    return " ".join(str(text).split())[:200] or type(exc).__name__


def _fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def probe(path: str | Path) -> _Probe:
    """Demux the video stream once (no decoding) and index its frame packets."""
    import av

    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        pts: list[int] = []
        key_pts: list[int] = []
        reordered = False
        missing = False
        last = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    missing = True
                    continue
                if last is not None and packet.pts < last:
                    reordered = True
                last = packet.pts
                pts.append(packet.pts)
                if packet.is_keyframe:
                    key_pts.append(packet.pts)
        except av.error.FFmpegError as exc:
            raise DecodeError(f"{path}: corrupt container ({_short(exc)})") from None
        ctx = stream.codec_context
        fmt = container.format.name or ""
        reorders = reordered or bool(getattr(ctx, "has_b_frames", 0))
        sorted_pts = sorted(pts)
        unique = len(set(sorted_pts)) == len(sorted_pts)
        # AVI has no real presentation timestamps: with B-frames its packet order is decode
        # order and seeking lands off by frames (decord's known failure), so read it in order.
        safe = not missing and unique and bool(sorted_pts) and not ("avi" in fmt and reorders)
        pos = {p: i for i, p in enumerate(sorted_pts)}
        keyframes = sorted(pos[p] for p in set(key_pts) if p in pos) if safe else []
        if safe and (not keyframes or keyframes[0] != 0):
            keyframes = [0] + keyframes  # the first frame is always reachable by decoding from the start
        time_base = float(stream.time_base) if stream.time_base else 0.0
        return _Probe(sorted_pts, keyframes, safe, _fps(stream), ctx.height, ctx.width, time_base)
    finally:
        container.close()


class PyAVReader(VideoReader):
    """PyAV reader, seek mode when random access is safe, else sequential (module docstring)."""

    def __init__(self, path: str | Path, *, sequential: bool | None = None, threads: int = 0,
                 probed: _Probe | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        pr = probed if probed is not None else probe(path)
        self._seek = pr.random_access_safe if sequential is None else (not sequential and pr.random_access_safe)
        self._pts = pr.pts
        self._pos = {p: i for i, p in enumerate(pr.pts)}
        self._keyframes = pr.keyframes
        if self._seek:
            count, times = len(pr.pts), frame_times(pr.pts, pr.time_base)
        else:
            count, times = self._count_decoded()
        if count == 0:
            raise DecodeError(f"{self.path}: no decodable frames")
        self.info = VideoInfo(count, pr.fps, pr.height, pr.width, sequential=not self._seek, times=times)

    def _open(self):
        container = _open_container(self.path)
        stream = container.streams.video[0]
        if self.threads != 1:
            stream.thread_type = "AUTO"
        if self.threads:
            stream.codec_context.thread_count = self.threads
        return container, stream

    def _count_decoded(self) -> tuple[int, tuple[float, ...] | None]:
        """Frames the decoder yields, and their presentation times (from the decoded frames' pts)."""
        import av

        container, stream = self._open()
        pts: list[int | None] = []
        time_base = float(stream.time_base) if stream.time_base else 0.0
        try:
            for frame in container.decode(stream):
                pts.append(frame.pts)
        except av.error.FFmpegError:
            pass  # a corrupt tail ends the video: the frames before it are its frames
        finally:
            container.close()
        return len(pts), frame_times(pts, time_base)

    def frames(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        idx = _check_indices(indices, self.info.num_frames)
        if not idx:
            return
        if self._seek:
            yield from self._frames_seek(idx)
        else:
            yield from self._frames_sequential(idx)

    def _frames_sequential(self, idx: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        import av

        container, stream = self._open()
        wanted = iter(idx)
        target = next(wanted)
        try:
            for n, frame in enumerate(container.decode(stream)):
                if n == target:
                    yield n, frame.to_ndarray(format="rgb24")
                    target = next(wanted, None)
                    if target is None:
                        return
        except av.error.FFmpegError as exc:
            raise DecodeError(f"{self.path}: decoding failed at frame {target} ({_short(exc)})") from None
        finally:
            container.close()
        raise FrameIndexError(f"{self.path}: frame {target} not produced by a second sequential pass")

    def _frames_seek(self, idx: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        import av

        container, stream = self._open()
        decoded = None  # iterator of the current decode run
        pos = -1  # index of the last frame the current run produced
        try:
            for target in idx:
                key = self._keyframes[bisect.bisect_right(self._keyframes, target) - 1]
                if decoded is None or target <= pos or key > pos:
                    # Jumping is cheaper than decoding forward past a keyframe.
                    container.seek(self._pts[key], stream=stream, backward=True, any_frame=False)
                    decoded = container.decode(stream)
                    pos = -1
                while pos < target:
                    frame = next(decoded, None)
                    if frame is None:
                        raise FrameIndexError(f"{self.path}: frame {target} not reached after seeking")
                    p = frame.pts
                    if p is None or p not in self._pos:
                        raise FrameIndexError(f"{self.path}: decoded a frame with unindexed pts {p}")
                    new = self._pos[p]
                    if pos == -1 and new > target:
                        raise FrameIndexError(f"{self.path}: seek for frame {target} landed at {new}")
                    pos = new
                    if pos == target:
                        yield target, frame.to_ndarray(format="rgb24")
                    elif pos > target:
                        raise FrameIndexError(f"{self.path}: frame {target} skipped (got {pos})")
        except av.error.FFmpegError as exc:
            raise DecodeError(f"{self.path}: decoding failed ({_short(exc)})") from None
        finally:
            container.close()


class DecordReader(VideoReader):
    """decord ``get_batch`` reader, for files the PyAV probe found random-access safe."""

    def __init__(self, path: str | Path, *, threads: int = 0, probed: _Probe | None = None) -> None:
        try:
            import decord
        except ImportError:
            raise VsslError("--decoder decord: decord is not installed (pip install decord2), "
                            "or use --decoder pyav") from None
        self.path = Path(path)
        pr = probed if probed is not None else probe(path)
        if not pr.random_access_safe:
            raise FrameIndexError(f"{path}: random access unsafe, use sequential PyAV decoding")
        try:
            self._vr = decord.VideoReader(str(path), num_threads=threads)
        except decord.DECORDError as exc:
            raise DecodeError(f"{path}: decord cannot open it ({_short(exc)})") from None
        count = len(self._vr)
        if count != len(pr.pts):
            raise FrameIndexError(f"{path}: decord counts {count} frames, the packet index {len(pr.pts)}")
        self.info = VideoInfo(count, pr.fps, pr.height, pr.width, sequential=False,
                              times=frame_times(pr.pts, pr.time_base))

    def frames(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        import decord

        idx = _check_indices(indices, self.info.num_frames)
        for start in range(0, len(idx), DECORD_BATCH):
            part = idx[start:start + DECORD_BATCH]
            try:
                batch = self._vr.get_batch(part).asnumpy()
            except decord.DECORDError as exc:
                raise DecodeError(f"{self.path}: decord failed ({_short(exc)})") from None
            yield from zip(part, batch)

    def close(self) -> None:
        self._vr = None


def open_video(path: str | Path, decoder: str = "auto", *, sequential: bool = False,
               threads: int = 0) -> VideoReader:
    """Open ``path`` with ``decoder`` (``auto``, ``pyav`` or ``decord``).

    Files where random access is unsafe are always read sequentially with PyAV, whatever
    ``decoder`` says; ``sequential=True`` forces that (the retry after a
    :class:`FrameIndexError`). Raises :class:`DecodeError` for files that are not videos.
    """
    if decoder not in DECODERS:
        raise VsslError(f"--decoder {decoder!r}: choose one of {', '.join(DECODERS)}")
    if not Path(path).is_file():
        raise DecodeError(f"{path}: no such file")
    pr = probe(path)
    name = AUTO_DECODER if decoder == "auto" else decoder
    if name == "decord" and not sequential and pr.random_access_safe:
        try:
            return DecordReader(path, threads=threads, probed=pr)
        except FrameIndexError:
            pass
    return PyAVReader(path, sequential=sequential or None, threads=threads, probed=pr)
