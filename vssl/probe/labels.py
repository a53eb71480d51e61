"""What each video of a store is labelled with for the probes: a class, several classes, or a value.

A store written from a manifest with ``a;b;c`` labels holds multi-hot classes (``videos/multi_hot``)
and the probes then train one-vs-rest; ``--target NAME`` probes a numeric manifest column
instead (a regression target). Older stores hold the class column only and read as before.
"""

from __future__ import annotations

import numpy as np

from vssl.errors import VsslError


def video_labels(store, target: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels of every store row, which rows are labelled): int64 ``[N]`` class indices,
    uint8 ``[N, C]`` multi-hot (a multi-label store), or float64 ``[N]`` values of ``target``."""
    if target is not None:
        values = store.targets(target)
        return values, np.isfinite(values)
    hot = store.multi_hot()
    if hot is not None:
        return hot, hot.any(axis=1)
    labels = store.labels()
    return labels, labels >= 0


def class_names(store, train_labels: np.ndarray, test_labels: np.ndarray, target: str | None = None) -> list[str]:
    """The names of what the probes predict: the store's classes ("0".."C-1" when it lists none),
    or the target's name (one output); labels beyond the class list are an error."""
    if target is not None:
        return [target]
    if train_labels.ndim == 2:
        width = train_labels.shape[1]
        return list(store.classes)[:width] if len(store.classes) >= width else [str(c) for c in range(width)]
    top = int(max(train_labels.max(), test_labels.max()))
    classes = list(store.classes) or [str(c) for c in range(top + 1)]
    if top >= len(classes):
        raise VsslError(f"{store.path}: labels go up to {top} but the store lists {len(classes)} classes; "
                        "fix the class list of the store")
    return classes
