"""Do the trained probes' default budgets converge? Measured on generated clip features, small and large.

For each training-set size the script reports, side by side on the same features and test videos:
  * the linear row (default: solved by L-BFGS) against scikit-learn's ``LogisticRegression`` per
    clip on standardised features, its C chosen on the same held-out parts (the reference the
    test suite holds it to, ``tests/probe/test_probe_convergence.py``);
  * the MLP and the Transformer rows at their default budget against ten times that budget
    (ten times the epochs and the step floor): a converged default gains no more than noise.
Each comparison prints both top-1s, the paired 95% bootstrap interval of the difference over test
videos, and the time ratio. Numbers go to docs/PERFORMANCE.md ("Probe budgets").

    python benchmarks/bench_probe_budget.py --sizes 100,2000 --probes linear,mlp,transformer
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.probe.test_probe_convergence import generated, reference  # noqa: E402  (the test's features and reference)
from vssl.features_store.synthetic import make_synthetic_store  # noqa: E402
from vssl.probe import LinearConfig, ProbeRequest, run_probes  # noqa: E402
from vssl.probe.compare import paired_difference  # noqa: E402
from vssl.probe.mlp import MlpConfig  # noqa: E402
from vssl.probe.transformer import TransformerConfig  # noqa: E402

VIEW = "uniform4x1"


def row(store: Path, **probes):
    """The first result of a probe run on ``store`` and its seconds."""
    t = time.perf_counter()
    report = run_probes(ProbeRequest(store=store, view=VIEW, quiet=True, **probes))
    return report.results[0], time.perf_counter() - t


def ten_times(cfg):
    return dataclasses.replace(cfg, epochs=10 * cfg.epochs, min_steps=10 * cfg.min_steps)


def compare(name: str, correct_a: np.ndarray, correct_b: np.ndarray, ta: float, tb: float) -> str:
    """One line: both top-1s, b - a with its exact paired 95% interval, and b's time over a's."""
    d = paired_difference(correct_b, correct_a)
    return (f"{name:<40} {d.top1_b:6.1f} {d.top1_a:6.1f}  {d.diff:+6.1f} [{d.low:+6.1f}, {d.high:+6.1f}]"
            f"  x{tb / max(ta, 1e-9):5.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,2000", help="training videos per run, comma-separated")
    ap.add_argument("--test", type=int, default=400, help="test videos")
    ap.add_argument("--probes", default="linear,mlp,transformer")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    probes = args.probes.split(",")
    print(f"{'comparison':<34} {'a':>6} {'b':>6}  {'b - a':>6} {'95% interval':>16}  time b/a")
    for n in (int(s) for s in args.sizes.split(",")):
        x, y, splits = generated(n, args.test, args.seed)
        splits = np.asarray(splits)
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "store"
            make_synthetic_store(store, x, y, splits, view=VIEW, chunk_videos=256)
            labels = y[splits == "test"]
            if "linear" in probes:
                cfg = LinearConfig(device="cpu")
                ours, t_ours = row(store, linear=cfg)
                t = time.perf_counter()
                train, test = splits == "train", splits == "test"
                ref = reference(x[train], y[train], x[test], cfg.l2s, cfg.holdout, cfg.holdout_min, cfg.seed)
                t_ref = time.perf_counter() - t
                print(compare(f"n={n} sklearn LR (a) vs linear (b)", ref == labels,
                              np.asarray(ours.correct).reshape(-1), t_ref, t_ours))
            for name, cfg in (("mlp", MlpConfig(device="cpu", precision="fp32")),
                              ("transformer", TransformerConfig(device="cpu", precision="fp32"))):
                if name in probes:
                    a, ta = row(store, **{name: cfg})
                    b, tb = row(store, **{name: ten_times(cfg)})
                    print(compare(f"n={n} {name}: default (a) vs 10x (b)", np.asarray(a.correct).reshape(-1),
                                  np.asarray(b.correct).reshape(-1), ta, tb), flush=True)


if __name__ == "__main__":
    main()
