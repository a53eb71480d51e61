"""Helpers for the probe tests: a tiny labelled store with a SCALE run trained on it."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from vssl.features_store.synthetic import make_synthetic_store

VIEW = "uniform5x3"
CLASSES = ["a", "b", "c"]


def tiny_store(path: Path, seed: int = 0, videos: int = 48, test: int = 12, dim: int = 8,
               spread: float = 3.0, **store_kw) -> np.ndarray:
    """A 3-class store at ``path``: ``videos`` videos of 4 clips (the last ``test`` of them the test
    split), ``dim``-d clips around a class centre ``spread`` apart; returns the clips as stored."""
    rng = np.random.default_rng(seed)
    y = np.arange(videos) % 3
    x = (spread * rng.normal(size=(3, dim))[y][:, None] + rng.normal(size=(videos, 4, dim))).astype(np.float32)
    make_synthetic_store(path, x, y, ["train"] * (videos - test) + ["test"] * test, view=VIEW, classes=CLASSES,
                         **store_kw)
    return x


def tiny_store_and_run(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """A 3-class store (36 train, 12 test videos of 4 clips, 8-d) in ``root/store`` and a
    one-epoch SCALE run on it in ``root/run``: seconds to build, enough for every probe."""
    from vssl.aggregate import ScaleConfig, train

    tiny_store(root / "store", seed, chunk_videos=16)
    cfg = ScaleConfig(width=16, layers=1, heads=2, pred_hidden=32, target_hidden=32, proj_dim=8, epochs=1,
                      batch_size=16, device="cpu", precision="fp32", seed=0)
    train(root / "store", VIEW, root / "run", cfg, quiet=True)
    return root / "store", root / "run"


def dino_knn(train, train_y, test, num_classes, k=20, t=0.07):
    """DINO's weighted k-NN vote written out in numpy, neighbour by neighbour (the independent
    reference of vssl's k-NN rows)."""
    sims = test @ train.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(test), num_classes))
    for q in range(len(test)):
        for j in top[q]:
            votes[q, train_y[j]] += np.exp(sims[q, j] / t)
    return votes


def l2(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run `vssl` in-process; return (exit code, stdout, stderr)."""
    from vssl.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@contextlib.contextmanager
def probe_warnings() -> Iterator[list[logging.LogRecord]]:
    """The warnings the probes log inside the block. Read from a handler of their own: once a CLI run in
    the same process has given the ``vssl.probe`` logger its stderr handler, it no longer propagates to
    pytest's ``caplog``."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("vssl.probe")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
