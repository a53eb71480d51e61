"""How features before pooling become one embedding, in one table.

Every built-in family names its pooling (``Backbone.pooling``, copied into its registry entry
and into the feature store's backbone record), so two stores agree on what an embedding means
only if they agree on this name. Norms that a checkpoint applies before pooling belong to
``forward_features``; those after pooling to ``forward_head``.
"""

from __future__ import annotations

from typing import Callable

import torch

from vssl.errors import VsslError

POOLINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    # (B, N, D) tokens -> their mean (VideoMAE, V-JEPA, mae_st and MAE-style image ViTs: patch tokens only)
    "mean_tokens": lambda x: x.mean(dim=1),
    # (B, N, D) tokens with the CLS token first -> the CLS token (TimeSformer/SVT)
    "cls": lambda x: x[:, 0],
    # (B, 1 + P, D) a learned probe's attention over the tokens, first, then the tokens -> the probe's token
    # (SigLIP's MAP head: the probe's parameters keep its attention in forward_features, its LayerNorm +
    # MLP residual in forward_head)
    "map": lambda x: x[:, 0],
    # (B, C, *grid) feature map -> global average (ResNets, EfficientNet, tiny)
    "avgpool": lambda x: x.mean(dim=tuple(range(2, x.dim()))),
}


def pool(features: torch.Tensor, how: str) -> torch.Tensor:
    """Apply the pooling named ``how``."""
    try:
        return POOLINGS[how](features)
    except KeyError:
        raise VsslError(f"unknown pooling {how!r}; known: {', '.join(POOLINGS)}") from None
