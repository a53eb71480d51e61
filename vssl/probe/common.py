"""Small helpers every probe shares: device choice and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

# One device rule for the whole toolkit (``auto`` = CUDA when present), :mod:`vssl.device`'s;
# re-exported so the probes keep one import for their shared helpers.
from vssl.device import resolve_device

__all__ = ["resolve_device", "seed_everything"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for data order, so runs repeat."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
