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


def selection_folds(labels: np.ndarray, fraction: float, min_held: int, seed: int = 0
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, held-out) position pairs that model selection scores on, stratified by class.

    One pair (:func:`holdout_split`) when its held-out part holds at least ``min_held`` videos.
    On a smaller training split a couple of dozen held-out videos would pick a grid point by
    noise (one video is 4 points of accuracy), so disjoint held-out parts are drawn in turn,
    each ``fraction`` of every class, until together they hold ``min_held`` videos or every video
    has been held out once (at most ``round(1 / fraction)`` parts: k-fold cross-validation). A
    class with a single video is never held out.
    """
    labels = np.asarray(labels)
    fit, held = holdout_split(labels, fraction, seed)
    slots = max(1, int(round(1.0 / fraction))) if fraction > 0 else 1
    if len(held) == 0 or len(held) >= min_held or slots == 1:
        return [(fit, held)]
    folds = min(slots, -(-min_held // len(held)))
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(folds)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) < 2:
            continue
        for f, part in enumerate(np.array_split(members, slots)[:folds]):
            parts[f].append(part)
    everyone = np.arange(len(labels))
    pairs = []
    for chosen in parts:
        held_f = np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, np.int64)
        if len(held_f):
            pairs.append((np.setdiff1d(everyone, held_f).astype(np.int64), held_f))
    return pairs
