"""``segment:TxS``: TSN-style frames, one per equal segment (hand-computed indices, crops, boxes, extraction)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.videos import write_video
from vssl.errors import VsslError
from vssl.extract.pipeline import extract
from vssl.extract.samplers import VIEW_KINDS, parse_view, parse_views, sample_clips
from vssl.features_store import FeatureStore, verify_store

KW = dict(frames=8, stride=3, size=32, seed=0)


def frames_of(spec_text: str, num_frames: int, key: str = "v", **kw) -> list[tuple[int, ...]]:
    _, spec = parse_view(spec_text, **{**KW, **kw})
    return [c.frames for c in sample_clips(spec, num_frames, 48, 64, key)]


def test_centres_of_eight_segments_of_a_100_frame_video():
    name, spec = parse_view("segment:1", **KW)
    assert name == "segment1x1" and spec.num_clips == 1 and VIEW_KINDS["segment"].fixed_count
    # segments of 12.5 frames; centres 6.25, 18.75, ... truncated
    (clip,) = sample_clips(spec, 100, 48, 64, "v")
    assert clip.frames == (6, 18, 31, 43, 56, 68, 81, 93)
    assert clip.crop == (0, 8, 48, 48)  # uniform's centre crop
    np.testing.assert_allclose(clip.box, (6 / 100, 0, 8 / 64, 94 / 100, 1, 56 / 64, 0))


def test_two_temporal_clips_are_offsets_quarter_and_three_quarters():
    # offsets (i + 0.5) / 2 of each 12.5-frame segment: 3.125, 15.625, ...; 9.375, 21.875, ...
    assert frames_of("segment:2", 100) == [(3, 15, 28, 40, 53, 65, 78, 90), (9, 21, 34, 46, 59, 71, 84, 96)]


def test_stride_does_not_apply_and_is_recorded_so():
    a, b = parse_view("segment:2x3", **KW)[1], parse_view("segment:2x3", **{**KW, "stride": 5, "seed": 7})[1]
    assert a.to_dict() == b.to_dict() == {"sampler": "segment", "frames": 8, "stride": None, "size": 32,
                                          "temporal": 2, "spatial": 3}
    assert sample_clips(a, 100, 48, 64, "v") == sample_clips(b, 100, 48, 64, "v")


def test_crops_are_uniforms():
    _, seg = parse_view("segment:2x3", **KW)
    _, uni = parse_view("uniform:2x3", **KW)
    for h, w in ((48, 64), (80, 40)):
        s, u = sample_clips(seg, 100, h, w, "v"), sample_clips(uni, 100, h, w, "v")
        assert [c.crop for c in s] == [c.crop for c in u]
    clips = sample_clips(seg, 100, 48, 64, "v")  # time-major: clip t * S + s
    assert [c.crop for c in clips[:3]] == [(0, 0, 48, 48), (0, 8, 48, 48), (0, 16, 48, 48)]
    assert clips[0].frames == clips[2].frames != clips[3].frames


def test_jitter_picks_inside_each_segment_reproducibly_per_seed_and_video():
    name, spec = parse_view("segment:4:jitter=1", **{**KW, "seed": 3})
    assert name == "segment4x1j" and spec.to_dict()["jitter"] is True and spec.to_dict()["seed"] == 3
    clips = frames_of("segment:4:jitter=1", 100, seed=3)
    bounds = [(0, 12), (12, 25), (25, 37), (37, 50), (50, 62), (62, 75), (75, 87), (87, 100)]  # floor(k*100/8)
    for frames in clips:
        assert all(lo <= f < hi for f, (lo, hi) in zip(frames, bounds)), frames
    assert len(set(clips)) > 1  # each clip draws its own frames
    assert clips == frames_of("segment:4:jitter=1", 100, seed=3)  # a function of (seed, video) only
    assert clips != frames_of("segment:4:jitter=1", 100, seed=4)
    assert clips != frames_of("segment:4:jitter=1", 100, key="other", seed=3)
    assert frames_of("segment:4", 100, seed=3) == frames_of("segment:4", 100, seed=4)  # no jitter: no seed


def test_short_video_repeats_frames():
    # 5 frames, 8 segments of 0.625: centres floor(5 (2k + 1) / 16)
    assert frames_of("segment:1", 5) == [(0, 0, 1, 2, 2, 3, 4, 4)]
    # jitter: the integer segments [floor(5k/8), floor(5(k+1)/8)) hold at most one frame (or none: the first)
    assert frames_of("segment:3:jitter=1", 5) == [(0, 0, 1, 1, 2, 3, 3, 4)] * 3
    assert frames_of("segment:2", 1) == [(0,) * 8] * 2


def test_time_base_maps_segment_picks_to_file_frames():
    _, spec = parse_view("segment:1", **KW, fps=30.0)
    # 100 frames at 25 fps -> 120 at 30: centres 7.5 (2k + 1) -> 7, 22, 37, ...; file frame floor(k * 25 / 30)
    (clip,) = sample_clips(spec, 100, 48, 64, "v", fps=25.0)
    assert clip.frames == (5, 18, 30, 43, 55, 68, 80, 93)
    assert spec.to_dict()["fps"] == 30.0


@pytest.mark.parametrize("bad", ["segment", "segment:0", "segment:2x", "segment:2x0", "segment:ax1",
                                 "segment:2:jitter=yes", "segment:2:place=slowfast", "segment:2:flip=0"])
def test_bad_segment_specs_are_one_line_errors(bad):
    with pytest.raises(VsslError) as e:
        parse_views(bad, **KW)
    assert "\n" not in str(e.value)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_extract_segment_view_end_to_end(tmp_path):
    lengths = (5, 40)
    for i, n in enumerate(lengths):
        write_video(tmp_path / "v" / "a" / f"{i}.mp4", n)
    summary = extract(tmp_path / "v", tmp_path / "s", views="segment:2x1", progress=False)
    assert summary.failed == 0 and summary.clips == 2 * len(lengths)
    store = FeatureStore.open(tmp_path / "s")
    view = store.view("segment2x1")
    frames = store.backbone.frames
    assert view.layout == "fixed" and view.num_clips == 2
    assert view.spec == {"sampler": "segment", "frames": frames, "stride": None, "size": store.backbone.size,
                         "temporal": 2, "spatial": 1}
    features, boxes = view.read(np.arange(len(lengths)))
    for v, n in enumerate(store.num_frames().tolist()):
        for i in range(2):  # first and last pick: floor(n (4k + 2i + 1) / (4 K)) at k = 0 and K - 1
            first, last = n * (2 * i + 1) // (4 * frames), n * (4 * (frames - 1) + 2 * i + 1) // (4 * frames)
            np.testing.assert_allclose(boxes[v, i, [0, 3]], (first / n, (last + 1) / n), rtol=1e-6)
    assert np.isfinite(features.astype(np.float32)).all() and verify_store(store) == []
    again = extract(tmp_path / "v", tmp_path / "s", views="segment:2x1", progress=False)
    assert again.processed == 0  # resume: the recorded spec (stride None) compares equal
