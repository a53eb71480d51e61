"""Position tables of the ViT families, and their resizing to another token grid, in one place.

A ViT run on clips of another size or frame count than it was trained on sees a token grid its
learned (or fixed) position table does not cover. Every family resizes it here, the way SCALE
does (Separius/SCALE ``src/models/interface.py``, ``VisionTransformer.get_pos_embedding``):
trilinear interpolation of the (t, h, w) table, align_corners False. The one exception is the
per-frame image ViT, which SCALE never runs: it follows transformers' ``ViTModel(...,
interpolate_pos_encoding=True)`` (bicubic on the 2-D grid), as MAE/timm evaluate it.

Factorised tables (mae_st's ``pos_embed_spatial`` + ``pos_embed_temporal``; TimeSformer's
``pos_embed`` + ``time_embed``) are resized per factor by :func:`resize_factorised`. That is
SCALE's result exactly, not an approximation: SCALE sums the factors into a full table and
interpolates it trilinearly, and trilinear weights are a product of per-axis weights that each
sum to one, so the sum of a spatial and a temporal table interpolates to the bilinearly resized
spatial table plus the linearly resized temporal one. Keeping the factors keeps the native
grid's arithmetic (and so its outputs) bit for bit what it was.

Each family says so in exactly one log line (:func:`say_resized`) when its model is built, and
says nothing at its native grid.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

log = logging.getLogger("vssl.extract")

Grid = tuple[int, ...]


def grid_side(n: int) -> int:
    """The side of a square grid of ``n`` positions (timm/MAE tables are square)."""
    side = int(round(math.sqrt(n)))
    if side * side != n:
        raise ValueError(f"{n} position embeddings do not form a square grid")
    return side


def resize_pos_grid(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int], mode: str = "bicubic",
                    antialias: bool = False) -> torch.Tensor:
    """Interpolate a (1, H*W, D) position grid to another resolution (timm's and transformers' ViT
    approach; ``antialias`` as transformers' DINOv2 with registers). Computed in float32: bicubic
    in half precision shifts the table."""
    if tuple(old) == tuple(new):
        return pos
    D = pos.shape[-1]
    grid = pos.reshape(1, old[0], old[1], D).permute(0, 3, 1, 2)
    kwargs = {"align_corners": False, "antialias": antialias} if mode in ("bicubic", "bilinear") else {}
    grid = F.interpolate(grid.float(), size=tuple(new), mode=mode, **kwargs).to(pos.dtype)
    return grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], D)


def resize_pos_table(pos: torch.Tensor, old: Grid, new: Grid) -> torch.Tensor:
    """A (1, t*h*w, D) position table of grid ``old`` interpolated trilinearly to grid ``new``.

    SCALE's rule: reshape to (t, h, w), ``F.interpolate(..., mode="trilinear")`` with
    align_corners False, flatten back in (t, h, w) order. A grid equal to ``old`` returns
    ``pos`` itself, so the native clip's arithmetic is untouched.
    """
    if tuple(old) == tuple(new):
        return pos
    D = pos.shape[-1]
    grid = pos.reshape(1, *old, D).permute(0, 4, 1, 2, 3)
    grid = F.interpolate(grid.float(), size=tuple(new), mode="trilinear").to(pos.dtype)
    return grid.permute(0, 2, 3, 4, 1).reshape(1, -1, D)


def resize_factorised(spatial: torch.Tensor, temporal: torch.Tensor, old: Grid,
                      new: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a factorised table — ``spatial`` (1, h*w, D) and ``temporal`` (1, t, D) — from
    (t, h, w) grid ``old`` to ``new`` with :func:`resize_pos_table`, one factor at a time.

    Each factor is a (t, h, w) table with singleton axes, so trilinear interpolation is bilinear
    for the spatial one and linear for the temporal one; their sum is SCALE's trilinearly
    resized full table (module docstring).
    """
    (t0, h0, w0), (t1, h1, w1) = old, new
    return (resize_pos_table(spatial, (1, h0, w0), (1, h1, w1)),
            resize_pos_table(temporal, (t0, 1, 1), (t1, 1, 1)))


def grid_text(grid: Grid) -> str:
    return "x".join(map(str, grid))


def say_resized(family: str, source: str, old: Grid, new: Grid, how: str, clip: str) -> bool:
    """Log the one line a family owes when its position table will be resized; nothing when not.

    Called once, when the model is built for the requested clip (``clip`` says which, e.g.
    "16 frames at 224 px"), so a long extraction does not repeat it per batch. Returns whether
    the table is resized.
    """
    if tuple(old) == tuple(new):
        return False
    axes = "t x h x w" if len(old) == 3 else "h x w"
    log.warning("%s: position table of %s tokens (%s, as trained) interpolated %s to %s for %s (%s)",
                family, grid_text(old), axes, how, grid_text(new), clip, source)
    return True
