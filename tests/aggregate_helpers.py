"""Helpers for the stage-two tests."""

from __future__ import annotations

import torch


def assert_same_weights(want: dict, got: dict, width: int, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Two runs' model state dicts agree, except the attention key bias: softmax ignores it, so its
    gradient is rounding noise, which Adam scales up to lr-sized steps."""
    for name, p in want.items():
        q = got[name]
        if name.endswith("qkv.bias"):
            keep = torch.ones_like(p, dtype=torch.bool)
            keep[width:2 * width] = False
            p, q = p[keep], q[keep]
        torch.testing.assert_close(q, p, rtol=rtol, atol=atol, msg=name)
