"""Token grids: which pooled grid of an encoder's patch tokens a token view stores, and the pooling.

``--tokens T'xH'xW'`` asks for the encoder's final patch tokens of each clip (``Backbone.token_grid``:
``(B, T, H, W, D)``) average-pooled to ``T' x H' x W'`` cells; ``--tokens full`` keeps the encoder's own
grid. Pooling is adaptive average pooling over (T, H, W) (cell ``i`` of ``n`` along an axis of size ``L``
averages positions ``floor(i·L/n)`` to ``ceil((i+1)·L/n) - 1``, torch's ``adaptive_avg_pool3d``), and the
cells are flattened t-major (then h, then w), so a clip's tokens are ``(T'·H'·W', D)``. A coarser grid is
the V-JEPA attentive probe's input at a fraction of the bytes (docs/PERFORMANCE.md: bytes per clip).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vssl.errors import VsslError

__all__ = ["TokenGrid", "pool_tokens", "token_view_name", "layer_view_name"]

_SPEC = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*$")

Grid = tuple[int, int, int]


@dataclass(frozen=True)
class TokenGrid:
    """A requested token grid: ``cells`` (T', H', W'), or None for ``full`` (the encoder's own grid).

    ``text`` is the spec as the user gave it (recorded with the view).
    """

    cells: Grid | None
    text: str

    @classmethod
    def parse(cls, text: str) -> "TokenGrid":
        """``"2x4x4"`` or ``"full"``; anything else is one line naming the accepted forms."""
        spec = str(text).strip()
        if spec.lower() == "full":
            return cls(None, "full")
        match = _SPEC.match(spec)
        if not match or min(int(n) for n in match.groups()) < 1:
            raise VsslError(f"--tokens {text!r}: expected T'xH'xW' with sizes >= 1 (e.g. 2x4x4), or full")
        t, h, w = (int(n) for n in match.groups())
        return cls((t, h, w), spec)

    @property
    def full(self) -> bool:
        return self.cells is None

    def resolve(self, encoder: Grid) -> Grid:
        """The grid stored for an encoder whose tokens lie on ``encoder`` (T, H, W).

        A finer grid than the encoder's would only repeat tokens (adaptive pooling upsamples by
        copying): refused, naming the encoder's grid.
        """
        encoder = tuple(int(n) for n in encoder)  # type: ignore[assignment]
        if self.cells is None:
            return encoder
        if any(c > e for c, e in zip(self.cells, encoder)):
            raise VsslError(f"--tokens {self.text}: finer than the encoder's token grid {_label(encoder)}; "
                            f"ask for at most {_label(encoder)} (or full)")
        return self.cells


def _label(grid: Grid) -> str:
    return "x".join(str(n) for n in grid)


def pool_tokens(grid: torch.Tensor, cells: Grid | TokenGrid) -> torch.Tensor:
    """``(B, T, H, W, D)`` tokens -> ``(B, T'·H'·W', D)``: adaptive average pooling to ``cells``, t-major.

    Pooled in float32 whatever the autocast dtype of ``grid`` (a mean over many tokens in bf16 would
    lose the digits float16 storage keeps).
    """
    if isinstance(cells, TokenGrid):
        cells = cells.resolve(tuple(grid.shape[1:4]))
    b, t, h, w, d = grid.shape
    if tuple(cells) == (t, h, w):
        return grid.float().reshape(b, t * h * w, d)
    pooled = F.adaptive_avg_pool3d(grid.float().permute(0, 4, 1, 2, 3), tuple(cells))  # (B, D, T', H', W')
    return pooled.flatten(2).transpose(1, 2)


def token_view_name(view: str, cells: Grid) -> str:
    """The name of ``view``'s token view on ``cells``: ``<view>.tokens<T'>x<H'>x<W'>``."""
    return f"{view}.tokens{_label(cells)}"


def layer_view_name(view: str, depth: int) -> str:
    """The name of ``view``'s features from the block at depth ``-depth`` (``depth`` >= 2; 1 is ``view``)."""
    return view if depth == 1 else f"{view}.layer-{depth}"
