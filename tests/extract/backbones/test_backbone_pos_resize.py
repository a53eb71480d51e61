"""Every ViT family at another clip size / frame count than its checkpoint's: the position
tables are resized as documented (SCALE's trilinear; bicubic for the per-frame image ViT, as
transformers' ViT), against references built without vssl's resizing, with one log line; and
nothing is said (or changed) at the native grid."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from tests.backbone_helpers import hf_timesformer_to_svt, randomize_
from tests.extract.backbones.test_backbone_vits import _hf_vit_to_timm, _mae_st_reference
from vssl.extract.backbones import create_backbone
from vssl.extract.backbones.pos_embed import resize_factorised, resize_pos_table

transformers = pytest.importorskip("transformers")

DIM, DEPTH, HEADS, SIZE, NEW_SIZE = 64, 1, 1, 32, 48  # 2x2 patch grid as trained, 3x3 asked; vssl reads 64 / 64 = 1 head
RTOL = 1e-4
Reference = Callable[[torch.Tensor], torch.Tensor]


def _clips(frames: int, size: int) -> torch.Tensor:
    return torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(3))


def _bilinear(spatial: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """(1, old*old, D) -> (1, new*new, D), plain F.interpolate (no vssl code)."""
    D = spatial.shape[-1]
    grid = spatial.reshape(1, old, old, D).permute(0, 3, 1, 2)
    return F.interpolate(grid, size=(new, new), mode="bilinear").permute(0, 2, 3, 1).reshape(1, -1, D)


def _linear(temporal: torch.Tensor, new: int) -> torch.Tensor:
    """(1, t, D) -> (1, new, D), plain F.interpolate."""
    return F.interpolate(temporal.transpose(1, 2), size=new, mode="linear").transpose(1, 2)


# --------------------------------------------------------------- one checkpoint + reference per family


def _image_vit(tmp_path) -> tuple:
    cfg = dict(image_size=SIZE, patch_size=16, hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
               intermediate_size=128, layer_norm_eps=1e-6)
    ref = randomize_(transformers.ViTModel(transformers.ViTConfig(**cfg), add_pooling_layer=False))
    torch.save({"model": _hf_vit_to_timm(ref.state_dict(), DEPTH)}, tmp_path / "mae.pth")

    def reference(clips: torch.Tensor) -> torch.Tensor:  # transformers' own resize
        B, C, T, H, W = clips.shape
        frames = clips.transpose(1, 2).reshape(B * T, C, H, W)
        tokens = ref(pixel_values=frames, interpolate_pos_encoding=True).last_hidden_state
        return tokens[:, 1:].mean(dim=1).reshape(B, T, -1).mean(dim=1)

    return "image-vit", tmp_path / "mae.pth", (2, 2), reference, ("2x2", "3x3")


def _svt(tmp_path) -> tuple:
    cfg = dict(patch_size=16, hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
               intermediate_size=128)
    trained = randomize_(transformers.TimesformerModel(transformers.TimesformerConfig(image_size=SIZE, num_frames=3,
                                                                                      **cfg)))
    hf = trained.state_dict()
    torch.save({"teacher": {f"backbone.{k}": v for k, v in hf_timesformer_to_svt(hf, DEPTH).items()}},
               tmp_path / "svt.pth")
    # transformers' model built for the new clip, its tables resized by hand (bilinear + linear)
    ref = transformers.TimesformerModel(transformers.TimesformerConfig(image_size=NEW_SIZE, num_frames=5, **cfg))
    pos = hf["embeddings.position_embeddings"]
    hf["embeddings.position_embeddings"] = torch.cat([pos[:, :1], _bilinear(pos[:, 1:], 2, 3)], dim=1)
    hf["embeddings.time_embeddings"] = _linear(hf["embeddings.time_embeddings"], 5)
    ref.load_state_dict(hf)
    ref.eval()

    def reference(clips: torch.Tensor) -> torch.Tensor:
        return ref(pixel_values=clips.transpose(1, 2)).last_hidden_state[:, 0]

    return "svt", tmp_path / "svt.pth", (3, 5), reference, ("3x2x2", "5x3x3")


def _mae_st(tmp_path) -> tuple:
    from vssl.extract.backbones.base import InputSpec
    from vssl.extract.backbones.mae_st import MaeSTViT
    from vssl.extract.backbones.vit_layers import ViTShape

    shape = ViTShape(embed_dim=DIM, depth=DEPTH, num_heads=HEADS, mlp_hidden=128)
    ours = randomize_(MaeSTViT(shape, InputSpec(frames=4, size=SIZE), grid=2, t_grid=2)).state_dict()
    sd = {}  # mae_st's own layout: separate q/k/v
    for key, value in ours.items():
        if ".attn.qkv." in key:
            for n, part in zip("qkv", value.chunk(3)):
                sd[key.replace(".qkv.", f".{n}.")] = part
        else:
            sd[key] = value
    torch.save({"model_state": sd}, tmp_path / "mae_st.pyth")
    resized = sd | {"pos_embed_spatial": _bilinear(sd["pos_embed_spatial"], 2, 3),
                    "pos_embed_temporal": _linear(sd["pos_embed_temporal"], 4)}
    return "mae-st", tmp_path / "mae_st.pyth", (4, 8), lambda clips: _mae_st_reference(resized, clips, HEADS), \
        ("2x2x2", "4x3x3")


FAMILIES = {"image_vit": _image_vit, "timesformer": _svt, "mae_st": _mae_st}


def _build(name: str, path, frames: int, size: int, caplog) -> tuple:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vssl.extract"):
        model = create_backbone(name, path, frames=frames, size=size)
    lines = [r.getMessage() for r in caplog.records if r.name == "vssl.extract" and "position table" in r.getMessage()]
    return model, lines


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_resized_table_matches_reference_and_is_said_once(tmp_path, caplog, family):
    name, path, (native_frames, frames), reference, (old, new) = FAMILIES[family](tmp_path)
    model, lines = _build(name, path, frames, NEW_SIZE, caplog)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{family}: ") and f" {old} tokens" in lines[0] and f" to {new} " in lines[0]
    clips = _clips(frames, NEW_SIZE)
    with torch.no_grad():
        got, want = model(clips), reference(clips)
    assert ((got - want).abs().max() / want.abs().max()).item() <= RTOL

    _, lines = _build(name, path, native_frames, SIZE, caplog)
    assert lines == []


def test_factorised_resize_is_scales_trilinear_and_identity_at_native_grid():
    """Per factor (bilinear + linear) == SCALE's trilinear resize of the summed table; at the
    trained grid the very same tensors come back, so the native arithmetic is unchanged."""
    g = torch.Generator().manual_seed(0)
    spatial, temporal = torch.randn(1, 4 * 5, 8, generator=g), torch.randn(1, 3, 8, generator=g)
    full = lambda s, t, grid: (s.reshape(1, 1, -1, 8) + t.reshape(1, -1, 1, 8)).reshape(1, -1, 8)  # noqa: E731
    s2, t2 = resize_factorised(spatial, temporal, (3, 4, 5), (6, 7, 3))
    scale = resize_pos_table(full(spatial, temporal, None), (3, 4, 5), (6, 7, 3))
    assert torch.allclose(full(s2, t2, None), scale, atol=1e-5)
    same = resize_factorised(spatial, temporal, (3, 4, 5), (3, 4, 5))
    assert same[0] is spatial and same[1] is temporal
