"""Process bodies for tests/distributed/test_distributed.py: each runs as one rank of a 2-process gloo group.

They set the environment torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and
then call the library exactly as the CLI does, so the code under test discovers its rank itself.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import torch
import torch.nn.functional as F


def as_rank(rank: int, world: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), VSSL_DIST_TIMEOUT_S="60")
    torch.set_num_threads(1)


def small_cfg(**kw):
    from vssl.aggregate import ScaleConfig

    base = dict(width=32, layers=1, heads=2, mlp_ratio=2.0, dropout=0.0, proj_dim=16, pred_hidden=32,
                target_hidden=32, epochs=2, batch_size=8, lr=1e-3, warmup=0.0, seed=3, device="cpu",
                precision="fp32", checkpoint_every=1)
    base.update(kw)
    return ScaleConfig(**base)


def reference_symmetric_loss(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 3 on the whole batch, written out independently of vssl.aggregate.losses."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / tau
    target = torch.arange(a.shape[0])
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def train_worker(rank: int, world: int, port: int, store: str, runs: str) -> None:
    """Gradient check of the gathered loss, then a 2-epoch DDP run, then 1 epoch + --resume to 2."""
    as_rank(rank, world, port)
    import vssl.aggregate.training as train_mod
    from vssl.aggregate.losses import symmetric_info_nce
    from vssl.distributed import all_gather_keys, process_group

    original = train_mod.save_checkpoint

    def spy(run_dir, state):  # who writes checkpoints
        with open(Path(runs) / f"saved-by-rank{rank}", "a") as fh:
            fh.write(f"{run_dir}\n")
        return original(run_dir, state)

    train_mod.save_checkpoint = spy
    with process_group() as env:
        assert env.world_size == world and env.rank == rank
        # gathered symmetric InfoNCE: grads of this rank's rows = world x grads of the full-batch loss
        g = torch.Generator().manual_seed(0)
        full_a, full_b = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
        rows = slice(rank * 4, rank * 4 + 4)
        a, b = full_a[rows].clone().requires_grad_(), full_b[rows].clone().requires_grad_()
        loss, _ = symmetric_info_nce(a, b, 0.2, gather=all_gather_keys)
        loss.backward()
        ref_a, ref_b = full_a.clone().requires_grad_(), full_b.clone().requires_grad_()
        ref = reference_symmetric_loss(ref_a, ref_b, 0.2)
        ref.backward()
        losses = [torch.zeros(()) for _ in range(world)]
        torch.distributed.all_gather(losses, loss.detach())
        check = {"mean_loss": float(torch.stack(losses).mean()), "ref_loss": float(ref.detach()),
                 "grad_err": float(max((a.grad - world * ref_a.grad[rows]).abs().max(),
                                       (b.grad - world * ref_b.grad[rows]).abs().max()))}
        check.update(bf16_gather_errors(rank, world))
        with open(Path(runs) / f"gradcheck-rank{rank}.json", "w") as fh:
            json.dump(check, fh)

        train_mod.train(store, "v", Path(runs) / "ddp", small_cfg(), quiet=True)
        # both ranks stop in epoch 2 (a crash after the epoch-1 checkpoint), then --resume
        from vssl.optim import lr_at

        def stop_in_epoch_2(step, *args):  # one step per epoch: step 1 opens epoch 2
            if step == 1:
                raise Stopped
            return lr_at(step, *args)

        try:
            train_mod.train(store, "v", Path(runs) / "resumed", small_cfg(), quiet=True, schedule=stop_in_epoch_2)
        except Stopped:
            pass
        train_mod.train(store, "v", Path(runs) / "resumed", small_cfg(), resume=True, quiet=True)


def bf16_gather_errors(rank: int, world: int) -> dict:
    """Under bf16 autocast, this rank's input gradient vs one process's on the whole batch (mean relative
    error): today's symmetric loss across ranks, and the one before the fix (a and b cast to float per
    use and gathered in bf16, so their gradients met in bf16, rounded twice)."""
    from vssl.aggregate import losses
    from vssl.distributed import all_gather_keys
    from vssl.distributed.negatives import _GatherWithGrad

    def before_fix(a, b, temperature, *, gather):
        def bf16_gather(keys):
            return _GatherWithGrad.apply(keys), torch.distributed.get_rank() * keys.shape[0]
        b_all, offset = bf16_gather(b)
        a_all, _ = bf16_gather(a)
        target = torch.arange(a.shape[0]) + offset
        ab = losses._scaled_logits(a, b_all, temperature).float()
        ba = losses._scaled_logits(b, a_all, temperature).float()
        return 0.5 * (F.cross_entropy(ab, target) + F.cross_entropy(ba, target)), None

    g = torch.Generator().manual_seed(1)
    x, y, w = torch.randn(64, 32, generator=g), torch.randn(64, 32, generator=g), torch.randn(32, 16, generator=g)
    rows = slice(rank * 64 // world, (rank + 1) * 64 // world)

    def grad(loss_fn, xs, ys, gather):
        xs = xs.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = loss_fn(xs @ w, ys @ w, 0.1, gather=gather)  # bf16 keys, as a bf16 model's
        loss.backward()
        return xs.grad

    ref = world * grad(losses.symmetric_info_nce, x, y, None)[rows]
    return {f"bf16_err_{name}": float((grad(fn, x[rows], y[rows], all_gather_keys) - ref).abs().mean() / ref.abs().mean())
            for name, fn in (("now", losses.symmetric_info_nce), ("before", before_fix))}


class Stopped(Exception):
    """Stands in for a crash."""


def extract_worker(rank: int, world: int, port: int, videos: str, out: str, result: str, kill_rank: int) -> None:
    """One rank of a distributed extraction; ``kill_rank`` SIGKILLs itself after its first chunk write."""
    as_rank(rank, world, port)
    from vssl.extract.distributed import extract_shared
    from vssl.features_store import FeatureStore

    if rank == kill_rank:
        original = FeatureStore.write_videos

        def write_then_die(self, *args, **kwargs):
            original(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        FeatureStore.write_videos = write_then_die
    summary, problems = extract_shared(videos, out, **extract_kwargs())
    with open(f"{result}.rank{rank}.json", "w") as fh:
        json.dump({"summary": summary.to_dict(), "problems": problems}, fh)


def extract_kwargs() -> dict:
    return dict(views="random:3,uniform:2x2", chunk_videos=2, batch_size=5, frames=4, size=32, seed=5,
                progress=False)


def ragged_train_worker(rank: int, world: int, port: int, store: str, runs: str) -> None:
    """A 2-epoch DDP run on a ragged view (sets of different sizes on each rank)."""
    as_rank(rank, world, port)
    from vssl.aggregate import train
    from vssl.distributed import process_group

    with process_group():
        train(store, "d", Path(runs) / "ddp", small_cfg(set_size=3, mask_mode="bernoulli"), quiet=True)
