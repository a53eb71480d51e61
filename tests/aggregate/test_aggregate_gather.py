"""The seam between the losses and the ranks: the gather is an argument, not module state.

One process stands in for several ranks with a fake gather (the ranks' other rows as constants,
this rank's rows live), so the identity the DDP run relies on, mean over ranks of the gathered
loss = the loss on the concatenated batch, is checked without a process group.
"""

from __future__ import annotations

import inspect
import re
import types

import pytest
import torch

import vssl.distributed as distributed
from vssl.aggregate import ScaleConfig, ScaleModel, info_nce, symmetric_info_nce
from vssl.aggregate.distributed import TrainingRanks, _PretrainObjective
from vssl.distributed import RankEnv, all_gather_keys, negatives, planning, ranks

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD, ROWS = 3, 4


def shared_gather(full: torch.Tensor, rank: int):
    """Gather of ``rank`` when every rank's rows are slices of ``full``: the whole of it, and the offset."""
    return lambda keys: (full, rank * keys.shape[0])


def test_info_nce_with_a_gather_equals_the_loss_on_the_concatenated_batch():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(WORLD * ROWS, 6, generator=g, requires_grad=True)
    k = torch.randn(WORLD * ROWS, 6, generator=g, requires_grad=True)
    own = torch.stack([torch.randperm(ROWS, generator=g) for _ in range(WORLD)])  # positives among own keys
    per_rank = [info_nce(q[r * ROWS:(r + 1) * ROWS], k[r * ROWS:(r + 1) * ROWS], 0.3, own[r],
                         gather=shared_gather(k, r)) for r in range(WORLD)]
    full = info_nce(q, k, 0.3, (own + ROWS * torch.arange(WORLD)[:, None]).reshape(-1))
    assert torch.stack([loss for loss, _ in per_rank]).mean().item() == pytest.approx(full[0].item(), rel=1e-6)
    assert torch.stack([t for _, t in per_rank]).mean().item() == pytest.approx(full[1].item(), abs=1e-6)
    _assert_grads_sum_to_world_times_full(per_rank, full, (q, k))


def test_symmetric_info_nce_with_a_gather_equals_the_loss_on_the_concatenated_batch():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(WORLD * ROWS, 5, generator=g, requires_grad=True)
    b = torch.randn(WORLD * ROWS, 5, generator=g, requires_grad=True)

    def gather_of(rank):  # keys b then a, as _symmetric_across_ranks asks for them
        return lambda keys: (b if keys is b_rows[rank] else a, rank * ROWS)

    b_rows = [b[r * ROWS:(r + 1) * ROWS] for r in range(WORLD)]
    per_rank = [symmetric_info_nce(a[r * ROWS:(r + 1) * ROWS], b_rows[r], 0.2, gather=gather_of(r))
                for r in range(WORLD)]
    full = symmetric_info_nce(a, b, 0.2)
    assert torch.stack([loss for loss, _ in per_rank]).mean().item() == pytest.approx(full[0].item(), rel=1e-6)
    _assert_grads_sum_to_world_times_full(per_rank, full, (a, b))


def _assert_grads_sum_to_world_times_full(per_rank, full, leaves):
    """Summed over ranks, the gathered losses' gradient is WORLD x the full-batch loss's (what
    the all-gather's backward and DDP's averaging turn into exactly the full-batch gradient)."""
    ranked = torch.autograd.grad(torch.stack([loss for loss, _ in per_rank]).sum(), leaves)
    whole = torch.autograd.grad(full[0], leaves)
    for got, want in zip(ranked, whole):
        torch.testing.assert_close(got, WORLD * want, rtol=1e-5, atol=1e-6)


class _FakeRanks:
    """Runs ``pretrain_losses`` as WORLD ranks would, in one process: a first pass records each rank's
    keys, the second gathers the other ranks' recorded keys (constants) around this rank's live ones."""

    def __init__(self) -> None:
        self.recorded: list[list[torch.Tensor]] = [[] for _ in range(WORLD)]

    def record(self, rank: int):
        def gather(keys):
            self.recorded[rank].append(keys.detach())
            return keys, 0
        return gather

    def gather(self, rank: int):
        calls = iter(range(len(self.recorded[rank])))

        def gather(keys):
            i = next(calls)
            parts = [keys if r == rank else self.recorded[r][i] for r in range(WORLD)]
            return torch.cat(parts), rank * keys.shape[0]
        return gather


def test_model_threads_the_gather_into_both_losses():
    cfg = ScaleConfig(width=16, layers=1, heads=2, mlp_ratio=2.0, dropout=0.0, proj_dim=8, pred_hidden=24,
                      target_hidden=20)
    torch.manual_seed(0)
    model = ScaleModel(cfg, 12)
    g = torch.Generator().manual_seed(2)
    feats, boxes = torch.randn(WORLD * ROWS, 8, 12, generator=g), torch.rand(WORLD * ROWS, 8, 7, generator=g)
    sets = torch.rand(WORLD * ROWS, 8, generator=g).argsort(dim=1)[:, :6].view(-1, 2, 3)
    part = [slice(r * ROWS, (r + 1) * ROWS) for r in range(WORLD)]
    fake = _FakeRanks()
    for r in range(WORLD):
        model.pretrain_losses(feats[part[r]], boxes[part[r]], sets[part[r]], 1, gather=fake.record(r))
    ranked = [model.pretrain_losses(feats[part[r]], boxes[part[r]], sets[part[r]], 1, gather=fake.gather(r))
              for r in range(WORLD)]
    full = model.pretrain_losses(feats, boxes, sets, 1)
    for key in ("loss", "mcm_loss", "set_loss", "mcm_top1", "set_top1"):
        mean = torch.stack([out[key] for out in ranked]).mean()
        assert mean.item() == pytest.approx(full[key].item(), rel=1e-5, abs=1e-6), key
    assert all(len(calls) == 3 for calls in fake.recorded)  # MCM targets, then SET b and a


def test_no_gather_means_this_process_keys_only():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    local = symmetric_info_nce(a, b, 0.2)
    assert torch.equal(symmetric_info_nce(a, b, 0.2, gather=None)[0], local[0])


def test_training_passes_the_gather_explicitly():
    assert TrainingRanks(RankEnv()).gather is None
    assert TrainingRanks(RankEnv(1, 2, 1)).gather is all_gather_keys
    seen = {}

    class Model(torch.nn.Module):
        def set_losses(self, *args, gather=None):
            seen["gather"] = gather
            return {}

    _PretrainObjective(Model(), all_gather_keys)(1, 2, 3, 4)
    assert seen["gather"] is all_gather_keys


def test_distributed_modules_hold_no_mutable_state():
    """Module-level names are functions, classes, modules, type aliases and constants: no switch."""
    for mod in (distributed, ranks, planning, negatives):
        assert not re.search(r"^\s*global\s", inspect.getsource(mod), re.M), mod.__name__
        for name, value in vars(mod).items():
            if name.startswith("__") or name == "annotations" or isinstance(value, types.ModuleType):
                continue
            constant = isinstance(value, (int, str)) and not isinstance(value, bool)
            assert constant or callable(value), (mod.__name__, name, value)  # no flags, lists, dicts
