"""Linear-probe training time at UCF-101 scale (9.5k videos x 15 clips x 768-d, 101 classes).

Rows, measured side by side in one run on the same float16 features:
  solved           vssl's default: logistic regression by full-batch L-BFGS along the λ path,
                   λ selected on 10% held out, solved on all (``vssl.probe.lbfgs``)
  grid, one pass   ``--solver minibatch``: the 3 x 2 (lr x weight decay) grid trained side by side
                   on the same minibatches, epochs + grid point selected on 10% held out, refit
  ..., fp32        the same in float32 (``auto`` is bf16 on CPUs with native bf16 GEMMs)
  grid, one by one the same grid as six separate fits (what a plain loop over the grid costs)
  single head      one fixed (lr, wd), no selection (--holdout 0): the floor for one head
Accuracy is on a synthetic test split (features = class centre + noise), only to show the
heads learn; time is what this benchmark is about.

    python benchmarks/bench_linear_probe.py [--videos 9500] [--epochs 20] [--write-doc]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from harness import machine, markdown_table, write_section
from vssl.probe.inputs import ClipInputs
from vssl.probe.linear import LinearConfig, train_linear


def make_data(videos: int, clips: int, dim: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim), dtype=np.float32)
    y = rng.integers(0, classes, videos)
    x = (centers[y][:, None] + 12.0 * rng.standard_normal((videos, clips, dim), dtype=np.float32))
    return x.astype(np.float16), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=9500)
    ap.add_argument("--clips", type=int, default=15)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=101)
    ap.add_argument("--epochs", type=int, default=LinearConfig().epochs)
    ap.add_argument("--write-doc", action="store_true", help="update docs/PERFORMANCE.md")
    args = ap.parse_args()
    n_test = args.videos // 3
    x, y = make_data(args.videos + n_test, args.clips, args.dim, args.classes)
    train_pos, test_pos = np.arange(args.videos), np.arange(args.videos, args.videos + n_test)
    base = LinearConfig(epochs=args.epochs, device="cpu", solver="minibatch")
    runs = {"solved by L-BFGS (vssl default)": [LinearConfig(device="cpu")],
            "grid, one pass (--solver minibatch)": [base],
            "grid, one pass, --precision fp32": [replace(base, precision="fp32")],
            "grid, one by one": [replace(base, lrs=(lr,), weight_decays=(wd,)) for lr, wd in base.grid()],
            "single head, no selection": [replace(base, lrs=base.lrs[-1:], weight_decays=base.weight_decays[:1],
                                                  holdout=0.0)]}
    rows, times = [], {}
    for name, cfgs in runs.items():
        t = time.perf_counter()
        for cfg in cfgs:
            result, _ = train_linear(x, y, train_pos, args.classes, cfg)
        times[name] = time.perf_counter() - t
        probs = ClipInputs(x, y).predict(result.model, test_pos, torch.device("cpu"), result.precision)[:, 0]
        acc = (probs.argmax(1) == y[test_pos]).mean() * 100
        print(f"# {name}: {times[name]:.1f} s, test top-1 {acc:.1f}% ({result.params()})", flush=True)
        heads = len(cfgs[0].l2s) if cfgs[0].solver == "lbfgs" else len(cfgs[0].grid()) * len(cfgs)
        rows.append([name, heads, times[name], 0.0, acc])
    floor = times["single head, no selection"]
    for r in rows:
        r[3] = r[2] / floor
    table = markdown_table(["run", "heads", "time (s)", "x single head", "test top-1 (%)"], rows)
    body = (f"## Linear probe training (`vssl probe --linear`)\n\n"
            f"`python benchmarks/bench_linear_probe.py` — {args.videos} training videos x {args.clips} clips x "
            f"{args.dim}-d float16, {args.classes} classes; minibatch rows: {args.epochs} epochs, batch "
            f"{base.batch_size}, AdamW; {machine()}.\n\n{table}\n")
    print(body)
    if args.write_doc:
        write_section("linear-probe", body)


if __name__ == "__main__":
    main()
