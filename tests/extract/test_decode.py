"""Decoding: frame-accurate by index on awkward files, trusted counts, bad files, bounded memory."""

from __future__ import annotations

import weakref

import av
import numpy as np
import pytest

from tests.videos import frame_number, write_broken, write_video
from vssl.extract.clips import cut_from_reader
from vssl.extract.decode import DecodeError, VideoInfo, VideoReader, open_video
from vssl.extract.samplers import parse_views

DECODERS = ["pyav", "decord", "auto"]

FILES = {  # name -> (write_video kwargs, suffix, frames)
    "h264_bframes": (dict(b_frames=2), ".mp4", 120),
    "avi_mpeg4_bframes": (dict(codec="mpeg4", b_frames=2), ".avi", 120),
    "avi_mpeg4": (dict(codec="mpeg4", b_frames=0), ".avi", 60),
    "vfr": (dict(pts=[int(1000 * t) for t in np.cumsum(np.r_[0, np.tile([0.01, 0.07, 0.03], 13)])]), ".mp4", 40),
    "odd_size": (dict(width=63, height=47, pix_fmt="yuv444p"), ".mp4", 30),
    "long_gop": (dict(gop=250), ".mp4", 300),
}


def sequential_numbers(path) -> list[int]:
    with av.open(str(path)) as c:
        return [frame_number(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dec")
    return {name: (write_video(d / f"{name}{suffix}", n, **kw), n) for name, (kw, suffix, n) in FILES.items()}


@pytest.mark.slow
@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("name", list(FILES))
def test_frames_by_index_are_exact(files, name, decoder):
    path, n = files[name]
    assert sequential_numbers(path) == list(range(n))  # the file is what the test thinks
    rng = np.random.default_rng(1)
    with open_video(path, decoder) as reader:
        assert reader.info.num_frames == n
        for _ in range(3):  # several sparse reads, incl. backwards jumps between calls
            idx = sorted(set(rng.integers(0, n, 12).tolist()) | {n - 1})
            got = [(i, frame_number(f)) for i, f in reader.frames(idx)]
            assert got == [(i, i) for i in idx]


def test_avi_with_b_frames_is_detected_and_read_sequentially(files):
    path, n = files["avi_mpeg4_bframes"]
    with open_video(path, "decord") as reader:
        assert reader.info.sequential
    import decord  # the failure the detection exists for: decord's own random access is off

    vr = decord.VideoReader(str(path))
    idx = list(range(5, n, 9))
    assert [frame_number(f) for f in vr.get_batch(idx).asnumpy()] != idx
    with open_video(files["h264_bframes"][0], "auto") as reader:
        assert not reader.info.sequential


def test_header_count_is_not_trusted(tmp_path):
    full = write_video(tmp_path / "full.avi", 60, codec="mpeg4", b_frames=0)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    with av.open(str(cut)) as c:
        assert c.streams.video[0].frames == 60  # the header still says 60
    decoded = sequential_numbers(cut)
    assert 10 < len(decoded) < 60
    for decoder in DECODERS:
        with open_video(cut, decoder) as reader:
            assert reader.info.num_frames == len(decoded)
            last = len(decoded) - 1  # (the torn last frame shows what concealment made of it)
            assert [frame_number(f) for _, f in reader.frames([0, last - 1, last])] == [0, last - 1, decoded[-1]]


def test_grayscale_decodes_to_rgb(tmp_path):
    path = write_video(tmp_path / "g.mkv", 20, codec="ffv1", pix_fmt="gray", pattern="gray")
    with open_video(path) as reader:
        frames = dict(reader.frames([3, 12]))
    assert frames[3].shape == (48, 64, 3) and (frames[3][..., 0] == frames[3][..., 2]).all()
    assert frame_number(frames[3]) % 8 == 3 and frame_number(frames[12]) % 8 == 12 % 8


@pytest.mark.parametrize("kind", ["text", "empty", "garbage", "zero_frames", "truncated"])
def test_bad_files_raise_decode_error(tmp_path, kind):
    path = write_broken(tmp_path / f"bad_{kind}.mp4", kind)
    for decoder in DECODERS:
        with pytest.raises(DecodeError) as e:
            with open_video(path, decoder) as reader:
                list(reader.frames([0]))
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_unknown_decoder(tmp_path):
    with pytest.raises(DecodeError, match="no such file"):
        open_video(tmp_path / "nope.mp4")
    path = write_video(tmp_path / "ok.mp4", 5)
    with pytest.raises(Exception, match="--decoder"):
        open_video(path, "opencv")


@pytest.mark.slow
def test_real_sample_videos_match_sequential_decoding(shared_videos):
    rng = np.random.default_rng(0)
    for path in sorted(shared_videos.iterdir()):
        with av.open(str(path)) as c:
            reference = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        for decoder in DECODERS:
            with open_video(path, decoder) as reader:
                assert reader.info.num_frames == len(reference), (path.name, decoder)
                idx = sorted(set(rng.integers(0, len(reference), 10).tolist()))
                for i, frame in reader.frames(idx):
                    assert np.array_equal(frame, reference[i]), (path.name, decoder, i)


class _LongFakeVideo(VideoReader):
    """A 2,000-frame 'video' that tracks how many of its frames are alive at once."""

    def __init__(self) -> None:
        self.info = VideoInfo(2000, 25.0, 24, 32, sequential=True)
        self.alive: list = []
        self.peak = 0

    def frames(self, indices):
        for i in indices:
            frame = np.full((24, 32, 3), i % 256, np.uint8)
            self.alive.append(weakref.ref(frame))
            self.alive = [r for r in self.alive if r() is not None]
            self.peak = max(self.peak, len(self.alive))
            yield i, frame
            del frame


def test_clip_cutting_holds_only_overlapping_frames():
    views = parse_views("uniform:20x1,random:10", frames=8, stride=2, size=16, seed=0)
    reader = _LongFakeVideo()
    out = cut_from_reader(reader, views, "long")
    assert out.clips["uniform20x1"].shape == (20, 3, 8, 16, 16)
    # 30 clips x 8 frames are read; memory holds at most a few clips' frames at a time
    assert reader.peak <= 3 * 8 + 2
