"""ρBYOL's SlowOnly R50: pySlowFast and pytorchvideo files load and match a hand-written forward.

pytorchvideo itself cannot be the reference here: ``pytorchvideo.models`` imports torchvision
(``models/head.py``), which cannot be installed beside this torch. The checks are instead an
independent functional forward written from the SlowFast paper's Table 1 over the raw
pySlowFast state dict, the layer shapes the paper implies, and a second load path
(pytorchvideo's ``slow_r50`` names) that must give identical features.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.backbone_helpers import TOL, randomize_, rel_err
from vssl.errors import CheckpointError
from vssl.extract.backbones import create_backbone
from vssl.extract.backbones.slowonly import SlowOnlyR50

DEPTHS = (3, 4, 6, 3)


@pytest.fixture(scope="module")
def full_size() -> dict:
    return SlowOnlyR50().state_dict()


@pytest.fixture(scope="module")
def weights() -> dict:
    """A narrow (width 16) R50 keeps files and forwards small; the layout is the same."""
    return randomize_(SlowOnlyR50(width=16), std=0.1, seed=2).state_dict()


def _bn(x, sd, name):
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], False, 0.0, 1e-5)


def _reference_map(sd: dict, clips: torch.Tensor) -> torch.Tensor:
    """SlowOnly R50 from the paper's table with plain ops over pySlowFast names: the res5 map."""
    x = F.conv3d(clips, sd["s1.pathway0_stem.conv.weight"], stride=(1, 2, 2), padding=(0, 3, 3))
    x = F.relu(_bn(x, sd, "s1.pathway0_stem.bn"))
    x = F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))
    for stage, n in enumerate(DEPTHS, start=2):
        for i in range(n):
            p = f"s{stage}.pathway0_res{i}."
            s = 2 if (i == 0 and stage > 2) else 1
            ka = sd[p + "branch2.a.weight"].shape[2]
            y = F.relu(_bn(F.conv3d(x, sd[p + "branch2.a.weight"], padding=(ka // 2, 0, 0)), sd, p + "branch2.a_bn"))
            y = F.relu(_bn(F.conv3d(y, sd[p + "branch2.b.weight"], stride=(1, s, s), padding=(0, 1, 1)), sd,
                           p + "branch2.b_bn"))
            y = _bn(F.conv3d(y, sd[p + "branch2.c.weight"]), sd, p + "branch2.c_bn")
            short = _bn(F.conv3d(x, sd[p + "branch1.weight"], stride=(1, s, s)), sd, p + "branch1_bn") \
                if p + "branch1.weight" in sd else x
            x = F.relu(short + y)
    return x


def _reference(sd: dict, clips: torch.Tensor) -> torch.Tensor:
    """The clip embedding: the res5 map's global average."""
    return _reference_map(sd, clips).mean(dim=(2, 3, 4))


def test_shapes_follow_the_paper(full_size):
    weights = full_size
    # SlowFast Table 1, Slow pathway: temporal kernel 3 only in conv "a" of res4/res5, 2048-d res5
    assert weights["s1.pathway0_stem.conv.weight"].shape == (64, 3, 1, 7, 7)
    assert weights["s3.pathway0_res0.branch2.a.weight"].shape == (128, 256, 1, 1, 1)
    assert weights["s4.pathway0_res5.branch2.a.weight"].shape == (256, 1024, 3, 1, 1)
    assert weights["s5.pathway0_res2.branch2.b.weight"].shape == (512, 512, 1, 3, 3)
    assert weights["s5.pathway0_res0.branch1.weight"].shape == (2048, 1024, 1, 1, 1)
    assert not any(k.endswith(".bias") and ".bn" not in k and "_bn" not in k for k in weights)  # no conv bias
    params = sum(v.numel() for k, v in weights.items() if not k.endswith(("running_mean", "running_var", "tracked")))
    assert abs(params - 31.63e6) < 0.01e6  # the published 32.45M minus the 400-way head


@pytest.mark.slow
def test_pyslowfast_rhobyol_file_matches_reference(tmp_path, weights):
    ckpt = {"model_state": {f"backbone.{k}": v for k, v in weights.items()}
            | {f"backbone_hist.{k}": torch.zeros_like(v) for k, v in weights.items()}
            | {"head.projection.weight": torch.zeros(4, 2048), "queue_x": torch.zeros(4, 8),
               "knn_mem.knn_mem": torch.zeros(3)},
            "epoch": 200, "cfg": "TRAIN: ..."}
    torch.save(ckpt, tmp_path / "rho.pyth")
    model = create_backbone("slowonly-r50", tmp_path / "rho.pyth", frames=4, size=64)
    clips = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(clips)
        assert ours.shape == (2, 16 * 32)
        assert model.features(clips).shape == (2, 16 * 32, 4, 2, 2)  # /32 in space, full time
        assert (ours - _reference(weights, clips)).abs().max() <= TOL


@pytest.mark.slow
def test_momentum_encoder_alone_and_pytorchvideo_layout_give_the_same_features(tmp_path, weights):
    torch.save({"model_state": {f"backbone_hist.{k}": v for k, v in weights.items()}}, tmp_path / "hist.pyth")
    ptv = {}
    for k, v in weights.items():
        if k.startswith("s1.pathway0_stem."):
            ptv[k.replace("s1.pathway0_stem.conv", "blocks.0.conv").replace("s1.pathway0_stem.bn", "blocks.0.norm")] = v
            continue
        stage, block, rest = k.split(".", 2)
        i = block.removeprefix("pathway0_res")
        rest = (rest.replace("branch1_bn", "branch1_norm").replace("branch1.", "branch1_conv.")
                .replace("branch2.a_bn", "branch2.norm_a").replace("branch2.b_bn", "branch2.norm_b")
                .replace("branch2.c_bn", "branch2.norm_c").replace("branch2.a.", "branch2.conv_a.")
                .replace("branch2.b.", "branch2.conv_b.").replace("branch2.c.", "branch2.conv_c."))
        ptv[f"blocks.{int(stage[1:]) - 1}.res_blocks.{i}.{rest}"] = v
    ptv["blocks.5.proj.weight"] = torch.zeros(400, 2048)
    torch.save(ptv, tmp_path / "slow_r50.pyth")
    clips = torch.randn(1, 3, 4, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = create_backbone("slowonly-r50", tmp_path / "hist.pyth", frames=4, size=64)(clips)
        b = create_backbone("slowonly-r50-16x4", tmp_path / "slow_r50.pyth", frames=4, size=64)(clips)
    assert torch.equal(a, b)


def test_missing_block_is_reported(tmp_path, weights):
    sd = {k: v for k, v in weights.items() if not k.startswith("s5.pathway0_res2.")}
    torch.save({"model_state": sd}, tmp_path / "cut.pyth")
    with pytest.raises(CheckpointError, match=r"missing keys \(first: s5\.pathway0_res2\.branch2\.a\.weight"):
        create_backbone("slowonly-r50", tmp_path / "cut.pyth")


@pytest.mark.slow
def test_token_grid_is_the_res5_map_channels_last(tmp_path, weights):
    from vssl.errors import VsslError

    torch.save({"model_state": weights}, tmp_path / "slow.pyth")
    model = create_backbone("slowonly-r50", tmp_path / "slow.pyth", frames=4, size=64)
    clips = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        (embedding, grid), = model.forward_tokens(clips)
        expected = _reference_map(weights, clips)
    assert grid.shape == (2, 4, 2, 2, 16 * 32)  # (B, T, H, W, C): full time, /32 in space
    assert rel_err(grid, expected.permute(0, 2, 3, 4, 1)) <= TOL
    assert rel_err(embedding, expected.mean(dim=(2, 3, 4))) <= TOL
    with pytest.raises(VsslError, match="last block's output only"):
        model.forward_tokens(clips, layers=2)
