"""Decode rate: decord sparse index access vs PyAV seek+decode vs PyAV sequential, same clips.

For each video, 16-frame clips at stride 4 from 8 random starts (the frames one `random:8`
view needs); each reader gets the same sorted frame list, one decoding thread (one core).
Accuracy: every frame is compared bit-for-bit with sequential PyAV decoding.

    python benchmarks/bench_decode.py [VIDEO ...]      # default: ../shared/data/videos/*

Prints a table: frames/s per reader and the ratio to PyAV seek, measured in one run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vssl.extract.decode import DecordReader, PyAVReader, probe  # noqa: E402

FRAMES, STRIDE, CLIPS, REPEATS = 16, 4, 8, 3


def wanted(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    span = (FRAMES - 1) * STRIDE + 1
    starts = rng.integers(0, max(n - span, 0) + 1, CLIPS)
    return sorted({min(s + j * STRIDE, n - 1) for s in starts for j in range(FRAMES)})


class RawDecord:
    """decord alone, as a user would call it: VideoReader + get_batch (16 frames per call)."""

    def __init__(self, path: Path) -> None:
        import decord

        self.vr = decord.VideoReader(str(path), num_threads=1)

    def frames(self, idx):
        for k in range(0, len(idx), 16):
            yield from zip(idx[k:k + 16], self.vr.get_batch(idx[k:k + 16]).asnumpy())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.vr = None


def readers(path: Path):
    """(name, open) pairs; opening (vssl's demux probe included) is inside the timed region."""
    yield "pyav seek", lambda: PyAVReader(path, threads=1)
    yield "pyav sequential", lambda: PyAVReader(path, sequential=True, threads=1)
    yield "decord get_batch", lambda: RawDecord(path)  # decord as is, even where it is wrong
    if probe(path).random_access_safe:
        yield "decord via vssl", lambda: DecordReader(path, threads=1)


def main(paths: list[Path]) -> None:
    rows = []
    for path in paths:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            reference = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
            desc = f"{s.codec_context.name} {s.codec_context.width}x{s.codec_context.height}"
        results = {}
        for name, make in readers(path):
            best, exact, total = float("inf"), True, 0
            for r in range(REPEATS):
                idx = wanted(len(reference), seed=r)
                t = time.perf_counter()
                with make() as reader:
                    got = list(reader.frames(idx))
                best = min(best, (time.perf_counter() - t) / len(idx))
                exact &= all(np.array_equal(f, reference[i]) for i, f in got)
                total = len(idx)
            results[name] = (1 / best, exact, total)
        base = results["pyav seek"][0]
        for name, (fps, exact, total) in results.items():
            rows.append((path.name, desc, len(reference), total, name, fps, fps / base, exact))
    print(f"{'video':24} {'codec':20} {'frames':>6} {'read':>5} {'reader':18} {'frames/s':>9} {'vs seek':>8} exact")
    for v, d, n, k, name, fps, ratio, exact in rows:
        print(f"{v:24} {d:20} {n:6d} {k:5d} {name:18} {fps:9.1f} {ratio:8.2f} {'yes' if exact else 'NO'}")


if __name__ == "__main__":
    import tempfile

    from tests.videos import write_video

    with tempfile.TemporaryDirectory() as tmp:
        args = [Path(a) for a in sys.argv[1:]]
        if not args:  # the sample videos, plus the AVI layout decord's random access gets wrong
            args = sorted((REPO.parent / "shared" / "data" / "videos").iterdir())
            args.append(write_video(Path(tmp) / "xvid_bframes.avi", 150, width=320, height=240, codec="mpeg4",
                                    b_frames=2))
        main(args)
