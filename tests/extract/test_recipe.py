"""`vssl extract --recipe scale`: time base, lin crops, SlowFast placement, --mean/--std, position
interpolation, the recipe's values and the refusal to mix recipes in one view (hand computations)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from tests.extract.test_extract import Recorder
from tests.videos import frame_number, write_video
from vssl.errors import StoreError
from vssl.extract import extract
from vssl.extract.config import ExtractConfig, recipe
from vssl.extract.crops import short_side_jitter_crop
from vssl.extract.samplers import parse_view, sample_clips
from vssl.features_store import FeatureStore

KW = dict(frames=4, stride=2, size=32, seed=0)


@pytest.mark.parametrize("file_fps,expected", [
    # 100 frames at 25 fps = 120 frames at 30 fps; span 7; centred start (120 - 7) // 2 = 56;
    # 30-fps indices 56, 58, 60, 62 -> floor(k * 25 / 30) = 46, 48, 50, 51
    (25.0, (46, 48, 50, 51)),
    # 100 frames at 60 fps = 50 at 30 fps; start (50 - 7) // 2 = 21; 21, 23, 25, 27 -> 2k
    (60.0, (42, 46, 50, 54)),
])
def test_time_base_picks_frames_by_time(file_fps, expected):
    _, spec = parse_view("uniform:1x1", **KW, fps=30)
    (clip,) = sample_clips(spec, 100, 48, 64, "v", fps=file_fps)
    assert clip.frames == expected
    assert clip.box[0] == expected[0] / 100 and clip.box[3] == (expected[-1] + 1) / 100
    _, own = parse_view("uniform:1x1", **KW)  # no --fps: the file's own frames, as before
    assert sample_clips(own, 100, 48, 64, "v", fps=file_fps)[0].frames == (46, 48, 50, 52)
    assert "fps" not in own.to_dict() and spec.to_dict()["fps"] == 30.0


class _Draws:
    """A generator stub that returns fixed draws and records the ranges asked for."""

    def __init__(self, uniform, integers):
        self.u, self.i, self.asked = list(uniform), list(integers), []

    def uniform(self, lo, hi):
        self.asked.append(("uniform", lo, hi))
        return self.u.pop(0)

    def integers(self, lo, hi):
        self.asked.append(("integers", lo, hi))
        return self.i.pop(0)


def test_lin_crop_by_hand():
    # short side 240 jittered to round(300.4) = 300: the frame scales to 300 x floor(320/240*300) = 400;
    # a 224 crop at y 10 of randint(0, 76), x 50 of randint(0, 176); back in decoded pixels (x 0.8):
    # y0 8, x0 40, side round(179.2) = 179
    rng = _Draws([300.4], [10, 50])
    assert short_side_jitter_crop(rng, 240, 320) == (8, 40, 179, 179)
    assert rng.asked == [("uniform", 256, 320), ("integers", 0, 76), ("integers", 0, 176)]
    _, spec = parse_view("random:50:crop=lin", **KW)
    clips = sample_clips(spec, 60, 240, 320, "v")
    for c in clips:
        y0, x0, h, w = c.crop
        assert abs(h - w) <= 1 and 224 * 240 / 320 - 1 <= h <= 224 * 240 / 256 + 1 and y0 + h <= 240 and x0 + w <= 320
        np.testing.assert_allclose(c.box[1:3], (y0 / 240, x0 / 320))
    assert 0 < sum(c.flip for c in clips) < 50  # flip 0.5
    assert spec.to_dict()["crop"] == "lin"
    _, aug = parse_view("random:2:crop=aug", **KW)
    assert aug.scale == (0.2, 0.766) and aug.ratio == (0.75, 4 / 3)


def test_slowfast_eval_placement_by_hand():
    # decoder_orig.get_start_end_idx (use_offset False): delta = n - stride*frames, start_i = delta*i/T;
    # temporal_sampling: floor(linspace(start, start + stride*frames - 1, frames))
    _, spec = parse_view("uniform:5x3:place=slowfast", frames=16, stride=4, size=32)
    n = 300
    clips = sample_clips(spec, n, 48, 64, "v")
    assert len(clips) == 15
    for i in range(5):
        start = (n - 64) * i / 5
        want = tuple(min(math.floor(start + j * 63 / 15 + 1e-6), n - 1) for j in range(16))
        assert all(c.frames == want for c in clips[3 * i:3 * i + 3]), i
    assert clips[0].frames[:6] == (0, 4, 8, 12, 16, 21)  # steps of 4.2, not 4
    assert spec.to_dict()["place"] == "slowfast"


def test_mean_std_reach_the_backbone_and_the_store(tmp_path):
    root = tmp_path / "v"
    write_video(root / "a" / "x.mp4", 20)
    model = Recorder()
    extract(root, tmp_path / "s", model=model, backbone="recorder", views="uniform:1x1", mean=(0.45,),
            std=(0.225,), progress=False)
    pixels = (model.clips() * 0.225 + 0.45) * 255  # undo SlowFast's normalisation, not the backbone's
    start = (20 - 10) // 2  # span (4 - 1) * 3 + 1 = 10
    assert [frame_number(pixels[0, :, t].numpy()) for t in range(4)] == [start + 3 * t for t in range(4)]
    bb = FeatureStore.open(tmp_path / "s").backbone
    assert list(bb.mean) == [0.45] * 3 and list(bb.std) == [0.225] * 3


def test_recipe_scale_values_and_flags_override():
    cfg = ExtractConfig.load(None, {}, base=recipe("scale"))
    assert (cfg.frames, cfg.stride, cfg.size, cfg.fps, cfg.mean, cfg.std, cfg.recipe) == \
        (16, 4, 224, 30.0, (0.45,) * 3, (0.225,) * 3, "scale")
    assert cfg.views == "random:16:crop=lin:place=slowfast,uniform:5x3:place=slowfast"
    over = ExtractConfig.load(None, {"fps": 25.0, "stride": 2, "std": (0.2,)}, base=recipe("scale"))
    assert (over.fps, over.stride, over.std, over.mean) == (25.0, 2, (0.2,) * 3, (0.45,) * 3)
    assert cfg.record()["recipe"] == "scale" and cfg.record()["fps"] == 30.0


def test_mixing_recipes_in_a_view_is_refused(tmp_path):
    root = tmp_path / "v"
    write_video(root / "a" / "x.mp4", 20)
    kw = dict(model=Recorder(), backbone="recorder", views="uniform:1x1", progress=False)
    extract(root, tmp_path / "s", **kw)
    with pytest.raises(StoreError) as e:
        extract(root, tmp_path / "s", config=ExtractConfig(recipe="scale"), **kw)
    assert "\n" not in str(e.value) and "recipe None (stored) vs 'scale' (now)" in str(e.value)
    extract(root, tmp_path / "s", **kw)  # the same (no) recipe resumes
    assert FeatureStore.open(tmp_path / "s").view("uniform1x1").record.get("recipe") is None


transformers = pytest.importorskip("transformers")


def test_videomae_position_table_interpolated_trilinearly_once(tmp_path, caplog):
    from vssl.extract.backbones import create_backbone

    cfg = dict(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=64, num_hidden_layers=1,
               num_attention_heads=2, intermediate_size=128, use_mean_pooling=False, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    hf = transformers.VideoMAEModel(transformers.VideoMAEConfig(**cfg)).eval()
    hf.save_pretrained(tmp_path / "hf")
    with caplog.at_level(logging.WARNING, logger="vssl.extract"):
        ours = create_backbone("videomae", tmp_path / "hf", frames=8, size=32)
    lines = [r.getMessage() for r in caplog.records if "interpolated trilinearly" in r.getMessage()]
    assert len(lines) == 1 and "2x2x2" in lines[0] and "4x2x2" in lines[0]
    # the reference: transformers' model for 8 frames with the 4-frame table interpolated by hand
    ref = transformers.VideoMAEModel(transformers.VideoMAEConfig(**{**cfg, "num_frames": 8})).eval()
    ref.load_state_dict(hf.state_dict(), strict=False)
    table = hf.embeddings.position_embeddings  # (1, 2*2*2, D), (t, h, w) order
    grid = table.reshape(1, 2, 2, 2, -1).permute(0, 4, 1, 2, 3)
    new = torch.nn.functional.interpolate(grid, size=(4, 2, 2), mode="trilinear")
    ref.embeddings.position_embeddings = new.permute(0, 2, 3, 4, 1).reshape(1, 16, -1)
    x = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(pixel_values=x.permute(0, 2, 1, 3, 4)).last_hidden_state.mean(1)
        got = ours(x)
    assert (got - want).abs().max() < 1e-4


def test_every_recipe_is_valid_and_its_views_parse():
    from vssl.extract.config import RECIPES
    from vssl.extract.samplers import parse_views

    for name, cfg in RECIPES.items():
        views = parse_views(cfg.views, frames=cfg.frames or 16, stride=cfg.stride or 4, size=cfg.size or 224)
        assert views, name
    ssv2 = parse_views(RECIPES["scale-ssv2"].views, frames=16, stride=2, size=224)
    assert ssv2["random16"].flip == 0.0 and ssv2["uniform2x3"].num_clips == 6 and RECIPES["scale-ssv2"].stride == 2
