"""Stage two on a ragged view vs the fixed view, in one run: what variable-length sets cost.

Three stores of the same N videos, D-wide float16 clips, trained one epoch each with the default
SCALE model (sets of 8, resident on the device), rounds interleaved so a noisy shared machine
slows all alike:

- ``fixed``: K=16 clips per video (the fixed layout: ``set_losses`` with full sets, no padding);
- ``ragged, 16 each``: the same clips in the ragged layout (flat rows, per-video sets drawn by
  counts, key padding, ``set_losses``): the overhead of the ragged path itself;
- ``ragged, 4-400``: a dense-like view (clip counts log-uniform in 4..400, mean ~100): sets of
  at most 8, so a step costs what a fixed step costs whatever the videos' lengths.

    python benchmarks/bench_ragged_train.py [--videos 1024 --dim 768 --batch-size 256 --rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vssl.aggregate import ScaleConfig, train
from vssl.features_store.synthetic import make_synthetic_store


def stores(root: Path, n: int, d: int, seed: int = 0) -> dict[str, tuple[Path, int]]:
    rng = np.random.default_rng(seed)
    fixed = rng.normal(size=(n, 16, d)).astype(np.float16)
    counts = np.exp(rng.uniform(np.log(4), np.log(400), size=n)).astype(int)
    dense = [rng.normal(size=(c, d)).astype(np.float16) for c in counts]
    make_synthetic_store(root / "fixed", fixed, np.zeros(n, int), ["train"] * n, view="v")
    make_synthetic_store(root / "ragged16", list(fixed), np.zeros(n, int), ["train"] * n, view="v")
    make_synthetic_store(root / "dense", dense, np.zeros(n, int), ["train"] * n, view="v")
    return {"fixed (K=16)": (root / "fixed", n * 16), "ragged, 16 each": (root / "ragged16", n * 16),
            f"ragged, 4-400 (mean {counts.mean():.0f})": (root / "dense", int(counts.sum()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = stores(root, args.videos, args.dim)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(args.rounds):
            for case, (name, (path, _)) in enumerate(cases.items()):
                cfg = ScaleConfig(epochs=1, batch_size=args.batch_size, set_size=8, device=device, seed=r)
                t0 = time.perf_counter()
                summary = train(path, "v", root / f"run-{case}-{r}", cfg, quiet=True)
                times[name].append(time.perf_counter() - t0)
                assert summary.resident
        base = statistics.median(times["fixed (K=16)"])
        print(f"{args.videos} videos, D={args.dim}, batch {args.batch_size}, sets of 8, one epoch, {device}, "
              f"{args.threads} threads, median of {args.rounds} rounds (loading the view included)\n")
        print("| view | clips stored | epoch (s) | videos/s | time vs fixed |")
        print("|---|---|---|---|---|")
        for name, (_, clips) in cases.items():
            t = statistics.median(times[name])
            print(f"| {name} | {clips} | {t:.2f} | {args.videos / t:.0f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
