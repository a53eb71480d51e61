"""One identity rule: extraction, a SCALE run's export and its probe all ask the store the same question."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from vssl.aggregate.checkpoint import check_trained_on
from vssl.errors import StoreError
from vssl.features_store.synthetic import make_synthetic_store


def test_a_run_is_checked_against_the_whole_backbone_record(tmp_path):
    store = make_synthetic_store(tmp_path / "s", np.zeros((4, 2, 3), np.float32), [0, 1, 0, 1], ["train"] * 4)
    bb = store.backbone
    check_trained_on(store, {"backbone_spec": bb.to_dict()}, "run", fix="-")  # same record: accepted
    with pytest.raises(StoreError, match=r"run was made from features of another backbone.*frames.*; retrain"):
        check_trained_on(store, {"backbone_spec": replace(bb, frames=bb.frames + 1).to_dict()}, "run", fix="retrain")
    # runs of vssl 0.1 recorded the name and the checkpoint hash only: those are compared
    check_trained_on(store, {"backbone": bb.name, "backbone_sha256": bb.checkpoint_sha256}, "old", fix="-")
    with pytest.raises(StoreError, match="name: store has"):
        check_trained_on(store, {"backbone": "other", "backbone_sha256": bb.checkpoint_sha256}, "old", fix="-")


@pytest.mark.slow
def test_a_family_name_names_its_builtin_and_resumes_its_store(tmp_path, vssl_cli):
    """`image_vit` (the family, the module) is `image-vit`, `timesformer` is `svt`: the store records the
    built-in's name, so a store made under one spelling resumes under the other."""
    import torch

    from tests.backbone_helpers import randomize_
    from tests.videos import write_video
    from vssl.extract.backbones import InputSpec, get_backbone_entry
    from vssl.extract.backbones.image_vit import ImageViT
    from vssl.extract.backbones.vit_layers import ViTShape
    from vssl.extract.pipeline import extract
    from vssl.features_store import FeatureStore

    assert get_backbone_entry("timesformer").name == "svt" and get_backbone_entry("mae_st").name == "mae-st"
    shape = ViTShape(embed_dim=64, depth=1, num_heads=1, mlp_hidden=128)
    torch.save({"model": randomize_(ImageViT(shape, InputSpec(frames=2, size=32), grid=2)).state_dict()},
               tmp_path / "mae.pth")
    write_video(tmp_path / "v" / "a" / "0.mp4", 12)
    kw = dict(checkpoint=tmp_path / "mae.pth", views="uniform:1x1", frames=2, stride=2, size=32, device="cpu",
              progress=False)
    assert extract(tmp_path / "v", tmp_path / "s", backbone="image_vit", **kw).done == 1
    assert FeatureStore.open(tmp_path / "s").backbone.name == "image-vit"
    again = extract(tmp_path / "v", tmp_path / "s", backbone="image-vit", **kw)
    assert again.processed == 0 and again.skipped_done == 1
    listed = vssl_cli("backbones", "--json")
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["svt"]["aliases"] == ["timesformer"] and rows["slowonly-r50"]["aliases"] == []
