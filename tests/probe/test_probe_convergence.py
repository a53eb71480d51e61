"""A trained row's default budget converges: vssl's linear row is never below, beyond noise, what
scikit-learn's logistic regression gets from the same store, on a small and on a large training set.

The reference is built here independently: scikit-learn's ``LogisticRegression`` per clip on
``StandardScaler`` features, a video's score the mean of its clips' probabilities, its C chosen
on the same held-out parts of the training split (C = 1 / (λ · clips), the λ grid of the row).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from vssl.features_store.synthetic import make_synthetic_store
from vssl.probe import LinearConfig, ProbeRequest, run_probes
from vssl.probe.lbfgs import L2_PATH
from vssl.probe.lowshot import selection_folds
from vssl.probe.train import TrainConfig, budget

VIEW = "uniform4x1"
#: the default path's first five decades: the reference scans every C on every part (the weakest
#: penalties are the slowest to solve), and these hold the best C of both sets
L2S = L2_PATH[:5]


def generated(n_train: int, n_test: int, seed: int, classes: int = 10, clips: int = 4, dim: int = 32):
    """Clip features as a video model gives them: a class direction, a video-level nuisance and
    clip noise, in dimensions of very different scales and offsets (unstandardised)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.permutation(np.arange(n) % classes)
    means = 0.35 * rng.normal(size=(classes, dim))
    x = means[y][:, None] + rng.normal(size=(n, 1, dim)) + 1.5 * rng.normal(size=(n, clips, dim))
    x = x * np.exp(rng.normal(size=dim)) + 3 * rng.normal(size=dim)
    return x.astype(np.float32), y, ["train"] * n_train + ["test"] * n_test


def reference(x_train, y_train, x_test, l2s=L2S, holdout: float = 0.1, holdout_min: int = 100, seed: int = 0):
    """scikit-learn's logistic regression per clip, C = 1 / (λ clips) selected among ``l2s`` on the
    held-out parts (top-1, a tie to the lower held-out log-loss, then to the stronger penalty), refit
    on all: the test split's predicted classes."""
    d = x_train.shape[-1]

    def fit_predict(fit, videos, l2):
        rows = x_train[fit].reshape(-1, d)
        scaler = StandardScaler().fit(rows)
        model = LogisticRegression(C=1.0 / (l2 * len(rows)), max_iter=2000)
        model.fit(scaler.transform(rows), np.repeat(y_train[fit], x_train.shape[1]))
        p = model.predict_proba(scaler.transform(videos.reshape(-1, d)))
        return p.reshape(len(videos), -1, p.shape[-1]).mean(1)

    correct, log_loss = np.zeros(len(l2s)), np.zeros(len(l2s))
    for fit, held in selection_folds(y_train, holdout, holdout_min, seed):
        for i, l2 in enumerate(l2s):
            p = fit_predict(fit, x_train[held], l2)
            correct[i] += (p.argmax(1) == y_train[held]).sum()
            log_loss[i] -= np.log(p[np.arange(len(held)), y_train[held]]).sum()
    best = l2s[min(range(len(l2s)), key=lambda i: (-correct[i], round(log_loss[i], 6), i))]
    return fit_predict(np.arange(len(y_train)), x_test, best).argmax(1)


def paired_interval(a_correct: np.ndarray, b_correct: np.ndarray, seed: int = 0, draws: int = 4000):
    """95% bootstrap interval (over test videos) of the difference of two rows' top-1, in points."""
    rng = np.random.default_rng(seed)
    diff = a_correct.astype(np.float64) - b_correct
    idx = rng.integers(0, len(diff), size=(draws, len(diff)))
    means = diff[idx].mean(1) * 100
    return np.percentile(means, 2.5), np.percentile(means, 97.5)


@pytest.mark.slow
@pytest.mark.parametrize("n_train", [100, 2000], ids=["small", "large"])
def test_default_linear_row_is_not_below_logistic_regression(tmp_path, n_train):
    x, y, splits = generated(n_train, 400, seed=1)
    make_synthetic_store(tmp_path / "store", x, y, splits, view=VIEW, chunk_videos=256)
    report = run_probes(ProbeRequest(store=tmp_path / "store", view=VIEW, quiet=True,
                                     linear=LinearConfig(device="cpu", l2s=L2S)))
    row = next(r for r in report.results if r.probe == "linear")
    train, test = np.array(splits) == "train", np.array(splits) == "test"
    ours = np.asarray(row.correct).reshape(-1)
    ref = reference(x[train], y[train], x[test]) == y[test]
    low, high = paired_interval(ours, ref)
    assert high >= 0.0, (f"linear row {ours.mean() * 100:.1f} vs logistic regression {ref.mean() * 100:.1f}: "
                         f"paired 95% interval [{low:.1f}, {high:.1f}] points")
    assert row.params["selected"]["converged"]


def test_budget_gives_small_splits_enough_steps_and_leaves_large_ones_alone():
    cfg = TrainConfig(epochs=20, batch_size=1024, min_steps=500)
    small = budget(cfg, 240 * 15)                        # 3,600 clips: 4 steps an epoch at batch 1024
    assert small.epochs * np.ceil(3600 / small.batch_size) >= 500
    assert small.epochs == 20 and small.batch_size < 1024     # the batch shrinks first: same compute
    assert small.batch_size == 3600 // 25                # no further than needed: 25 steps an epoch x 20
    tiny = budget(cfg, 40)                               # the batch floor is reached: epochs are added
    assert tiny.batch_size == 16 and tiny.epochs * np.ceil(40 / 16) >= 500
    assert budget(cfg, 240_000 * 15) == cfg              # a large split already has its steps
    assert budget(cfg, 0) == cfg                         # nothing to train on: nothing to scale


def test_selection_holds_out_enough_videos_in_disjoint_parts():
    y = np.repeat(np.arange(10), 24)                     # 240 videos: one 10% part is 24 videos
    folds = selection_folds(y, 0.1, 100, seed=0)
    held = [h for _, h in folds]
    assert sum(map(len, held)) >= 100 and len(folds) <= 10
    assert len(np.unique(np.concatenate(held))) == sum(map(len, held))      # disjoint parts
    for fit, h in folds:
        assert np.intersect1d(fit, h).size == 0 and len(fit) + len(h) == len(y)
        assert set(y[fit]) == set(range(10))            # every class stays on the fit side
        assert np.bincount(y[h], minlength=10).max() - np.bincount(y[h], minlength=10).min() <= 1
    assert len(selection_folds(np.repeat(np.arange(10), 200), 0.1, 100, seed=0)) == 1   # 200 held: one part


def test_a_solve_stopped_before_convergence_is_said(tmp_path, caplog):
    """A head cut short by --max-iter is never a silent number: the row records it and a warning says it."""
    x, y, splits = generated(60, 20, seed=2)
    make_synthetic_store(tmp_path / "store", x, y, splits, view=VIEW)
    probe_log = logging.getLogger("vssl.probe")     # its own stderr handler once a probe ran: listen there
    probe_log.addHandler(caplog.handler)
    try:
        report = run_probes(ProbeRequest(store=tmp_path / "store", view=VIEW, quiet=True,
                                         linear=LinearConfig(device="cpu", max_iter=2, holdout=0.0, l2s=(1e-4,))))
    finally:
        probe_log.removeHandler(caplog.handler)
    assert report.results[0].params["selected"]["converged"] is False
    assert any("--max-iter" in r.getMessage() for r in caplog.records)


def test_held_out_parts_follow_the_settings_and_the_seed():
    """A trained probe's selection parts: at least --holdout-min videos in all, the same parts for
    the same --seed (a rerun reproduces its row), other parts for another seed."""
    from vssl.probe.train import held_out_folds

    labels, positions = np.repeat(np.arange(10), 24), np.arange(240)
    cfg = TrainConfig(holdout=0.1, holdout_min=100, seed=3)
    folds = held_out_folds(labels, positions, cfg)
    assert sum(len(h) for _, h in folds) >= 100 and len(folds) > 1
    again = held_out_folds(labels, positions, cfg)
    assert all(np.array_equal(h, g) for (_, h), (_, g) in zip(folds, again))
    other = held_out_folds(labels, positions, TrainConfig(holdout=0.1, holdout_min=100, seed=4))
    assert not np.array_equal(folds[0][1], other[0][1])



@pytest.mark.parametrize("solver, flag", [("lbfgs", "--l2"), ("minibatch", "--lr")])
def test_a_split_too_small_to_hold_out_names_the_flags_of_its_solver(solver, flag):
    """Three videos of three classes: nothing can be held out; the line says what to fix for this head."""
    from vssl.errors import VsslError
    from vssl.probe.linear import train_linear

    x = np.random.default_rng(0).normal(size=(3, 2, 4)).astype(np.float32)
    with pytest.raises(VsslError, match=f"--holdout 0 and fix one {flag}"):
        train_linear(x, np.arange(3), np.arange(3), 3, LinearConfig(device="cpu", solver=solver, min_steps=0))
