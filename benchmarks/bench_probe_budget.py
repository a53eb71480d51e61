"""Do the trained probes' default budgets converge? Measured on generated clip features, small and large.

For each training-set size the script reports, side by side on the same features and test videos:
  * the linear row (default: solved by L-BFGS) against scikit-learn's ``LogisticRegression`` per
    clip on standardised features, its C chosen on the same held-out parts (the reference the
    test suite holds it to, ``tests/test_probe_convergence.py``);
  * the MLP and the Transformer rows at their default budget against ten times that budget
    (ten times the epochs and the step floor): a converged default gains no more than noise.
Each comparison prints both top-1s, the paired 95% bootstrap interval of the difference over test
videos, and the time ratio. Numbers go to docs/PERFORMANCE.md ("Probe budgets").

    python benchmarks/bench_probe_budget.py --sizes 100,2000 --probes linear,mlp,transformer
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from vssl.features_store.synthetic import make_synthetic_store
from vssl.probe import LinearConfig, ProbeRequest, run_probes
from vssl.probe.compare import paired_difference
from vssl.probe.lowshot import selection_folds
from vssl.probe.mlp import MlpConfig
from vssl.probe.transformer import TransformerConfig

VIEW = "uniform4x1"


def generated(n_train: int, n_test: int, seed: int, classes: int = 10, clips: int = 4, dim: int = 32):
    """Clip features with a class direction, a video-level nuisance and clip noise, unstandardised."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.permutation(np.arange(n) % classes)
    means = 0.35 * rng.normal(size=(classes, dim))
    x = means[y][:, None] + rng.normal(size=(n, 1, dim)) + 1.5 * rng.normal(size=(n, clips, dim))
    x = x * np.exp(rng.normal(size=dim)) + 3 * rng.normal(size=dim)
    return x.astype(np.float32), y, np.array(["train"] * n_train + ["test"] * n_test)


def logistic_reference(x, y, train, test, l2s, holdout, holdout_min, seed) -> np.ndarray:
    """scikit-learn's per-clip logistic regression, C on the same held-out parts; test scores."""
    xt, yt, d = x[train], y[train], x.shape[-1]

    def fit_predict(fit, videos, l2):
        rows = xt[fit].reshape(-1, d)
        scaler = StandardScaler().fit(rows)
        model = LogisticRegression(C=1.0 / (l2 * len(rows)), max_iter=5000)
        model.fit(scaler.transform(rows), np.repeat(yt[fit], x.shape[1]))
        p = model.predict_proba(scaler.transform(videos.reshape(-1, d)))
        return p.reshape(len(videos), -1, p.shape[-1]).mean(1)

    correct, loss = np.zeros(len(l2s)), np.zeros(len(l2s))
    for fit, held in selection_folds(yt, holdout, holdout_min, seed):
        for i, l2 in enumerate(l2s):
            p = fit_predict(fit, xt[held], l2)
            correct[i] += (p.argmax(1) == yt[held]).sum()
            loss[i] -= np.log(p[np.arange(len(held)), yt[held]]).sum()
    best = min(range(len(l2s)), key=lambda i: (-correct[i], round(loss[i], 6), i))
    return fit_predict(np.arange(len(yt)), x[test], l2s[best])


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
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "store"
            make_synthetic_store(store, x, y, splits, view=VIEW, chunk_videos=256)
            labels = y[splits == "test"]
            if "linear" in probes:
                cfg = LinearConfig(device="cpu")
                ours, t_ours = row(store, linear=cfg)
                t = time.perf_counter()
                ref = logistic_reference(x, y, splits == "train", splits == "test", cfg.l2s, cfg.holdout,
                                         cfg.holdout_min, cfg.seed)
                t_ref = time.perf_counter() - t
                print(compare(f"n={n} sklearn LR (a) vs linear (b)", ref.argmax(1) == labels,
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
