"""Stage two on a store: training falls and learns, resume is exact, NaN stops cleanly, export fills
every done video, the CLI works."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from vssl.aggregate import ScaleConfig, ScaleModel, TrainingDiverged, export, load_run, train
from vssl.aggregate.checkpoint import checkpoint_path, file_sha256
from vssl.aggregate.synthetic import structured_clip_features
from vssl.cli import main
from vssl.errors import StoreError, VsslError
from vssl.features_store import BackboneSpec, FeatureStore, VideoEntry
from vssl.features_store.synthetic import make_synthetic_store

N, K, D = 128, 16, 24


pytestmark = pytest.mark.usefixtures("one_thread")


def structured_features(n=N, k=K, d=D, seed=0):
    return structured_clip_features(n, k, d, seed)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("agg") / "store"
    feats, boxes = structured_features()
    make_synthetic_store(path, feats, [i % 4 for i in range(N)], ["train"] * N, boxes=boxes, chunk_videos=32)
    return path


def small_cfg(**kw) -> ScaleConfig:
    base = dict(width=32, heads=4, layers=2, pred_hidden=64, target_hidden=64, proj_dim=16, epochs=4,
                batch_size=32, lr=3e-3, dropout=0.1, precision="fp32", device="cpu", checkpoint_every=2)
    base.update(kw)
    return ScaleConfig(**base)


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_losses_fall_and_mcm_top1_rises_well_above_chance(store_path, tmp_path):
    summary = train(store_path, "random16", tmp_path / "run", small_cfg(epochs=8, dropout=0.0), quiet=True)
    rows = read_metrics(tmp_path / "run")
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    assert set(rows[0]) == {"epoch", "step", "loss", "mcm_loss", "set_loss", "mcm_top1", "set_top1", "lr",
                            "videos_per_s", "seconds"}
    first, last = rows[0], rows[-1]
    assert float(last["mcm_loss"]) < float(first["mcm_loss"]) - 1.0
    assert float(last["set_loss"]) < float(first["set_loss"])
    chance = 1 / (2 * 32 * 8)  # one right clip among all clips of the minibatch
    assert float(last["mcm_top1"]) > 15 * chance
    assert float(last["set_top1"]) > 10 / 32
    assert summary.epochs == 8 and summary.steps == 8 * (N // 32) and summary.resident
    assert float(last["lr"]) < float(rows[1]["lr"])  # cosine decay
    assert all(float(r["videos_per_s"]) > 0 for r in rows)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("mask_mode", ["fixed", "bernoulli"])  # masks drawn per step resume exactly too
def test_resume_equals_uninterrupted_run_bit_for_bit(store_path, tmp_path, monkeypatch, mask_mode):
    cfg = small_cfg(epochs=4, checkpoint_every=1, mask_mode=mask_mode)
    train(store_path, "random16", tmp_path / "full", cfg, quiet=True)

    calls = {"n": 0}
    original = ScaleModel.set_losses

    def crash_in_epoch_three(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * (N // 32) + 2:  # second step of epoch 3
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ScaleModel, "set_losses", crash_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        train(store_path, "random16", tmp_path / "cut", cfg, quiet=True)
    monkeypatch.setattr(ScaleModel, "set_losses", original)
    assert torch.load(checkpoint_path(tmp_path / "cut"), weights_only=True)["epoch"] == 2
    with pytest.raises(VsslError, match="--resume"):
        train(store_path, "random16", tmp_path / "cut", cfg, quiet=True)
    train(store_path, "random16", tmp_path / "cut", cfg, resume=True, quiet=True)

    full = torch.load(checkpoint_path(tmp_path / "full"), weights_only=True)
    cut = torch.load(checkpoint_path(tmp_path / "cut"), weights_only=True)
    assert full["epoch"] == cut["epoch"] == 4 and full["step"] == cut["step"]
    assert _states_equal(full["model"], cut["model"])
    assert _states_equal(full["optimizer"]["state"][0], cut["optimizer"]["state"][0])
    drop = ("videos_per_s", "seconds")
    strip = [lambda r: {k: v for k, v in r.items() if k not in drop}] * 2
    assert [strip[0](r) for r in read_metrics(tmp_path / "full")] == [strip[1](r) for r in read_metrics(tmp_path / "cut")]
    with pytest.raises(VsslError, match="width"):  # resuming with another architecture is refused
        train(store_path, "random16", tmp_path / "cut", small_cfg(epochs=4, width=64), resume=True, quiet=True)


@pytest.mark.slow
def test_streaming_from_the_store_gives_the_same_run(store_path, tmp_path):
    cfg = small_cfg(epochs=1)
    resident = train(store_path, "random16", tmp_path / "a", cfg, quiet=True)
    streamed = train(store_path, "random16", tmp_path / "b", cfg.replace(max_memory_bytes=1), quiet=True)
    assert resident.resident and not streamed.resident
    a = torch.load(checkpoint_path(tmp_path / "a"), weights_only=True)["model"]
    b = torch.load(checkpoint_path(tmp_path / "b"), weights_only=True)["model"]
    assert _states_equal(a, b)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(store_path, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = ScaleModel.set_losses

    def nan_in_epoch_three(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 2 * (N // 32) + 1:
            out["loss"] = out["loss"] * float("nan")
        return out

    run = tmp_path / "run"
    monkeypatch.setattr(ScaleModel, "set_losses", nan_in_epoch_three)
    with pytest.raises(TrainingDiverged, match="NaN.*epoch 3.*last good checkpoint \\(epoch 2\\)"):
        train(store_path, "random16", run, small_cfg(epochs=6, checkpoint_every=1), quiet=True)
    state = torch.load(checkpoint_path(run), weights_only=True)
    assert state["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert [int(r["epoch"]) for r in read_metrics(run)] == [1, 2]
    model, cfg, meta = load_run(run)  # the kept checkpoint is usable
    assert meta["epochs"] == 2


def _store_with_failed_and_pending(path):
    """24 videos in chunks of 8: video 5 failed, videos 20-23 never extracted; plus a K=15 view."""
    feats, boxes = structured_features(n=24, k=K)
    spec = BackboneSpec(name="synthetic", embed_dim=D, frames=16, stride=4, size=224, mean=(0.5,) * 3,
                        std=(0.5,) * 3, checkpoint_sha256="ab" * 32)
    store = FeatureStore.create(path, spec, [VideoEntry(f"v{i}.mp4", 0, "train") for i in range(24)],
                                classes=["a"], chunk_videos=8)
    store.create_view("random16", num_clips=K, spec={"sampler": "random", "clips": K})
    store.create_view("uniform5x3", num_clips=15, spec={"sampler": "uniform", "t": 5, "s": 3})
    for start in (0, 8, 16):
        idx = np.arange(start, min(start + 8, 20))
        errors = [("decode error" if i == 5 else None) for i in idx]
        store.write_videos(idx, {"random16": (feats[idx], boxes[idx]),
                                 "uniform5x3": (feats[idx, :15] * 0.5, boxes[idx, :15])},
                           num_frames=[64] * len(idx), fps=[25.0] * len(idx), errors=errors)
    return store


@pytest.mark.slow
def test_export_fills_every_done_video_resumably(tmp_path):
    store = _store_with_failed_and_pending(tmp_path / "store")
    run = tmp_path / "myrun"
    summary = train(tmp_path / "store", "random16", run, small_cfg(epochs=1, batch_size=8), quiet=True)
    assert summary.num_videos == 19  # trains on done videos only: not the failed one, not the pending ones
    result = export(tmp_path / "store", run, "uniform5x3", device="cpu", quiet=True)
    assert result["group"] == "aggregates/myrun/uniform5x3" and result["written"] == 19
    rows = FeatureStore.open(tmp_path / "store").row_group("aggregates/myrun/uniform5x3")
    expected_done = np.array([i != 5 and i < 20 for i in range(24)])
    assert np.array_equal(rows.done(), expected_done)
    model, cfg, _ = load_run(run)
    f, b = store.view("uniform5x3").read(np.arange(8, 16))
    with torch.no_grad():
        c_hat, cls = model.encode(torch.from_numpy(f), torch.from_numpy(b))
    np.testing.assert_allclose(rows.read("set_token", np.arange(8, 16)), cls.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rows.read("clips", np.arange(8, 16)), c_hat.numpy(), rtol=1e-4, atol=1e-5)
    assert rows.read("clips", np.arange(24)).shape == (24, 15, 32)
    again = export(tmp_path / "store", run, "uniform5x3", device="cpu", quiet=True)
    assert again["written"] == 0 and again["done"] == 19
    # a retrained checkpoint under the same name must not mix its rows with the old ones
    train(tmp_path / "store", "random16", tmp_path / "other" / "myrun", small_cfg(epochs=1, batch_size=8, seed=1),
          quiet=True)
    with pytest.raises(StoreError, match="another checkpoint"):
        export(tmp_path / "store", tmp_path / "other" / "myrun", "uniform5x3", device="cpu", quiet=True)


@pytest.mark.slow
def test_export_refuses_a_store_of_another_backbone(store_path, tmp_path):
    run = tmp_path / "run"
    train(store_path, "random16", run, small_cfg(epochs=1), quiet=True)
    other = _store_with_failed_and_pending(tmp_path / "other")
    with pytest.raises(StoreError, match="backbone"):
        export(tmp_path / "other", run, "uniform5x3", device="cpu", quiet=True)
    assert other.num_videos == 24


@pytest.mark.slow
def test_cli_train_export_and_errors(store_path, tmp_path, capsys):
    (tmp_path / "cfg.toml").write_text("width = 32\nheads = 4\npred_hidden = 64\ntarget_hidden = 64\n"
                                       "proj_dim = 16\nprecision = 'fp32'\n")
    run = tmp_path / "clirun"
    args = ["aggregate", str(store_path), "--view", "random16", "--out", str(run), "--config",
            str(tmp_path / "cfg.toml"), "--epochs", "1", "--batch-size", "64", "--set-size", "6", "--quiet"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code in (0, None)
    _, cfg, meta = load_run(run)
    assert (cfg.width, cfg.epochs, cfg.batch_size, meta["set_size"], meta["num_masked"]) == (32, 1, 64, 6, 2)
    assert "1 epochs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as again:  # same --out without --resume: one line, exit 2
        main(args)
    assert again.value.code == 2
    assert "--resume" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exported:
        main(["aggregate", str(store_path), "--from", str(run), "--export", "--view", "random16", "--quiet",
              "--json"])
    assert exported.value.code in (0, None)
    assert '"written": 128' in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["aggregate", str(store_path), "--out", str(tmp_path / "x"), "--set-size", "9", "--quiet"])
    assert bad.value.code == 2 and "--set-size" in capsys.readouterr().err
    assert sha_stable(run)


def sha_stable(run) -> bool:
    """Exporting must not modify the checkpoint it reads."""
    before = file_sha256(checkpoint_path(run))
    load_run(run)
    return file_sha256(checkpoint_path(run)) == before
