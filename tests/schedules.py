"""The released warm-up + cosine schedule written out by hand: the reference the logged rates are checked against."""

import math


def reference_lr(step: int, total: int, base: float, warmup: float) -> float:
    """Linear warm-up over ``warmup`` of the ``total`` steps, then a half-cosine to 0 (released train.py)."""
    warm = warmup * total
    if step <= warm:
        return base * step / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
