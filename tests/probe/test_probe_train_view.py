"""`--train-view`: trained probes fit on a training view's clips (a fresh random subset per
step, released SCALE's 8 of 16), while selection and test read `--view`; k-NN reads `--view`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vssl.cli import main
from vssl.features_store.synthetic import make_synthetic_store, uniform_boxes
from vssl.probe.data import TrainView
from vssl.probe.inputs import ClipInputs, SetInputs

EVAL, TRAIN = "uniform5x3", "random16"
N_TRAIN, N_TEST, C, D = 60, 30, 3, 8


def _arrays(seed=0):
    """Training videos carry their class in the training view, but the probed view shows them with
    the next class's mean; test videos carry their own class in the probed view. A probe fit on the
    probed view learns the shifted mapping (near 0%), one fit on the training view the right one."""
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_TEST
    y = np.arange(n) % C
    means = 4 * rng.normal(size=(C, D))
    shown = np.where(np.arange(n) < N_TRAIN, (y + 1) % C, y)
    x_eval = rng.normal(size=(n, 3, D)) + means[shown][:, None]
    x_train = rng.normal(size=(n, 16, D)) + means[y][:, None]
    return x_eval, x_train, y


def _store(path, seed=0, shuffle_test=False):
    """The arrays of :func:`_arrays` as a store: the probed view and the training view."""
    x_eval, x_train, y = _arrays(seed)
    if shuffle_test:
        y = y.copy()
        y[N_TRAIN:] = np.random.default_rng(1).permutation(y[N_TRAIN:])
    n = len(y)
    splits = ["train"] * N_TRAIN + ["test"] * N_TEST
    store = make_synthetic_store(path, x_eval.astype(np.float32), y, splits, view=EVAL, chunk_videos=30)
    store.create_view(TRAIN, num_clips=16, spec={"sampler": "synthetic", "clips": 16}, dtype="float16")
    boxes = uniform_boxes(n, 16)
    for start, stop in store.chunk_ranges():
        idx = np.arange(start, stop)
        store.write_videos(idx, {TRAIN: (x_train[start:stop].astype(np.float32), boxes[start:stop])},
                           num_frames=[64] * len(idx), fps=[25.0] * len(idx), errors=[None] * len(idx))
    return path


def _probe(capsys, store, out, *flags):
    """Run `vssl probe` in-process: (exit code, stderr, rows by probe name or None)."""
    args = ["probe", store, "--view", EVAL, "--epochs", "6", "--batch-size", "16", "--lr", "0.01",
            "--weight-decay", "0", "--quiet", "--device", "cpu", "--precision", "fp32", "--min-steps", "0",
            "--holdout-min", "0", "--report", out, *flags]
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    rows = {r["probe"]: r for r in json.loads(out.read_text())["results"]} if code == 0 else None
    return code, err, rows


@pytest.mark.slow
def test_train_view_is_what_the_probes_fit_on(tmp_path, capsys):
    store = _store(tmp_path / "s")
    plain = _probe(capsys, store, tmp_path / "a.json", "--linear", "--knn")[2]
    viewed = _probe(capsys, store, tmp_path / "b.json", "--linear", "--knn", "--train-view", TRAIN)[2]
    assert plain["linear"]["top1"] < 10 and viewed["linear"]["top1"] > 90
    assert viewed["linear"]["params"]["train_view"] == TRAIN and viewed["linear"]["params"]["train_clips"] == 8
    assert plain["linear"]["params"]["train_view"] is None
    # k-NN is training-free and reads --view only: the same row either way
    assert viewed["knn"]["top1"] == plain["knn"]["top1"]
    assert viewed["linear"]["n_test"] == N_TEST


@pytest.mark.slow
def test_set_model_fits_on_the_training_view_and_is_tested_on_the_probed_view():
    from vssl.probe.transformer import TransformerConfig, train_transformer

    x_eval, x_train, y = _arrays()
    boxes = np.zeros((len(y), 3, 7), np.float32)
    tv = TrainView(TRAIN, x_train[:N_TRAIN].astype(np.float32), np.zeros((N_TRAIN, 16, 7), np.float32), clips=8)
    cfg = TransformerConfig(lrs=(3e-3,), weight_decays=(0.0,), epochs=6, batch_size=8, width=32, layers=1,
                            holdout=0.0, min_steps=0, device="cpu", precision="fp32")   # a fixed schedule
    test = np.arange(N_TRAIN, len(y))
    for view, lo, hi in ((None, 0, 10), (tv, 90, 100)):
        result, inputs = train_transformer(x_eval[:N_TRAIN], boxes[:N_TRAIN], y[:N_TRAIN], np.arange(N_TRAIN), C,
                                           cfg, train_view=view)
        test_inputs = inputs.like(x_eval[test], boxes[test], y[test])  # scored as the model was trained
        top1 = (test_inputs.predict(result.model, np.arange(N_TEST), torch.device("cpu")).argmax(-1)[:, 0]
                == y[test]).mean() * 100
        assert lo <= top1 <= hi, (view, top1)


def test_clip_heads_draw_a_fresh_subset_of_each_videos_clips_per_epoch():
    feats = np.arange(4 * 16, dtype=np.float32).reshape(4, 16, 1)    # value = video * 16 + clip
    tv = TrainView(TRAIN, feats, None, clips=8)
    inputs = ClipInputs(np.zeros((4, 3, 1), np.float32), np.arange(4), train_view=tv)
    assert inputs.samples_per_video == 8
    gen = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(2):
        seen = np.concatenate([x[0][:, 0].numpy() for x, _ in inputs.batches(np.arange(4), 5, gen, torch.device("cpu"))])
        per_video = {v: sorted(int(s) % 16 for s in seen if int(s) // 16 == v) for v in range(4)}
        assert all(len(c) == 8 == len(set(c)) for c in per_video.values())
        epochs.append(per_video)
    assert epochs[0] != epochs[1]


def test_set_models_get_a_random_subset_of_the_training_views_clips_per_step():
    feats = np.arange(3 * 16, dtype=np.float32).reshape(3, 16, 1)
    boxes = np.repeat(feats, 7, axis=-1)
    tv = TrainView(TRAIN, feats, boxes, clips=8)
    inputs = SetInputs(np.zeros((3, 5, 1), np.float32), np.zeros((3, 5, 7), np.float32), np.arange(3), train_view=tv)
    (x, b), y = next(inputs.batches(np.arange(3), 3, torch.Generator().manual_seed(1), torch.device("cpu")))
    assert x.shape == (3, 8, 1) and b.shape == (3, 8, 7)
    assert torch.equal(b[..., 0], x[..., 0])                              # boxes travel with their clips
    for row, video in zip(x[..., 0].numpy(), y.numpy()):
        assert len(set(row)) == 8 and all(int(v) // 16 == video for v in row)


@pytest.mark.slow
def test_selection_with_a_train_view_ignores_the_test_labels(tmp_path, capsys):
    chosen = []
    for name, shuffle in (("a", False), ("b", True)):
        store = _store(tmp_path / name, shuffle_test=shuffle)
        rows = _probe(capsys, store, tmp_path / f"{name}.json", "--linear", "--lr", "0.001", "--train-view", TRAIN)[2]
        chosen.append(rows["linear"]["params"]["selected"])
    assert chosen[0] == chosen[1]


@pytest.mark.slow
def test_train_view_must_match_the_probed_view(tmp_path, capsys):
    store = _store(tmp_path / "s")
    code, err, _ = _probe(capsys, store, tmp_path / "c.json", "--linear", "--train-view", TRAIN, "--train-clips", "17")
    assert code == 2 and "only 16 clips" in err
    code, err, _ = _probe(capsys, store, tmp_path / "c.json", "--linear", "--train-view", "nope")
    assert code == 2 and "nope" in err
