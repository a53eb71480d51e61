"""Frozen conv backbones run channels-last with their BatchNorms folded, and embed as the plain model does."""

from __future__ import annotations

import pytest
import torch

from vssl.extract.backbones import create_backbone
from vssl.extract.backbones.slowonly import SlowOnlyR50


def _random_batchnorm_statistics(model: torch.nn.Module) -> None:
    """Running statistics and affine parameters far from (0, 1), so folding them is not a no-op."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


@pytest.mark.parametrize("name,fmt,shape", [("efficientnet-lite0", torch.channels_last, (2, 3, 2, 64, 64)),
                                            ("slowonly-r50", torch.channels_last_3d, (1, 3, 2, 32, 32))])
def test_frozen_conv_backbones_fold_batchnorm_run_channels_last_and_embed_the_same(name, fmt, shape):
    torch.manual_seed(0)
    plain = create_backbone(name) if name != "slowonly-r50" else SlowOnlyR50(width=8)
    if name == "slowonly-r50":
        _random_batchnorm_statistics(plain)  # the ImageNet weights already carry real statistics
    plain.eval()
    x = torch.randn(shape)
    with torch.inference_mode():
        want = plain(x)  # BatchNorm computed as BatchNorm, NCHW: the reference
    frozen = plain.freeze()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in frozen.modules()), name
    convs = [m for m in frozen.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs and all(c.weight.is_contiguous(memory_format=fmt) for c in convs), name
    with torch.inference_mode():
        got = frozen(x)
        again = frozen.freeze()(x)  # freezing twice changes nothing
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again, got)
