"""Samplers: spec parsing, clip positions, boxes (hand-computed), per-(seed, video) randomness."""

from __future__ import annotations

import numpy as np
import pytest

from vssl.errors import VsslError
from vssl.extract.samplers import clip_frames, parse_view, parse_views, random_resized_crop, sample_clips

KW = dict(frames=8, stride=3, size=32, seed=0)


def test_names_and_specs():
    views = parse_views("random:16,uniform:5x3,eval=uniform:2x3,uniform:4", **KW)
    assert list(views) == ["random16", "uniform5x3", "eval", "uniform4x1"]
    assert views["random16"].num_clips == 16 and views["uniform5x3"].num_clips == 15
    assert views["eval"].to_dict() == {"sampler": "uniform", "frames": 8, "stride": 3, "size": 32,
                                       "temporal": 2, "spatial": 3}
    name, spec = parse_view("random:4:scale=0.2-1:ratio=0.5-2:flip=0", **KW)
    assert name == "random4" and spec.scale == (0.2, 1.0) and spec.ratio == (0.5, 2.0) and spec.flip == 0.0


@pytest.mark.parametrize("bad", ["random", "random:0", "uniform:3x", "random:2x2", "uniform:2x2:flip=0",
                                 "random:4:scale=1-2", "random:4:flip=2", "foo:3", "random:4:size=3"])
def test_bad_specs_are_one_line_errors(bad):
    with pytest.raises(VsslError) as e:
        parse_views(bad, **KW)
    assert "\n" not in str(e.value)


def test_duplicate_names_refused():
    with pytest.raises(VsslError, match="NAME=SPEC|name one"):
        parse_views("random:4,random:4:flip=0", **KW)


def test_uniform_positions_and_boxes_by_hand():
    name, spec = parse_view("uniform:3x3", **KW)  # span (8-1)*3+1 = 22
    clips = sample_clips(spec, num_frames=100, height=48, width=64, video_key="v")
    assert len(clips) == 9
    # starts evenly over [0, 100-22=78]: 0, 39, 78; crops of side 48 at x = 0, 8, 16
    assert [c.frames[0] for c in clips[::3]] == [0, 39, 78]
    assert clips[3].frames == (39, 42, 45, 48, 51, 54, 57, 60)
    assert [c.crop for c in clips[:3]] == [(0, 0, 48, 48), (0, 8, 48, 48), (0, 16, 48, 48)]
    np.testing.assert_allclose(clips[4].box, (39 / 100, 0, 8 / 64, 61 / 100, 1, 56 / 64, 0))
    np.testing.assert_allclose(clips[8].box, (78 / 100, 0, 16 / 64, 1.0, 1, 1, 0))


def test_uniform_portrait_crops_along_height_and_centre_crop():
    _, spec = parse_view("uniform:1x3", **KW)
    clips = sample_clips(spec, 30, height=80, width=40, video_key="v")
    assert [c.crop for c in clips] == [(0, 0, 40, 40), (20, 0, 40, 40), (40, 0, 40, 40)]
    _, spec1 = parse_view("uniform:1x1", **KW)
    (c,) = sample_clips(spec1, 30, height=48, width=64, video_key="v")
    assert c.crop == (0, 8, 48, 48) and c.frames[0] == (30 - 22) // 2


def test_short_video_repeats_last_frame():
    _, spec = parse_view("uniform:2x1", **KW)
    clips = sample_clips(spec, num_frames=5, height=48, width=64, video_key="v")
    assert all(c.frames == (0, 3, 4, 4, 4, 4, 4, 4) for c in clips)
    assert clips[0].box[0] == 0 and clips[0].box[3] == 1.0  # (last 4 + 1) / 5
    assert clip_frames(0, spec, 1) == (0,) * 8


def test_random_is_a_function_of_seed_and_video():
    _, spec = parse_view("random:8", **KW)
    a = sample_clips(spec, 200, 48, 64, "cls/a.mp4")
    assert a == sample_clips(spec, 200, 48, 64, "cls/a.mp4")  # no global stream involved
    np.random.seed(123)
    assert a == sample_clips(spec, 200, 48, 64, "cls/a.mp4")
    assert a != sample_clips(spec, 200, 48, 64, "cls/b.mp4")
    _, other_seed = parse_view("random:8", **{**KW, "seed": 1})
    assert a != sample_clips(other_seed, 200, 48, 64, "cls/a.mp4")


def test_random_crops_respect_ranges_and_boxes():
    _, spec = parse_view("random:400:scale=0.2-0.6:ratio=0.5-2", **KW)
    H, W, N = 90, 160, 300
    clips = sample_clips(spec, N, H, W, "v")
    flips = 0
    for c in clips:
        y0, x0, h, w = c.crop
        assert 0 <= y0 and y0 + h <= H and 0 <= x0 and x0 + w <= W
        assert 0.2 - 0.03 <= h * w / (H * W) <= 0.6 + 0.03
        assert 0.5 * 0.9 <= w / h <= 2 * 1.1
        assert c.frames == tuple(c.frames[0] + 3 * j for j in range(8)) and c.frames[-1] < N
        np.testing.assert_allclose(c.box, (c.frames[0] / N, y0 / H, x0 / W, (c.frames[-1] + 1) / N,
                                           (y0 + h) / H, (x0 + w) / W, float(c.flip)))
        flips += c.flip
    assert 150 < flips < 250  # p = 0.5
    starts = [c.frames[0] for c in clips]
    assert min(starts) < 30 and max(starts) > N - 22 - 30  # spread over the whole video
    _, noflip = parse_view("random:50:flip=0", **KW)
    assert not any(c.flip for c in sample_clips(noflip, N, H, W, "v"))


def test_random_resized_crop_fallback_is_centred():
    class Never:  # a generator whose draws never fit: aspect 100 on a square frame
        def uniform(self, lo, hi):
            return hi

        def integers(self, lo, hi):
            raise AssertionError("not reached")

    y0, x0, h, w = random_resized_crop(Never(), 50, 50, scale=(1.0, 1.0), ratio=(100.0, 100.0))
    assert (h, w) == (1, 50) and y0 == 24 and x0 == 0
