"""Which clips of a set MCM hides behind the MSK token (SCALE §3.1, eq. 6), in three ways.

The paper says a fraction (the masking ratio) of each set's clips is replaced by MSK and only
those are predicted; it does not say how the count is drawn. Three readings are offered:

- ``fixed`` (vssl's default since 0.1): every set masks exactly round(ratio x S) clips, at least
  one and at most S - 1. Shapes are static, so only the masked rows are ever projected or sent
  through the prediction head (DESIGN_NOTES 5).
- ``bernoulli``: an independent coin with P(mask) = ratio per clip, as the released
  ``Scale.forward`` does. A set may then have no masked clip (it adds nothing to L_MCM) or
  only masked clips (its SET token then sees boxes only), as released.
- ``stochastic``: per set, ratio x S rounded down or up at random so that its expectation is
  ratio x S (the released helper ``s_int``; defined there, never called).

``mask_ratio == 0`` masks nothing in every mode. Masks come from the epoch's set-sampling
generator (seeded by (seed, epoch)), drawn for the whole global batch right after the sets,
so a resumed or multi-rank run draws the same masks as the uninterrupted single run.
``fixed`` draws no random numbers at all, so runs made before the modes existed are unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MASK_MODES = ("fixed", "bernoulli", "stochastic")


def fixed_count(ratio: float, set_size: int) -> int:
    """Masked clips per set in ``fixed`` mode: round(ratio x S) clamped to [1, S - 1]; 0 when ratio is 0."""
    if ratio <= 0.0:
        return 0
    return min(max(1, int(round(ratio * set_size))), set_size - 1)


def expected_count(mode: str, ratio: float, set_size: int) -> float:
    """Mean masked clips per set, for logs and the run record."""
    return float(fixed_count(ratio, set_size)) if mode == "fixed" else ratio * set_size


def draw_masks(mode: str, ratio: float, batch: int, set_size: int, *, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> int | Tensor:
    """Masks for ``batch`` videos' two sets of ``set_size`` clips.

    ``fixed`` returns the count (the first positions of every set are masked: sets are random
    orderings, see :mod:`vssl.aggregate.sampling`); the other modes return a bool tensor
    ``[batch, 2, set_size]`` (True = masked).
    """
    if mode == "fixed":
        return fixed_count(ratio, set_size)
    if mode == "bernoulli":
        return torch.rand(batch, 2, set_size, generator=generator, device=device) < ratio
    if mode == "stochastic":
        low = math.floor(ratio * set_size)
        up = torch.rand(batch, 2, 1, generator=generator, device=device) < (ratio * set_size - low)
        counts = low + up.long()  # [batch, 2, 1]: floor or ceil, mean ratio x S
        return torch.arange(set_size, device=device) < counts
    raise ValueError(f"mask mode {mode!r} is not one of {', '.join(MASK_MODES)}")


def describe(mode: str, ratio: float, set_size: int) -> str:
    """``2 masked`` / ``~2.0 masked (bernoulli)`` for the run's log line."""
    if mode == "fixed":
        return f"{fixed_count(ratio, set_size)} masked"
    return f"~{expected_count(mode, ratio, set_size):.2g} masked ({mode})"


def draw_ragged_masks(mode: str, ratio: float, lengths: Tensor, set_size: int, *,
                      generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
    """Masks ``[B, 2, set_size]`` for sets of ``lengths [B, 2]`` real clips (a ragged view).

    Each mode reads as in :func:`draw_masks` with the set's own size in place of S: ``fixed``
    masks round(ratio x s) of its s clips (1..s-1; none in a set of one), ``bernoulli`` a coin per
    real clip, ``stochastic`` ratio x s randomly rounded. Padding is never masked. The random
    numbers drawn are those of :func:`draw_masks`, so sets that all hold S clips get its masks.
    """
    lengths = lengths.to(device)
    slot = torch.arange(set_size, device=device)
    real = slot < lengths[..., None]
    if mode == "fixed":
        table = torch.tensor([fixed_count(ratio, s) for s in range(set_size + 1)], device=device)
        return slot < table[lengths][..., None]
    if mode == "bernoulli":
        return (torch.rand(*lengths.shape, set_size, generator=generator, device=device) < ratio) & real
    if mode == "stochastic":
        expected = ratio * lengths.double()
        low = torch.floor(expected)
        up = torch.rand(*lengths.shape, 1, generator=generator, device=device) < (expected - low).float()[..., None]
        return slot < (low.long()[..., None] + up.long())
    raise ValueError(f"mask mode {mode!r} is not one of {', '.join(MASK_MODES)}")
