"""The named steps of ``aggregate.train()`` on their own: where a run starts, and its shape."""

from __future__ import annotations

import pytest
import torch

from vssl.aggregate import ScaleConfig
from vssl.aggregate.checkpoint import save_checkpoint
from vssl.aggregate.distributed import TrainingRanks
from vssl.aggregate.plan import plan_run
from vssl.aggregate.resume import Resume, resume_point
from vssl.distributed import RankEnv
from vssl.errors import VsslError


def cfg(**kw) -> ScaleConfig:
    return ScaleConfig(**{**dict(width=16, layers=1, heads=2, epochs=3, batch_size=8, device="cpu", precision="fp32"),
                          **kw})


def test_plan_is_per_rank_batches_of_drop_last_global_batches():
    two = plan_run(cfg(), 16, 37, TrainingRanks(RankEnv(1, 2, 1)))
    assert (two.batch, two.global_batch, two.steps_per_epoch, two.total_steps) == (8, 16, 2, 6)
    assert (two.set_size, two.device, two.precision) == (8, torch.device("cpu"), "fp32")
    small = plan_run(cfg(batch_size=64), 16, 10, TrainingRanks(RankEnv()))  # fewer videos than a batch
    assert (small.batch, small.steps_per_epoch) == (10, 1)


def test_resume_point_new_run_resumed_run_and_refusals(tmp_path):
    said = []
    assert resume_point(tmp_path, cfg(), True, said.append) == Resume()  # nothing to resume: a new run
    assert said and "starting a new run" in said[0]
    save_checkpoint(tmp_path, {"model": {}, "epoch": 2, "step": 7, "config": cfg().to_dict()})
    with pytest.raises(VsslError, match="--resume"):
        resume_point(tmp_path, cfg(), False, said.append)
    got = resume_point(tmp_path, cfg(epochs=5), True, said.append)  # more epochs: the same trajectory
    assert (got.epoch, got.step, got.state["step"]) == (2, 7, 7)
    with pytest.raises(VsslError, match="batch_size"):
        resume_point(tmp_path, cfg(batch_size=4), True, said.append)
