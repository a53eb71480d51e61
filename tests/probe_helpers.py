"""Helpers for the probe tests: a tiny labelled store with a SCALE run trained on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vssl.features_store.synthetic import make_synthetic_store

VIEW = "uniform5x3"
CLASSES = ["a", "b", "c"]


def tiny_store_and_run(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """A 3-class store (36 train, 12 test videos of 4 clips, 8-d) in ``root/store`` and a
    one-epoch SCALE run on it in ``root/run``: seconds to build, enough for every probe."""
    from vssl.aggregate import ScaleConfig, train

    rng = np.random.default_rng(seed)
    y = np.arange(48) % 3
    x = (3 * rng.normal(size=(3, 8))[y][:, None] + rng.normal(size=(48, 4, 8))).astype(np.float32)
    make_synthetic_store(root / "store", x, y, ["train"] * 36 + ["test"] * 12, view=VIEW, classes=CLASSES,
                         chunk_videos=16)
    cfg = ScaleConfig(width=16, layers=1, heads=2, pred_hidden=32, target_hidden=32, proj_dim=8, epochs=1,
                      batch_size=16, device="cpu", precision="fp32", seed=0)
    train(root / "store", VIEW, root / "run", cfg, quiet=True)
    return root / "store", root / "run"
