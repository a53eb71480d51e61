"""Conv backbones run channels-last once frozen, with the same embeddings as the plain layout."""

from __future__ import annotations

import torch

from vssl.extract.backbones import create_backbone
from vssl.extract.backbones.slowonly import SlowOnlyR50


def test_frozen_conv_backbones_are_channels_last_and_embed_the_same():
    torch.manual_seed(0)
    for name, fmt, shape in (("efficientnet-lite0", torch.channels_last, (2, 3, 2, 64, 64)),
                             ("slowonly-r50", torch.channels_last_3d, (1, 3, 2, 32, 32))):
        plain = create_backbone(name) if name != "slowonly-r50" else SlowOnlyR50(width=8)
        plain.eval()
        x = torch.randn(shape)
        with torch.inference_mode():
            want = plain(x)
        frozen = plain.freeze()
        convs = [m for m in frozen.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
        assert convs and all(c.weight.is_contiguous(memory_format=fmt) for c in convs), name
        with torch.inference_mode():
            got = frozen(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
