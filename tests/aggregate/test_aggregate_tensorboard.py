"""`vssl aggregate --log-dir`: TensorBoard event files, read back with tensorboard's own reader."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.schedules import reference_lr
from vssl.aggregate import ScaleConfig, ScaleModel, train
from vssl.aggregate.synthetic import structured_clip_features
from vssl.features_store.synthetic import make_synthetic_store

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
N, K, D = 64, 16, 24


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tb") / "store"
    feats, boxes = structured_clip_features(N, K, D, 0)
    make_synthetic_store(path, feats, [i % 4 for i in range(N)], ["train"] * N, boxes=boxes, chunk_videos=32)
    return path


def small_cfg(**kw) -> ScaleConfig:
    return ScaleConfig(**{**dict(width=32, heads=4, layers=1, pred_hidden=64, target_hidden=64, proj_dim=16,
                                 epochs=3, batch_size=16, lr=3e-3, warmup=0.25, precision="fp32", device="cpu",
                                 checkpoint_every=1), **kw})


def events(log_dir) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalar(acc: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_every_step_logs_losses_accuracies_and_the_learning_rate(store_path, tmp_path):
    cfg = small_cfg()
    train(store_path, "random16", tmp_path / "run", cfg, quiet=True, log_dir=tmp_path / "tb")
    acc = events(tmp_path / "tb")
    steps_per_epoch, total = N // 16, 3 * (N // 16)
    for tag in ("train/loss", "train/mcm_loss", "train/mcm_top1", "train/set_loss", "train/set_top1", "train/lr"):
        assert sorted(scalar(acc, tag)) == list(range(total)), tag
    lr = scalar(acc, "train/lr")
    for step in range(total):
        assert lr[step] == pytest.approx(reference_lr(step, total, cfg.lr, cfg.warmup), rel=1e-6, abs=1e-12)
    # each epoch's mean of the step losses is metrics.csv's row (one run, two records that must agree)
    loss = scalar(acc, "train/loss")
    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for e, row in enumerate(rows):
        steps = range(e * steps_per_epoch, (e + 1) * steps_per_epoch)
        assert np.mean([loss[s] for s in steps]) == pytest.approx(float(row["loss"]), rel=1e-4)
        assert scalar(acc, "epoch/loss")[(e + 1) * steps_per_epoch - 1] == pytest.approx(float(row["loss"]), rel=1e-4)
    assert all(0.0 <= v <= 1.0 for v in scalar(acc, "train/mcm_top1").values())
    text = acc.Tensors("settings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"width": 32' in text and '"view": "random16"' in text


def test_a_resumed_run_logs_each_step_once(store_path, tmp_path, monkeypatch):
    cfg = small_cfg(epochs=3)
    calls = {"n": 0}
    original = ScaleModel.set_losses

    def crash_in_epoch_three(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * (N // 16) + 3:     # the third step of epoch 3, after epoch 2's checkpoint
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ScaleModel, "set_losses", crash_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        train(store_path, "random16", tmp_path / "run", cfg, quiet=True, log_dir=tmp_path / "tb")
    monkeypatch.setattr(ScaleModel, "set_losses", original)
    train(store_path, "random16", tmp_path / "run", cfg, resume=True, quiet=True, log_dir=tmp_path / "tb")
    train(store_path, "random16", tmp_path / "whole", cfg, quiet=True, log_dir=tmp_path / "tb-whole")
    resumed = [(e.step, e.value) for e in events(tmp_path / "tb").Scalars("train/loss")]
    whole = [(e.step, e.value) for e in events(tmp_path / "tb-whole").Scalars("train/loss")]
    assert [s for s, _ in resumed] == [s for s, _ in whole] == list(range(3 * (N // 16)))   # no step twice
    assert [v for _, v in resumed] == pytest.approx([v for _, v in whole], rel=1e-5)
    epochs = [[e.step for e in events(tmp_path / run).Scalars("epoch/loss")] for run in ("tb", "tb-whole")]
    assert epochs[0] == epochs[1] == [(e + 1) * (N // 16) - 1 for e in range(3)]     # the checkpointed epoch kept


def test_a_missing_tensorboard_is_one_line_naming_the_extra(store_path, tmp_path, monkeypatch, capsys):
    from vssl.cli import main

    monkeypatch.setitem(__import__("sys").modules, "tensorboard", None)     # import tensorboard -> ImportError
    with pytest.raises(SystemExit) as exit_:
        main(["aggregate", str(store_path), "--out", str(tmp_path / "run"), "--log-dir", str(tmp_path / "tb"),
              "--epochs", "1", "--width", "32", "--heads", "4", "--quiet", "--device", "cpu"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "vssl[tensorboard]" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "tb").exists()
