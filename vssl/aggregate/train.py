"""Training loop of stage two: AdamW, linear warmup + per-step cosine, MCM + SET losses.

Repeatability: every epoch reseeds its own random streams (video order, set sampling,
dropout) from ``(seed, epoch)``, and checkpoints are taken at epoch boundaries, so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have (bit for bit
on CPU). The loss is watched for NaN/inf; on divergence the run stops with a clear message
and the last good checkpoint stays on disk.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vssl import __version__
from vssl.aggregate.checkpoint import METRICS, checkpoint_path, read_checkpoint, save_checkpoint
from vssl.aggregate.config import ScaleConfig
from vssl.aggregate.data import open_source
from vssl.aggregate.distributed import DataParallel
from vssl.device import autocast, resolve_device, resolve_precision
from vssl.aggregate.model import ScaleModel
from vssl.aggregate.progress import make_progress
from vssl.aggregate.sampling import sample_sets
from vssl.errors import VsslError
from vssl.features_store import STATUS_FAILED, FeatureStore

METRIC_FIELDS = ["epoch", "step", "loss", "mcm_loss", "set_loss", "mcm_top1", "set_top1", "lr",
                 "videos_per_s", "seconds"]
# Settings that may change on --resume without changing the trajectory's definition.
RESUMABLE_CHANGES = {"epochs", "device", "precision", "checkpoint_every", "max_memory_bytes"}


class TrainingDiverged(VsslError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


@dataclass
class RunSummary:
    """What a finished (or resumed-and-finished) training run reports."""

    run_dir: str
    epochs: int
    steps: int
    num_videos: int
    batch_size: int
    final: dict[str, float] = field(default_factory=dict)
    videos_per_s: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"
    resident: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def lr_at(step: int, total_steps: int, base_lr: float, warmup: float) -> float:
    """Learning rate at optimiser step ``step``: linear warmup over ``warmup`` of all steps, then a
    half-cosine to 0 (as the released training script, per step)."""
    warm = warmup * total_steps
    if warm > 0 and step <= warm:
        return base_lr * step / warm
    span = max(total_steps - warm, 1e-12)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step - warm, span) / span))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weight matrices only, none on biases, norms and tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith("bias") or name.endswith("_token") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: ScaleConfig) -> torch.optim.AdamW:
    """AdamW with the fused single-pass kernel (CPU and CUDA) where this torch has it: the update of
    10M parameters is memory-bound, and one pass instead of a dozen matters at small widths."""
    groups = param_groups(model, cfg.weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent 63-bit seed per (run seed, epoch, stream) so epochs never share random numbers."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def training_rows(store: FeatureStore, view_name: str, split: str | None) -> np.ndarray:
    """Videos to train on: done in the view, not failed, and in ``split`` (``auto``: 'train' when the
    store has one, else all videos; ``None``/'all': all)."""
    view = store.view(view_name)
    ok = view.done() & (store.video_status() != STATUS_FAILED)
    if split == "auto":
        split = "train" if "train" in set(store.splits().tolist()) else None
    if split not in (None, "all"):
        ok &= store.splits() == split
    rows = np.flatnonzero(ok)
    if rows.size < 2:
        raise VsslError(f"view '{view_name}' of {store.path} has {rows.size} finished videos"
                        f"{'' if split in (None, 'all') else f' in split {split!r}'}; SET needs at least 2 "
                        "(finish `vssl extract` or pass --split all)")
    return rows


class _Metrics:
    """Per-epoch sums kept on the device (no host sync per step)."""

    keys = ("loss", "mcm_loss", "set_loss", "mcm_top1", "set_top1")

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(self.keys), dtype=torch.float64, device=device)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.count = 0

    def add(self, out: dict[str, torch.Tensor]) -> None:
        vals = torch.stack([out[k].detach().double() for k in self.keys])
        self.sums += vals
        self.bad |= ~torch.isfinite(out["loss"].detach())
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in zip(self.keys, self.sums.tolist())}


def _write_metrics(run_dir: Path, rows: list[dict], keep_until_epoch: int | None) -> None:
    """Append ``rows`` to metrics.csv; on resume first drop rows past the resumed epoch."""
    path = run_dir / METRICS
    old: list[dict] = []
    if keep_until_epoch is not None and path.is_file():
        with open(path, newline="") as fh:
            old = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= keep_until_epoch]
    if keep_until_epoch is not None or not path.is_file():
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(old)
    with open(path, "a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=METRIC_FIELDS).writerows(rows)


def train(store_path: str | Path, view: str, out_dir: str | Path, cfg: ScaleConfig | None = None,
          resume: bool = False, *, split: str | None = "auto", quiet: bool = False,
          log: Callable[[str], None] | None = None) -> RunSummary:
    """Train the SCALE predictor on ``view`` of the store and write ``out_dir``.

    ``out_dir`` receives ``checkpoint.pt`` (every ``cfg.checkpoint_every`` epochs and at the end)
    and ``metrics.csv`` (one row per epoch). ``resume=True`` continues from the checkpoint there.
    """
    cfg = cfg or ScaleConfig()
    par = DataParallel()  # ranks of a torchrun launch (vssl.aggregate.distributed); identity for one process
    log = (log or (lambda msg: None)) if par.is_main else (lambda msg: None)
    run_dir = Path(out_dir)
    start_epoch, step, state = 0, 0, None
    if checkpoint_path(run_dir).is_file():
        if not resume:
            raise VsslError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        state = read_checkpoint(run_dir)
        saved = ScaleConfig.from_dict(state["config"]).to_dict()
        diff = sorted(k for k, v in cfg.to_dict().items() if saved[k] != v and k not in RESUMABLE_CHANGES)
        if diff:
            raise VsslError(f"--resume with settings that differ from the run in {run_dir}: {', '.join(diff)}; "
                            "resume with the original settings or start a new --out")
        start_epoch, step = int(state["epoch"]), int(state["step"])
    elif resume:
        log(f"no checkpoint in {run_dir} yet; starting a new run")

    store = FeatureStore.open(store_path)
    the_view = store.view(view)
    rows = training_rows(store, view, split)
    if state is not None:
        was = state["meta"]
        now = {"view": view, "num_videos": int(rows.size), "in_dim": the_view.dim}
        changed = [f"{k} {was.get(k)!r} -> {v!r}" for k, v in now.items() if was.get(k) != v]
        if was.get("world_size", 1) != par.world:  # another global batch: another trajectory
            changed.append(f"ranks {was.get('world_size', 1)} -> {par.world}")
        if changed:
            raise VsslError(f"the run in {run_dir} was trained on other data ({'; '.join(changed)}); "
                            "resume it on the same store and view, or start a new --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    par.check_same_start(run_dir, start_epoch)
    set_size = cfg.resolve_set_size(the_view.num_clips)
    num_masked = cfg.num_masked(set_size)
    device = par.device(resolve_device(cfg.device))
    precision = resolve_precision(cfg.precision, device)
    batch = min(cfg.batch_size, int(rows.size) // par.world)  # per rank
    global_batch = batch * par.world
    steps_per_epoch = int(rows.size) // global_batch  # drop_last, as the released code
    total_steps = steps_per_epoch * cfg.epochs
    meta = {"store": str(Path(store_path).resolve()), "view": view, "backbone": store.backbone.name,
            "backbone_sha256": store.backbone.checkpoint_sha256, "in_dim": the_view.dim,
            "num_clips": the_view.num_clips, "set_size": set_size, "num_masked": num_masked,
            "num_videos": int(rows.size), "split": split, "batch_size": batch, "world_size": par.world,
            "epochs_total": cfg.epochs, "vssl_version": __version__}
    log(f"training on {rows.size} videos of view '{view}' (K={the_view.num_clips}, D={the_view.dim}), "
        f"sets of {set_size} with {num_masked} masked, batch {batch}"
        f"{f' x {par.world} ranks' if par.world > 1 else ''}, "
        f"{device} {precision}")

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    model = ScaleModel(cfg, the_view.dim).to(device)
    opt = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])

    last_saved = start_epoch if state is not None else None
    objective = par.objective(model)  # DDP across ranks

    def checkpoint(epoch: int) -> None:
        nonlocal last_saved
        last_saved = epoch
        if par.is_main:  # one writer under torchrun
            save_checkpoint(run_dir, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                      "scaler": scaler.state_dict(), "epoch": epoch, "step": step,
                                      "config": cfg.to_dict(), "meta": meta})
        par.barrier()  # no rank runs ahead of the checkpoint it would resume from

    summary = RunSummary(str(run_dir), start_epoch, step, int(rows.size), batch, device=str(device),
                         precision=precision)
    if start_epoch >= cfg.epochs:
        log(f"{run_dir} already trained {start_epoch} epochs; nothing to do")
        return summary

    with make_progress(quiet or not par.is_main) as progress:
        load_task = progress.add_task("loading features", total=int(rows.size), info="")
        source = open_source(the_view, rows, device, cfg.max_memory_bytes,
                             progress=lambda n: progress.advance(load_task, n))
        progress.remove_task(load_task)
        summary.resident = source.resident
        if not source.resident:
            log("view does not fit in memory: reading batches from the store")
        task = progress.add_task("training", total=total_steps, completed=step, info="")
        keep = start_epoch if state is not None else None
        try:
            for epoch in range(start_epoch, cfg.epochs):
                model.train()
                torch.manual_seed(par.seed(_epoch_seed(cfg.seed, epoch, 0)))  # dropout (CPU and CUDA)
                order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(
                    _epoch_seed(cfg.seed, epoch, 1)))
                if source.resident:
                    order = order.to(device)  # batches are then gathered without host round trips
                set_gen = torch.Generator(device=device).manual_seed(_epoch_seed(cfg.seed, epoch, 2))
                metrics = _Metrics(device)
                t0 = time.perf_counter()
                batches = [par.local(order[i * global_batch:(i + 1) * global_batch])  # this rank's share
                           for i in range(steps_per_epoch)]
                source.prefetch(batches[0])
                for i, positions in enumerate(batches):
                    feats, boxes = source.get(positions)
                    if i + 1 < len(batches):
                        source.prefetch(batches[i + 1])
                    sets = par.local(sample_sets(len(positions) * par.world, the_view.num_clips, set_size,
                                                 generator=set_gen, device=device))
                    lr = lr_at(step, total_steps, cfg.lr, cfg.warmup)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    with autocast(device, precision):
                        out = objective(feats, boxes, sets, num_masked)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(out["loss"]).backward()
                    scaler.step(opt)
                    scaler.update()
                    step += 1
                    metrics.add(out)
                    # One host sync per step on CPU (the step dwarfs it); every 20 steps on CUDA.
                    if device.type != "cuda" or i % 20 == 19 or i + 1 == len(batches):
                        if par.any(metrics.bad):
                            raise TrainingDiverged(
                                f"loss became NaN/inf at epoch {epoch + 1}, step {step}; "
                                + (f"the last good checkpoint (epoch {last_saved}) is kept in "
                                   f"{checkpoint_path(run_dir)}" if last_saved is not None
                                   else "no checkpoint was written yet")
                                + "; lower --lr or use --precision fp32, then --resume")
                        m = metrics.means()
                        progress.update(task, completed=step, info=f"epoch {epoch + 1}/{cfg.epochs} loss {m['loss']:.3f} "
                                        f"mcm {m['mcm_loss']:.3f} set {m['set_loss']:.3f}")
                seconds = time.perf_counter() - t0
                par.mean(metrics.sums)  # every rank's share of the global batch
                m = metrics.means()
                row = {"epoch": epoch + 1, "step": step, **{k: f"{v:.6g}" for k, v in m.items()},
                       "lr": f"{lr:.6g}", "videos_per_s": f"{steps_per_epoch * global_batch / seconds:.1f}",
                       "seconds": f"{seconds:.2f}"}
                if par.is_main:
                    _write_metrics(run_dir, [row], keep)
                keep = None
                summary.final, summary.epochs, summary.steps = m, epoch + 1, step
                summary.videos_per_s = steps_per_epoch * global_batch / seconds
                if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                    checkpoint(epoch + 1)
        finally:
            source.close()
    par.barrier()  # when any rank returns, rank 0's checkpoint and metrics are on disk
    return summary
