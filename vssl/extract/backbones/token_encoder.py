"""Transformer families whose tokens and intermediate blocks can be read (token views, ``--layers``).

A ViT family computes its features in one pass: embed the clip into tokens on a (T, H, W) grid, run
the blocks, finish (the final norm where its reference applies one, CLS or registers dropped or
kept for pooling). :class:`TokenEncoder` asks each family for that pass as :meth:`~TokenEncoder.encode`,
which finishes the output of each of the last ``layers`` blocks the same way, and derives from it
what every family needs alike: ``forward_features`` (the last block's), ``token_grid`` (the patch
tokens on their grid) and ``forward_tokens`` (an embedding and a grid per block, one encoder pass).

Intermediate blocks go through the same finish, pooling and head as the last one: the rule of
DINOv2's ``get_intermediate_layers(norm=True)`` and of V-JEPA's ``out_layers``, which both apply the
final norm to every block they return. Each family's module says what that finish is.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn

from vssl.errors import VsslError

from .base import Backbone
from .pooling import pool

Grid = tuple[int, int, int]


def last_block_outputs(x: torch.Tensor, blocks: Iterable[nn.Module], keep: int,
                       run: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Run ``x`` through ``blocks`` and return the outputs of the last ``keep`` of them, the last last.

    ``run(block, x)`` calls a block that takes more than its input (rotary tables, a frame count).
    """
    blocks = list(blocks)
    outputs = []
    for i, block in enumerate(blocks):
        x = run(block, x) if run is not None else block(x)
        if i >= len(blocks) - keep:
            outputs.append(x)
    return outputs


class TokenEncoder(Backbone):
    """A :class:`~.base.Backbone` whose one pass (:meth:`encode`) can return several blocks' features."""

    def encode(self, x: torch.Tensor, layers: int = 1) -> list[torch.Tensor]:
        """``forward_features``' output for each of the last ``layers`` blocks (the last last), from one pass.

        Implementations record the token grid of ``x`` with :meth:`_set_grid`: flattened tokens do
        not say whether they came from 8 x 14 x 14 or 2 x 28 x 28.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement encode")

    def depth(self) -> int:
        """Number of blocks, the most ``--layers`` can ask for."""
        return len(self.blocks)

    def patch_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """``forward_features``' output -> ``(B, N, D)`` patch tokens in (t, h, w) order, as the reference
        returns them. Default: the features are those tokens already."""
        return features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[-1]

    def token_grid(self, features: torch.Tensor) -> torch.Tensor:
        """The patch tokens of the last :meth:`encode` call's features, ``(B, T, H, W, D)``."""
        tokens = self.patch_tokens(features)
        grid = getattr(self, "_grid", None)
        if grid is None or math.prod(grid) != tokens.shape[1]:
            raise VsslError(f"backbone family {self.family!r}: {tokens.shape[1]} tokens are not the grid of its last "
                            "pass; call token_grid on the features of the last forward_features call")
        return tokens.unflatten(1, grid)

    def forward_tokens(self, x: torch.Tensor, layers: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One pass -> ``(embedding, token grid)`` for each of the last ``layers`` blocks, the last last."""
        if not 1 <= layers <= self.depth():
            raise VsslError(f"backbone family {self.family!r} has {self.depth()} blocks: --layers must be 1 to "
                            f"{self.depth()}, not {layers}")
        return [(self.forward_head(pool(features, self.pooling)), self.token_grid(features))
                for features in self.encode(self._in_memory_format(x), layers)]

    def _set_grid(self, grid: Iterable[int]) -> None:
        """Remember the (T, H, W) token grid of the clip being encoded (an image: T = 1)."""
        grid = tuple(int(n) for n in grid)
        self._grid: Grid = grid if len(grid) == 3 else (1, *grid)
