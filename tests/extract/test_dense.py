"""dense:S views: placement on real frame times, bounded memory on long videos, the store's guarantees.

Placement is checked against times computed by hand from the timestamps a test wrote; the store
runs (kill and resume, shards, torchrun, verify, info, HDF5) against an uninterrupted single run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

from tests.videos import write_video
from vssl.errors import VsslError
from vssl.extract import clips as clips_module
from vssl.extract.decode import FrameIndexError, VideoInfo, VideoReader, open_video
from vssl.extract.embedding import Batcher
from vssl.extract.pipeline import extract
from vssl.extract.samplers import VideoGeometry, parse_view, sample_clips
from vssl.features_store import (STATUS_DONE, FeatureStore, export_hdf5, import_hdf5, store_summary,
                                 verify_store)

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]
KW = dict(frames=4, stride=2, size=32)  # clips of 4 frames 2 apart, 32 px: fast on CPU


def dense(text: str = "dense:1.0", **kw):
    return parse_view(text, **{**KW, **kw})[1]


# ---------------------------------------------------------------- placement


def test_one_clip_every_s_seconds_from_start_to_end():
    spec = dense("dense:1.0")
    assert spec.num_clips is None and not spec.fixed_count and spec.to_dict() == {
        "sampler": "dense", "frames": 4, "stride": 2, "size": 32, "seconds": 1.0}
    assert parse_view("dense:0.5", **KW)[0] == "dense0.5" and parse_view("dense:1.0", **KW)[0] == "dense1"
    # 75 frames at 25 fps = 3 s: starts 0, 1, 2 s -> frames 0, 25, 50; a 3-second clip has 3
    clips = sample_clips(spec, 75, 48, 64, "v", fps=25.0)
    assert [c.frames for c in clips] == [(0, 2, 4, 6), (25, 27, 29, 31), (50, 52, 54, 56)]
    # a 10-minute film at dense:1.0 has 600
    assert len(sample_clips(spec, 600 * 30, 48, 64, "v", fps=30.0)) == 600
    # 3.04 s: a fourth start at 3.0 s, past-the-end frames repeat the last one
    assert sample_clips(spec, 76, 48, 64, "v", fps=25.0)[-1].frames == (75, 75, 75, 75)
    # shorter than one clip: one clip, at the start
    short = sample_clips(spec, 3, 48, 64, "v", fps=25.0)
    assert len(short) == 1 and short[0].frames == (0, 2, 2, 2)
    # the centre square crop; boxes: t0 = first / count, t1 = (last + 1) / count on a constant rate
    t0, y0, x0, t1, y1, x1, flip = clips[1].box
    assert (y0, x0, y1, x1, flip) == (0.0, 8 / 64, 1.0, 56 / 64, 0.0)
    assert t0 == pytest.approx(25 / 75) and t1 == pytest.approx(32 / 75)


def test_variable_frame_rate_places_clips_by_presentation_time():
    # 20 frames at 10 fps (0-1.9 s), then 30 at 25 fps (2.0-3.16 s): the video lasts 3.2 s
    times = [i / 10 for i in range(20)] + [2 + i / 25 for i in range(30)]
    spec = dense("dense:0.5")
    clips = sample_clips(spec, 50, 48, 64, "v", fps=15.6, times=times)
    # frame on screen at each start: 0, 0.5, 1.0, 1.5 s -> 0, 5, 10, 15; 2.0, 2.5, 3.0 s -> 20, 32, 45
    assert [c.frames[0] for c in clips] == [0, 5, 10, 15, 20, 32, 45]
    duration = 2 + 29 / 25 + 1 / 25
    for c in clips:  # boxes in real time: t * duration is the clip's span in seconds
        assert c.box[0] * duration == pytest.approx(times[c.frames[0]])
        end = times[c.frames[-1] + 1] if c.frames[-1] + 1 < 50 else duration
        assert c.box[3] * duration == pytest.approx(end)
    # frame counts would put the 2.5 s clip at frame 25 (2.2 s): wrong on this file
    assert sample_clips(spec, 50, 48, 64, "v", fps=15.6)[5].frames[0] != 32


def test_time_base_picks_frames_by_seconds_on_real_times():
    # --fps 10 with stride 2: a clip's frames are 0.2 s apart whatever the file's rate
    times = [i / 50 for i in range(100)] + [2 + i / 20 for i in range(40)]  # 50 fps then 20 fps
    spec = dense("dense:1.0", fps=10)
    assert spec.to_dict()["fps"] == 10
    clips = sample_clips(spec, 140, 48, 64, "v", fps=35.0, times=times)
    assert len(clips) == 4  # 4.0 s
    assert clips[0].frames == (0, 10, 20, 30)  # 0, 0.2, 0.4, 0.6 s at 50 fps
    assert clips[2].frames == (100, 104, 108, 112)  # 2.0, 2.2, 2.4, 2.6 s at 20 fps


def test_spec_errors_are_one_line():
    for bad in ("dense:0", "dense:-1", "dense:abc", "dense:nan", "dense:"):
        with pytest.raises(VsslError):
            parse_view(bad, **KW)
    with pytest.raises(VsslError, match="unknown option"):
        parse_view("dense:1:crop=lin", **KW)
    with pytest.raises(VsslError, match="neither frame timestamps nor a frame rate"):
        dense().place(VideoGeometry(10, 48, 64, 0.0), "v")


def test_decoder_reports_the_timestamps_of_a_variable_rate_file(tmp_path):
    pts = [i * 100 for i in range(20)] + [2000 + i * 40 for i in range(30)]  # ms
    path = write_video(tmp_path / "vfr.mp4", 50, pts=pts, gop=5)
    for decoder, sequential in (("pyav", False), ("pyav", True)):
        with open_video(path, decoder, sequential=sequential) as reader:
            assert reader.info.num_frames == 50
            np.testing.assert_allclose(reader.info.times, np.array(pts) / 1000, atol=1e-3)
    plan = clips_module.plan({"d": dense("dense:0.5")}, reader.info, "vfr.mp4")["d"]
    assert [c.frames[0] for c in plan] == [0, 5, 10, 15, 20, 32, 45]


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """7 videos of 9..100 frames at 25 fps (0.36-4 s), one variable-rate."""
    root = tmp_path_factory.mktemp("dense_videos")
    for i, n in enumerate([100, 9, 60, 33, 75]):
        write_video(root / ("a" if i < 3 else "b") / f"v{i}.mp4", n)
    write_video(root / "b" / "w.avi", 40, codec="mpeg4", b_frames=2)
    write_video(root / "b" / "vfr.mp4", 50, pts=[i * 100 for i in range(20)] + [2000 + i * 40 for i in range(30)])
    return root


EXTRACT = dict(views="dense:0.5,uniform:2x1", chunk_videos=2, batch_size=5, frames=4, size=32, progress=False)


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    st = FeatureStore.open(path)
    out = {"status": st.video_status(), "num_frames": st.num_frames(), "paths": st.paths()}
    for v in st.view_names():
        rows = st.view(v).read(np.arange(st.num_videos))
        out[f"{v}/features"], out[f"{v}/boxes"], out[f"{v}/counts"] = rows.features, rows.boxes, rows.counts
        out[f"{v}/done"] = st.view(v).done()
    return out


def assert_same_store(a: Path, b: Path) -> None:
    """Same rows; features up to one float16 step (a batch's other clips change float32 sums)."""
    x, y = store_arrays(a), store_arrays(b)
    assert x.keys() == y.keys()
    for k in x:
        if k.endswith("/features"):
            np.testing.assert_allclose(x[k].astype(np.float32), y[k].astype(np.float32), rtol=2 ** -10, atol=1e-6,
                                       err_msg=k)
        else:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dense_ref") / "store"
    summary = extract(videos, out, **EXTRACT)
    assert summary.failed == 0
    return out


@pytest.mark.slow
def test_extracts_into_a_ragged_view_with_counts_boxes_verify_info(videos, reference):
    store = FeatureStore.open(reference)
    view = store.view("dense0.5")
    assert view.layout == "ragged" and store.view("uniform2x1").layout == "fixed"
    fps, frames = store.fps(), store.num_frames()
    by_name = {Path(p).name: i for i, p in enumerate(store.paths().tolist())}
    expected = {name: max(1, math.ceil(frames[i] / fps[i] / 0.5 - 1e-6)) for name, i in by_name.items()
                if name != "vfr.mp4"}
    expected["vfr.mp4"] = 7  # 3.2 s
    counts = view.counts()
    assert {name: int(counts[i]) for name, i in by_name.items()} == expected
    rows = view.read(np.arange(store.num_videos))
    v = by_name["v0.mp4"]  # 100 frames at 25 fps: clip j starts at frame 12.5 j, on screen: floor
    np.testing.assert_allclose(rows.boxes[v, :8, 0], np.floor(np.arange(8) * 12.5) / 100, atol=1e-6)
    w = by_name["vfr.mp4"]
    np.testing.assert_allclose(rows.boxes[w, :7, 0] * 3.2, [0, 0.5, 1.0, 1.5, 2.0, 2.48, 3.0], atol=1e-3)
    assert np.abs(rows.features[rows.mask].astype(np.float32)).sum(axis=1).min() > 0
    assert verify_store(store) == []
    info = store_summary(store)["groups"]["views/dense0.5"]
    assert info["layout"] == "ragged" and info["clips"] == sum(expected.values()) and info["done"] == 7
    assert view.spec["seconds"] == 0.5
    again = extract(videos, reference, **EXTRACT)
    assert again.processed == 0 and again.skipped_done == 7  # resume: nothing left
    with pytest.raises(VsslError, match="exists with"):  # the record is compared on resume
        extract(videos, reference, **{**EXTRACT, "views": "dense0.5=dense:0.25"})


@pytest.mark.slow
def test_hdf5_round_trip_of_a_dense_store(reference, tmp_path):
    export_hdf5(FeatureStore.open(reference), tmp_path / "s.h5")
    back = import_hdf5(tmp_path / "s.h5", tmp_path / "back")
    assert verify_store(back) == []
    assert_same_store(reference, tmp_path / "back")


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(videos, reference, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "extract_killer.py"), str(videos),
                           str(tmp_path / "killed"), EXTRACT["views"]], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    partial = FeatureStore.open(tmp_path / "killed").video_status()
    assert (partial == STATUS_DONE).sum() == 4 and (partial == 0).sum() == 3  # two chunks of two written
    assert verify_store(FeatureStore.open(tmp_path / "killed")) == []
    resumed = extract(videos, tmp_path / "killed", **EXTRACT)
    assert resumed.processed == 3 and resumed.skipped_done == 4
    assert_same_store(tmp_path / "killed", reference)


@pytest.mark.slow
def test_shards_write_disjoint_chunks_equal_to_one_run(videos, reference, tmp_path):
    done = [extract(videos, tmp_path / "s", shard=f"{i}/3", **EXTRACT).processed for i in range(3)]
    assert sum(done) == 7 and all(done)
    assert_same_store(tmp_path / "s", reference)


@pytest.mark.slow
def test_torchrun_ranks_write_the_single_process_store(videos, reference, tmp_path):
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not on PATH")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "vssl", "extract", str(videos),
           "--out", str(tmp_path / "s"), "--views", EXTRACT["views"], "--chunk-videos", "2", "--batch-size", "5",
           "--frames", "4", "--size", "32", "--quiet", "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["ranks"] == 2 and report["problems"] == [] and report["done"] == 7
    assert_same_store(tmp_path / "s", reference)


# ---------------------------------------------------------------- bounded memory


class LongVideo(VideoReader):
    """A long 'video' (``n`` frames at 25 fps) that counts how many of its frames are alive at once.

    ``fail_at``: raise FrameIndexError when that frame is reached (seeking went wrong mid-way).
    """

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.info = VideoInfo(n, 25.0, 24, 32, sequential=fail_at is None)
        self.fail_at, self.alive, self.peak = fail_at, [], 0

    def frames(self, indices):
        for i in indices:
            if self.fail_at is not None and i >= self.fail_at:
                raise FrameIndexError(f"frame {i} not where the index says")
            frame = np.full((24, 32, 3), (i * 7) % 256, np.uint8)
            self.alive = [r for r in self.alive if r() is not None] + [weakref.ref(frame)]
            self.peak = max(self.peak, len(self.alive))
            yield i, frame
            del frame


class Counter:
    """Peak number of built clips alive (weak references to crop_resize outputs) and queued to the backbone."""

    def __init__(self, monkeypatch) -> None:
        self.alive, self.peak_built, self.peak_queued = [], 0, 0
        crop_resize, add = clips_module.crop_resize, Batcher.add

        def counted_crop(*args, **kwargs):
            clip = crop_resize(*args, **kwargs)
            self.alive = [r for r in self.alive if r() is not None] + [weakref.ref(clip)]
            self.peak_built = max(self.peak_built, len(self.alive))
            return clip

        def counted_add(batcher, *args, **kwargs):
            self.peak_queued = max(self.peak_queued, batcher.queued + args[2].shape[0])
            return add(batcher, *args, **kwargs)

        monkeypatch.setattr(clips_module, "crop_resize", counted_crop)
        monkeypatch.setattr(Batcher, "add", counted_add)


def one_file(tmp_path: Path) -> Path:
    write_video(tmp_path / "v" / "a" / "film.mp4", 5)  # its frames come from the fake reader
    return tmp_path / "v"


@pytest.mark.slow
def test_a_long_video_never_holds_all_its_clips(tmp_path, monkeypatch):
    readers = []
    monkeypatch.setattr(clips_module, "open_video", lambda *a, **k: readers.append(LongVideo(5000)) or readers[-1])
    count = Counter(monkeypatch)
    summary = extract(one_file(tmp_path), tmp_path / "s", views="dense:0.5", batch_size=8, frames=4, stride=2,
                      size=16, progress=False)
    assert summary.done == 1 and summary.clips == 400  # 200 s at one clip every 0.5 s
    store = FeatureStore.open(tmp_path / "s")
    assert store.view("dense0.5").counts().tolist() == [400] and verify_store(store) == []
    # 400 clips cut and embedded; at most a part of them (plus a batch) alive at once
    assert count.peak_built <= clips_module.PART_CLIPS + 2
    assert count.peak_queued <= clips_module.PART_CLIPS + 8
    assert readers[0].peak <= 3 * 4 + 2  # decoded frames: those of overlapping clips only


@pytest.mark.slow
def test_a_reread_mid_stream_replaces_the_clips_sent_before(tmp_path, monkeypatch):
    # seeking fails at frame 3000 after parts were sent; the sequential read finds 4000 frames
    readers = iter([LongVideo(5000, fail_at=3000), LongVideo(4000)])
    monkeypatch.setattr(clips_module, "open_video", lambda *a, **k: next(readers))
    summary = extract(one_file(tmp_path), tmp_path / "s", views="dense:1.0", batch_size=8, frames=4, stride=2,
                      size=16, progress=False)
    assert summary.done == 1 and summary.clips == 160 and summary.failed == 0
    monkeypatch.setattr(clips_module, "open_video", lambda *a, **k: LongVideo(4000))
    extract(one_file(tmp_path / "ref"), tmp_path / "ref" / "s", views="dense:1.0", batch_size=8, frames=4, stride=2,
            size=16, progress=False)
    a, b = (FeatureStore.open(p).view("dense1").read([0]) for p in (tmp_path / "s", tmp_path / "ref" / "s"))
    assert a.counts.tolist() == b.counts.tolist() == [160]
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_allclose(a.features.astype(np.float32), b.features.astype(np.float32), rtol=2 ** -10)


def test_a_video_failing_mid_stream_fails_alone(tmp_path, monkeypatch):
    class Broken(LongVideo):
        def frames(self, indices):
            for i, frame in super().frames(indices):
                if i > 1000:
                    raise VsslError("decoding failed at frame 1001")
                yield i, frame

    write_video(tmp_path / "v" / "b" / "ok.mp4", 30)
    real = clips_module.open_video
    monkeypatch.setattr(clips_module, "open_video",
                        lambda path, *a, **k: Broken(3000) if "film" in str(path) else real(path, *a, **k))
    summary = extract(one_file(tmp_path), tmp_path / "s", views="dense:1.0", batch_size=8, frames=4, stride=2,
                      size=16, progress=False)
    assert summary.failed == 1 and summary.done == 1 and "frame 1001" in summary.failures[0][1]
    store = FeatureStore.open(tmp_path / "s")
    assert store.view("dense1").counts().tolist() == [0, 2] and verify_store(store) == []
