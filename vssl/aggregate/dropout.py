"""Dropout whose CPU mask costs a fraction of ``torch.bernoulli``'s.

On CPU, ``F.dropout`` draws one Bernoulli sample per element through a slow per-element
path; at SCALE's size that was ~10% of a training step. Here the keep mask comes from raw
random 64-bit words (torch's seeded default generator, so runs stay repeatable): each word
gives three independent uniform 16-bit lanes, and an element is dropped when its lane falls
below ``round(p * 65536)``, i.e. with probability p to within 1e-5. Kept values are scaled by
1/(1 - p_effective), so the expectation is unchanged, exactly as in standard dropout. CUDA
(and big-endian hosts) use ``F.dropout``.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LANES_PER_WORD = 3  # random_() on int64 yields 63 random bits: the low three 16-bit lanes are uniform


def keep_mask(n: int, p: float, device: torch.device | str = "cpu") -> tuple[Tensor, float]:
    """Boolean keep mask of ``n`` elements (dropped with probability ~p) and the exact drop probability."""
    threshold = round(p * 65536)
    words = torch.empty((n + _LANES_PER_WORD - 1) // _LANES_PER_WORD, dtype=torch.int64, device=device).random_()
    lanes = words.view(torch.int16).view(-1, 4)[:, :_LANES_PER_WORD]
    keep = (lanes >= threshold - 32768).reshape(-1)[:n]
    return keep, threshold / 65536


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Drop-in for ``F.dropout`` (not in place)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or sys.byteorder != "little":
        return F.dropout(x, p, training)
    keep, p_eff = keep_mask(x.numel(), p, x.device)
    return x * keep.view(x.shape).to(x.dtype).mul_(1.0 / (1.0 - p_eff))


class Dropout(nn.Module):
    """:func:`dropout` as a module."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
