"""Decode rate: decord sparse index access vs PyAV seek+decode vs PyAV sequential, same clips.

For each video, 16-frame clips at stride 4 from 8 random starts (the frames one `random:8`
view needs); each reader gets the same sorted frame list, one decoding thread (one core).
Accuracy: every frame is compared bit-for-bit with sequential PyAV decoding; "NO (w/n wrong)"
counts the frames that differ (or are missing) over all repeats.

    python benchmarks/bench_decode.py [VIDEO ...] [--no-memory] [--readers "decord get_batch,..."]
    # default videos: ../shared/data/videos/* plus a generated MPEG-4 AVI with B-frames

Prints a table: frames/s per reader and the ratio to PyAV seek, measured in one run; then
the peak memory of cutting `random:16,uniform:5x3` clips (16x4 @224) from synthetic 720p
videos of 10 s and 60 s (memory must not grow with the video's length).
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

FRAMES, STRIDE, CLIPS, REPEATS = 16, 4, 8, 5


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


def readers(path: Path, only: set[str] | None = None):
    """(name, open) pairs; opening (vssl's demux probe included) is inside the timed region.

    ``only`` keeps those readers (and ``pyav seek``, the base every ratio is taken against)."""
    for name, make in _all_readers(path):
        if only is None or name in only or name == "pyav seek":
            yield name, make


def _all_readers(path: Path):
    yield "pyav seek", lambda: PyAVReader(path, threads=1)
    yield "pyav sequential", lambda: PyAVReader(path, sequential=True, threads=1)
    yield "decord get_batch", lambda: RawDecord(path)  # decord as is, even where it is wrong
    if probe(path).random_access_safe:
        yield "decord via vssl", lambda: DecordReader(path, threads=1)


def main(paths: list[Path], only: set[str] | None = None) -> None:
    rows = []
    for path in paths:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            reference = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
            desc = f"{s.codec_context.name} {s.codec_context.width}x{s.codec_context.height}"
        makers = list(readers(path, only))
        best = {name: float("inf") for name, _ in makers}
        wrong = {name: 0 for name, _ in makers}  # frames not bit-identical to the reference, all repeats
        asked = {name: 0 for name, _ in makers}
        for r in range(REPEATS):  # readers interleaved, best of REPEATS: the machine is shared
            idx = wanted(len(reference), seed=r)
            for name, make in makers:
                t = time.perf_counter()
                with make() as reader:
                    got = dict(reader.frames(idx))
                best[name] = min(best[name], (time.perf_counter() - t) / len(idx))
                wrong[name] += sum(i not in got or not np.array_equal(got[i], reference[i]) for i in idx)
                asked[name] += len(idx)
        total = len(wanted(len(reference), seed=0))
        for name, _ in makers:
            exact = "yes" if not wrong[name] else f"NO ({wrong[name]}/{asked[name]} wrong)"
            rows.append((path.name, desc, len(reference), total, name, 1 / best[name],
                         best["pyav seek"] / best[name], exact))
    print(f"{decord_version()}, PyAV {av.__version__}")
    print(f"{'video':24} {'codec':20} {'frames':>6} {'read':>5} {'reader':18} {'frames/s':>9} {'vs seek':>8} exact")
    for v, d, n, k, name, fps, ratio, exact in rows:
        print(f"{v:24} {d:20} {n:6d} {k:5d} {name:18} {fps:9.1f} {ratio:8.2f} {exact}")


def decord_version() -> str:
    """Which distribution gave the ``decord`` module: decord itself or its maintained fork decord2."""
    from importlib import metadata

    for dist in ("decord2", "decord"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "decord not installed"


VIEWS = "random:16,uniform:5x3"


def measure_one(path: Path) -> None:
    """(In a fresh process.) Cut one video's clips; print seconds, peak RSS before and after."""
    import torch  # noqa: F401 - imported before the baseline so its libraries are not counted

    from vssl.extract.clips import cut_video
    from vssl.extract.samplers import parse_views

    views = parse_views(VIEWS, frames=FRAMES, stride=STRIDE, size=224)
    def status(key: str) -> int:  # kB
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
        return int(line.split()[1])

    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark (Linux)
    base = status("VmRSS:")
    t = time.perf_counter()
    vc = cut_video(path, views, path.name)
    sec = time.perf_counter() - t
    peak = status("VmHWM:")
    print(sec, base, peak, sum(c.shape[0] for c in vc.clips.values()))


def memory_table(tmp: Path, lengths=(250, 1500)) -> None:
    """Peak resident memory of cutting one video's clips, for 720p videos of different lengths:
    it must be set by the clips (here 31 clips of 16x224x224 = 75 MB of uint8), not the length."""
    import subprocess

    from tests.videos import write_video

    print()
    print(f"{VIEWS} (16x4 @224) from one synthetic 720p H.264 video, fresh process each")
    print(f"{'video':14} {'frames':>6} {'file MB':>8} {'all frames MB':>13} {'RSS growth MB':>13} {'clips':>5} "
          f"{'seconds':>8}")
    for n in lengths:
        path = write_video(tmp / f"long{n}.mp4", n, width=1280, height=720, pattern="ramp", gop=250,
                           options={"preset": "ultrafast", "crf": "30"})
        out = subprocess.run([sys.executable, __file__, "--measure-one", str(path)], capture_output=True,
                             text=True, check=True).stdout.split()
        sec, base, peak, clips = float(out[0]), int(out[1]), int(out[2]), int(out[3])
        print(f"{path.name:14} {n:6d} {path.stat().st_size / 2**20:8.1f} {n * 1280 * 720 * 3 / 2**20:13.0f} "
              f"{(peak - base) / 2**10:13.0f} {clips:5d} {sec:8.1f}")


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:2] == ["--measure-one"]:
        measure_one(Path(sys.argv[2]))
        sys.exit(0)

    import argparse

    from tests.videos import write_video

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--readers", help="comma-separated readers to time (pyav seek, the base, always is)")
    opts = parser.parse_args()
    only = {r.strip() for r in opts.readers.split(",")} if opts.readers else None
    with tempfile.TemporaryDirectory() as tmp:
        args = opts.videos
        if not args:  # the sample videos, plus the AVI layout decord's random access gets wrong
            args = sorted((REPO.parent / "shared" / "data" / "videos").iterdir())
            args.append(write_video(Path(tmp) / "xvid_bframes.avi", 150, width=320, height=240, codec="mpeg4",
                                    b_frames=2))
        main(args, only)
        if not opts.no_memory:
            memory_table(Path(tmp))
