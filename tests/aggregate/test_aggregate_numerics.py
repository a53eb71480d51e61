"""Stage two's TF32 on CUDA holds for the training call only: the caller's flags come back after it,
also when training fails (reached on CPU by asking the CUDA rule for the run's scope)."""

from __future__ import annotations


import pytest
import torch

import vssl.aggregate.training as train_mod
from vssl.aggregate import ScaleConfig, train
from vssl.aggregate.synthetic import structured_clip_features
from vssl.features_store.synthetic import make_synthetic_store

pytestmark = pytest.mark.usefixtures("one_thread")


def flags() -> tuple:
    return (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


@pytest.fixture
def store(tmp_path):
    feats, boxes = structured_clip_features(16, 4, 8, 0)
    make_synthetic_store(tmp_path / "store", feats, [i % 2 for i in range(16)], ["train"] * 16, boxes=boxes,
                         chunk_videos=16)
    return tmp_path / "store"


@pytest.fixture
def cuda_scope(monkeypatch):
    """Training's numerics as on a CUDA device, and what they were during each epoch."""
    real_scope, real_epoch = train_mod._training_numerics, train_mod._Trainer.train_epoch
    during = []

    def epoch(self, *args):
        during.append(flags())
        return real_epoch(self, *args)

    monkeypatch.setattr(train_mod, "_training_numerics", lambda device: real_scope(torch.device("cuda")))
    monkeypatch.setattr(train_mod._Trainer, "train_epoch", epoch)
    return during


def cfg() -> ScaleConfig:
    return ScaleConfig(width=16, heads=2, layers=1, pred_hidden=16, target_hidden=16, proj_dim=8, epochs=1,
                       batch_size=8, precision="fp32", device="cpu")


def test_tf32_is_on_while_training_and_restored_after(store, tmp_path, cuda_scope):
    before = flags()
    assert before[1] is False  # torch's default, as a caller would have it
    train(store, "random16", tmp_path / "run", cfg(), quiet=True)
    assert cuda_scope == [("high", True, True)]
    assert flags() == before


def test_flags_are_restored_when_training_fails(store, tmp_path, cuda_scope, monkeypatch):
    def diverge(self, *args):
        cuda_scope.append(flags())
        raise train_mod.TrainingDiverged("loss became NaN/inf")

    monkeypatch.setattr(train_mod._Trainer, "train_epoch", diverge)
    before = flags()
    with pytest.raises(train_mod.TrainingDiverged):
        train(store, "random16", tmp_path / "run", cfg(), quiet=True)
    assert cuda_scope == [("high", True, True)] and flags() == before


def test_cpu_training_leaves_the_flags_alone():
    with train_mod._training_numerics(torch.device("cpu")):
        assert flags()[0] == torch.get_float32_matmul_precision()
    assert not torch.backends.cuda.matmul.allow_tf32
