"""Class-balanced, seeded subsets: the low-shot protocol and the held-out split for model selection."""

from __future__ import annotations

import numpy as np

from vssl.errors import VsslError


def balanced_fraction(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Positions of a class-balanced ``fraction`` of ``labels`` (each class keeps
    ``max(1, round(fraction * n_c))`` of its ``n_c`` videos), sorted, reproducible for a seed.

    Used by ``--low-shot F``: only the training split shrinks, the test split stays whole.
    """
    if not 0.0 < fraction <= 1.0:
        raise VsslError(f"--low-shot {fraction}: the fraction must be in (0, 1], e.g. 0.1 for 10% of the training videos")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = max(1, int(round(fraction * len(members))))
        keep.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def holdout_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split positions of ``labels`` into (fit, held-out), stratified by class.

    Hyper-parameters and epochs are chosen on the held-out part of the *training* split,
    never on the test split. A class keeps at least one video on the fit side; classes
    with a single video stay entirely on it.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_held = min(int(round(fraction * len(members))), len(members) - 1)
        if fraction > 0 and len(members) > 1:
            n_held = max(n_held, 1)
        held.append(members[:n_held])
        fit.append(members[n_held:])
    fit_idx = np.sort(np.concatenate(fit)) if fit else np.zeros(0, dtype=np.int64)
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    return fit_idx.astype(np.int64), held_idx.astype(np.int64)
