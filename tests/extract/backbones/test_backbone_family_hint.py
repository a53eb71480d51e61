"""A file given to the wrong family names the family whose layout recogniser matches it, in one line."""

from __future__ import annotations

import pytest
import torch

from tests.backbone_helpers import randomize_
from vssl.errors import CheckpointError
from vssl.extract.backbones import InputSpec, create_backbone
from vssl.extract.backbones.checkpoints import guess_family
from vssl.extract.backbones.mae_st import MaeSTViT
from vssl.extract.backbones.vit_layers import ViTShape


def test_mae_st_file_given_to_videomae_names_mae_st(tmp_path):
    # mae_st's separate q/k/v fuse into VideoMAE's names, so the file passes the adapter and fails
    # only at the strict load: that error must still say which family the file is.
    shape = ViTShape(embed_dim=64, depth=1, num_heads=1, mlp_hidden=128)
    sd = randomize_(MaeSTViT(shape, InputSpec(frames=4, size=32), grid=2, t_grid=2)).state_dict()
    torch.save({"model_state": sd}, tmp_path / "mae_st.pyth")
    with pytest.raises(CheckpointError) as info:
        create_backbone("videomae", tmp_path / "mae_st.pyth", frames=4, size=32)
    msg = str(info.value)
    assert "use --backbone mae-st" in msg and "--key-map" not in msg and "\n" not in msg


def test_guess_prefers_the_refining_family_and_skips_the_requested_one():
    hub_dino = {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.ls1.gamma"}
    assert guess_family(hub_dino) == ("dinov2", "dinov2")  # image_vit matches too, dinov2 refines it
    assert guess_family(hub_dino, exclude="dinov2") is None  # the requested family's own file: no other hint
    assert guess_family({"unrelated.weight"}) is None
