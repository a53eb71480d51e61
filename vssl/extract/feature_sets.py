"""What one run stores per sampler view: the pooled embedding, and with ``--tokens``/``--layers`` more views
cut from the SAME clips in the same encoder pass.

A sampler view ``v`` (``--views``) gives the stored view ``v`` (the last block's pooled embedding, as
always). ``--tokens SPEC`` adds ``v.tokens<T'>x<H'>x<W'>`` (the last block's patch tokens pooled to that
grid, :mod:`vssl.extract.tokens`); ``--layers N`` adds, for the blocks at depth ``-k`` (k = 2..N),
``v.layer-<k>`` and, with ``--tokens``, ``v.layer-<k>.tokens...`` (DINOv2's linear evaluation reads the
last 4 blocks). Each stored view is a :class:`FeatureSet`; the batcher computes each distinct
``(depth, cells)`` output once per batch, whatever number of sampler views share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from vssl.errors import VsslError

from .backbones import Backbone
from .samplers import SamplerSpec
from .tokens import Grid, TokenGrid, layer_view_name, pool_tokens, token_view_name

#: what the batcher computes: (depth, pooled token cells or None for the pooled embedding)
OutputKey = tuple[int, Grid | None]


@dataclass(frozen=True)
class EncoderGrid:
    """The encoder's token grid at its clip size and the width of one token.

    A token's width is the encoder's own, not always its embedding's: CLIP's embedding is the projection of
    its class token (e.g. 512) while its patch tokens keep the transformer's width (768), and a clip of
    ``efficientnet-lite0-frames`` embeds as its 8 frames' 1280-wide vectors concatenated while each token
    of its map is 1280 wide. A token view's clips are ``(T'·H'·W', width)``.
    """

    cells: Grid
    width: int


@dataclass(frozen=True)
class FeatureSet:
    """One stored view: the clips of sampler view ``view`` through the block at depth ``-depth``, as the
    pooled embedding (``cells`` None) or as tokens pooled to ``cells``."""

    name: str
    view: str
    depth: int = 1
    cells: Grid | None = None
    tokens: str | None = None  # the --tokens spec as given (recorded)
    encoder_grid: Grid | None = None
    width: int | None = None  # a token's width (tokens only: :class:`EncoderGrid`)

    def __post_init__(self) -> None:
        if self.cells is not None and self.width is None:
            raise ValueError(f"token view {self.name!r} needs the width of its tokens")

    @property
    def key(self) -> OutputKey:
        return (self.depth, self.cells)

    def clip_shape(self, embed_dim: int) -> tuple[int, ...]:
        """One clip's feature: ``(embed_dim,)``, or ``(T'·H'·W', width)`` for tokens (their own width, which
        may differ from the embedding's)."""
        if self.cells is None:
            return (embed_dim,)
        t, h, w = self.cells
        return (t * h * w, self.width)  # type: ignore[return-value]

    def record(self) -> dict[str, Any]:
        """What this set adds to its view's record of the run (nothing for a plain view: recorded as before)."""
        out: dict[str, Any] = {}
        if self.depth > 1:
            out["layer"] = -self.depth
        if self.cells is not None:
            out.update(tokens=self.tokens, token_grid=list(self.cells), encoder_grid=list(self.encoder_grid or ()))
        return out


def plain_sets(specs: Mapping[str, SamplerSpec]) -> dict[str, FeatureSet]:
    """One pooled view per sampler view: every run without ``--tokens``/``--layers``."""
    return {name: FeatureSet(name, name) for name in specs}


def plan_sets(specs: Mapping[str, SamplerSpec], tokens: TokenGrid | None, layers: int,
              encoder_grid: EncoderGrid | None) -> dict[str, FeatureSet]:
    """Every stored view of a run, per sampler view: depth 1 first (pooled, then tokens), then deeper blocks.

    ``encoder_grid`` (:func:`encoder_grid_of`) is needed with ``tokens``: it resolves ``full``, bounds the grid
    and gives the tokens' width.
    """
    if tokens is not None and encoder_grid is None:
        raise ValueError("a token grid is resolved against the encoder's grid: pass encoder_grid")
    cells = tokens.resolve(encoder_grid.cells) if tokens is not None else None  # type: ignore[union-attr]
    sets: dict[str, FeatureSet] = {}
    for view in specs:
        for depth in range(1, layers + 1):
            base = layer_view_name(view, depth)
            sets[base] = FeatureSet(base, view, depth)
            if cells is not None:
                name = token_view_name(base, cells)
                sets[name] = FeatureSet(name, view, depth, cells, tokens.text,  # type: ignore[union-attr]
                                        encoder_grid.cells, encoder_grid.width)  # type: ignore[union-attr]
    return sets


def encoder_grid_of(model: Backbone, device: torch.device, layers: int) -> EncoderGrid:
    """The encoder's token grid (T, H, W) at its clip size and its tokens' width, from one zero clip through
    ``forward_tokens``.

    Known before the store's views are created (a ``full`` grid names its view), and a family without
    tokens or intermediate blocks refuses here, before anything is written.
    """
    s = model.spec
    x = torch.zeros(1, 3, s.frames, s.size, s.size, device=device)
    with torch.inference_mode():
        pairs = model.forward_tokens(x, layers=layers)
    if len(pairs) != layers:
        raise VsslError(f"backbone family {model.family!r} returned {len(pairs)} block outputs for --layers {layers}")
    grid = pairs[-1][1]
    return EncoderGrid(tuple(int(n) for n in grid.shape[1:4]), int(grid.shape[-1]))  # type: ignore[arg-type]


def output_keys(sets: Mapping[str, FeatureSet]) -> list[OutputKey]:
    """The distinct outputs the encoder pass must give, in a fixed order."""
    return list(dict.fromkeys(s.key for s in sets.values()))


def needs_tokens(sets: Mapping[str, FeatureSet]) -> bool:
    """Whether any set needs ``forward_tokens`` (tokens, or a block before the last); else ``model(x)``."""
    return any(key != (1, None) for key in output_keys(sets))


def compute_outputs(model: Backbone, x: torch.Tensor, keys: list[OutputKey], layers: int) -> torch.Tensor:
    """One encoder pass -> ``[B, sum of output sizes]`` float32: each key's rows flattened, in ``keys`` order
    (one host copy per batch, split by :func:`split_outputs`)."""
    pairs = model.forward_tokens(x, layers=layers)
    parts = []
    for depth, cells in keys:
        embedding, grid = pairs[-depth]
        parts.append(embedding.float() if cells is None else pool_tokens(grid, cells).flatten(1))
    return torch.cat(parts, dim=1)


def output_widths(sets: Mapping[str, FeatureSet], keys: list[OutputKey], embed_dim: int) -> list[int]:
    """Columns of each key in :func:`compute_outputs`' rows: a clip's feature of a set with that key, flat."""
    shape_of = {s.key: s.clip_shape(embed_dim) for s in sets.values()}
    return [math.prod(shape_of[key]) for key in keys]
