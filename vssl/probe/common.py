"""Small helpers every probe shares: device choice, seeding, a progress bar."""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch

# One device rule for the whole toolkit (``auto`` = CUDA when present); stage two owns it.
from vssl.device import resolve_device

__all__ = ["resolve_device", "seed_everything", "progress"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for data order, so runs repeat."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def progress(description: str, total: int, quiet: bool) -> Iterator:
    """A rich progress bar on stderr (``advance(n)``); a no-op when ``quiet``."""
    if quiet:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
