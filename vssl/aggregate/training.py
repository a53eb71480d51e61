"""Training loop of stage two: AdamW, linear warmup + per-step cosine, MCM + SET losses.

Repeatability: every epoch reseeds its own random streams (video order, set sampling,
dropout) from ``(seed, epoch)``, and checkpoints are taken at epoch boundaries, so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have (bit for bit
on CPU). The loss is watched for NaN/inf; on divergence the run stops with a clear message
and the last good checkpoint stays on disk.

:func:`train` reads as its steps: resolve the run (new, or resumed from its checkpoint:
:mod:`vssl.aggregate.resume`), load the data (:func:`training_videos`), plan the batches
(:mod:`vssl.aggregate.plan`), build the model and optimiser (:func:`_build`), then per epoch
:meth:`_Trainer.train_epoch` and :meth:`_Trainer.end_epoch` (metrics row, checkpoint), and
return the summary.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import numpy as np
import torch

from vssl.aggregate.checkpoint import checkpoint_path, save_checkpoint
from vssl.aggregate.config import ScaleConfig
from vssl.aggregate.data import BatchFeed, RaggedBatch, open_feed
from vssl.aggregate.distributed import TrainingRanks
from vssl.aggregate.metrics import EpochMetrics, StepValues, progress_line, write_metrics
from vssl.aggregate.masking import describe, draw_masks, draw_ragged_masks
from vssl.aggregate.model import ScaleModel
from vssl.aggregate.optim import lr_at, make_optimizer
from vssl.aggregate.plan import Plan, plan_run, run_meta
from vssl.progress import make_progress
from vssl.aggregate.resume import Resume, check_same_data, resume_point
from vssl.aggregate.sampling import sample_ragged_sets, sample_sets, set_lengths
from vssl.device import autocast, matmul_numerics
from vssl.errors import VsslError
from vssl.training_log import NoLog, TrainingLog, open_log, settings_text
from vssl.features_store import FeatureStore

__all__ = ["train", "RunSummary", "TrainingDiverged", "training_videos", "Schedule"]

#: the learning rate at an optimiser step: ``schedule(step, total_steps, base_lr, warmup)``
Schedule = Callable[[int, int, float, float], float]


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
    split: str = "all"  # the resolved split (never 'auto')
    trained_on_splits: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent 63-bit seed per (run seed, epoch, stream) so epochs never share random numbers."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def resolve_split(store: FeatureStore, split: str | None) -> str:
    """The split a run trains on, by name: ``auto`` is 'train' when the store has one, else 'all';
    ``None`` is 'all'."""
    if split == "auto":
        return "train" if "train" in set(store.splits().tolist()) else "all"
    return "all" if split is None else split


def training_videos(store: FeatureStore, view_name: str, split: str | None,
                    log: Callable[[str], None] | None = None) -> np.ndarray:
    """Videos to train on: done in the view, not failed, and in ``split`` (see :func:`resolve_split`).

    On a ragged view a video needs two clips (two disjoint non-empty sets); one-clip videos are
    left out of training, said in one line (they are still exported).
    """
    ok = store.usable(view_name)
    split = resolve_split(store, split)
    if split != "all":
        ok &= store.splits() == split
    view = store.view(view_name)
    if view.num_clips is None:
        short = ok & (view.counts() < 2)
        if short.any() and log is not None:
            log(f"{int(short.sum())} videos of view '{view_name}' have a single clip and cannot give two "
                "disjoint sets; they are left out of training")
        ok &= ~short
    videos = np.flatnonzero(ok)
    if videos.size < 2:
        raise VsslError(f"view '{view_name}' of {store.path} has {videos.size} finished videos"
                        f"{'' if split == 'all' else f' in split {split!r}'}; SET needs at least 2 "
                        "(finish `vssl extract` or pass --split all)")
    return videos


def _clips_per_video(view, videos: np.ndarray) -> str:
    """``K=16``, or a ragged view's range of clip counts for the log line."""
    if view.num_clips is not None:
        return f"K={view.num_clips}"
    counts = view.counts(videos)
    return f"{int(counts.min())}-{int(counts.max())} clips per video"


# ---------------------------------------------------------------- before the first step


def _build(cfg: ScaleConfig, in_dim: int, plan: Plan, state: dict[str, Any] | None
           ) -> tuple[ScaleModel, torch.optim.AdamW, torch.amp.GradScaler]:
    """The model (initialised from ``cfg.seed``), its optimiser and loss scaler, restored from ``state``."""
    device = plan.device
    torch.manual_seed(cfg.seed)
    model = ScaleModel(cfg, in_dim).to(device)
    opt = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=plan.precision == "fp16")
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    return model, opt, scaler


def _training_numerics(device: torch.device) -> ContextManager:
    """TF32 float32 products (and cuDNN convolutions) for the training steps on CUDA, as stage two
    has always trained there, with the caller's flags restored when training ends: they are
    process-wide, and a later k-NN, probe or user code in the same process must get the numerics it
    asked for. CPU training leaves them as they are."""
    return matmul_numerics(tf32=True) if device.type == "cuda" else contextlib.nullcontext()


# ---------------------------------------------------------------- epochs


class _Trainer:
    """A run's state across epochs (optimiser step, last checkpoint) and what one epoch does."""

    def __init__(self, cfg: ScaleConfig, par: TrainingRanks, plan: Plan, run_dir: Path, meta: dict[str, Any],
                 built: tuple[ScaleModel, torch.optim.AdamW, torch.amp.GradScaler], resumed: Resume,
                 schedule: Schedule = lr_at, log: TrainingLog | None = None) -> None:
        self.cfg, self.par, self.plan, self.run_dir, self.meta = cfg, par, plan, run_dir, meta
        self.schedule = schedule
        self.log = log or NoLog()       # TensorBoard (--log-dir); rank 0's
        self.step_values = StepValues(self.log)
        self.model, self.opt, self.scaler = built
        self.objective = par.objective(self.model)  # model.set_losses, DDP-wrapped across ranks
        self.step = resumed.step
        self.last_saved = resumed.epoch if resumed.state is not None else None
        self.keep = resumed.epoch if resumed.state is not None else None  # metrics rows a resume keeps

    def _epoch_streams(self, epoch: int, num_videos: int, resident: bool) -> tuple[torch.Tensor, torch.Generator]:
        """Reseed the epoch's random streams from (seed, epoch): dropout, video order, set sampling."""
        device = self.plan.device
        torch.manual_seed(self.par.seed(_epoch_seed(self.cfg.seed, epoch, 0)))  # dropout (CPU and CUDA)
        order = torch.randperm(num_videos, generator=torch.Generator().manual_seed(
            _epoch_seed(self.cfg.seed, epoch, 1)))
        if resident:
            order = order.to(device)  # batches are then gathered without host round trips
        return order, torch.Generator(device=device).manual_seed(_epoch_seed(self.cfg.seed, epoch, 2))

    def train_epoch(self, epoch: int, feed: BatchFeed, num_clips: int, progress: Any, task: Any
                    ) -> tuple[EpochMetrics, float, float]:
        """One pass over the videos in global batches, this rank training on its share of each.

        Returns the epoch's metrics (this rank's sums), the last learning rate and the seconds taken.
        """
        cfg, par, plan = self.cfg, self.par, self.plan
        self.model.train()
        # a ragged view's set sizes come from its clip counts, read on the host by position
        order, set_gen = self._epoch_streams(epoch, len(feed), feed.resident and not feed.ragged)
        metrics = EpochMetrics(plan.device)
        t0 = time.perf_counter()
        global_batches = [order[i * plan.global_batch:(i + 1) * plan.global_batch]
                          for i in range(plan.steps_per_epoch)]
        batches = [par.local(g) for g in global_batches]  # this rank's share
        feed.prefetch(batches[0])
        for i, positions in enumerate(batches):
            batch = feed.get(positions)
            if i + 1 < len(batches):
                feed.prefetch(batches[i + 1])
            inputs = self._sets(batch, feed.counts_of(global_batches[i]), len(global_batches[i]), num_clips,
                                set_gen)
            lr = self.schedule(self.step, plan.total_steps, cfg.lr, cfg.warmup)
            for group in self.opt.param_groups:
                group["lr"] = lr
            with autocast(plan.device, plan.precision):
                out = self.objective(*inputs)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(out["loss"]).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.step_values.add(self.step, out, lr)
            self.step += 1
            metrics.add(out)
            # One host sync per step on CPU (the step dwarfs it); every 20 steps on CUDA.
            if plan.device.type != "cuda" or i % 20 == 19 or i + 1 == len(batches):
                self._stop_if_diverged(metrics, epoch)
                self.step_values.flush()
                m = metrics.means()
                progress.update(task, completed=self.step, info=f"epoch {epoch + 1}/{cfg.epochs} {progress_line(m)}")
        return metrics, lr, time.perf_counter() - t0

    def _sets(self, batch: RaggedBatch, counts: np.ndarray | None, global_batch: int, num_clips: int | None,
              set_gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int | torch.Tensor]:
        """This rank's (clips, boxes, valid, masks) for :meth:`ScaleModel.set_losses`.

        Sets, then masks, are drawn for the global batch from the set stream, then this rank's slice
        is taken, so they depend on (seed, epoch, step) only, whatever the ranks. ``counts`` (host):
        each video's clips; None when every video holds the view's ``num_clips``, where every set is
        full (``valid`` None) and a ``fixed`` mask is a count: static shapes, no random numbers for it.
        """
        plan, par, cfg = self.plan, self.par, self.cfg
        if counts is None:
            sets = sample_sets(global_batch, num_clips, plan.set_size, generator=set_gen, device=plan.device)
            valid = None
            masks = (plan.num_masked if plan.num_masked is not None else
                     draw_masks(cfg.mask_mode, cfg.mask_ratio, global_batch, plan.set_size, generator=set_gen,
                                device=plan.device))
        else:
            sets, valid = sample_ragged_sets(torch.from_numpy(counts), plan.set_size, generator=set_gen,
                                             device=plan.device)
            lengths = torch.from_numpy(set_lengths(counts, plan.set_size))[:, None].expand(-1, 2)
            masks = (draw_ragged_masks(cfg.mask_mode, cfg.mask_ratio, lengths, plan.set_size,
                                       generator=set_gen, device=plan.device) if cfg.masking
                     else torch.zeros_like(valid))
        sets = par.local(sets)
        valid = None if valid is None else par.local(valid)
        masks = par.local(masks) if isinstance(masks, torch.Tensor) else masks
        clips, boxes = batch.sets(sets, valid)
        return clips, boxes, valid, masks

    def _stop_if_diverged(self, metrics: EpochMetrics, epoch: int) -> None:
        """Every rank stops together when any rank's loss became NaN/inf; the last good checkpoint stays."""
        if self.par.any(metrics.bad):
            raise TrainingDiverged(
                f"loss became NaN/inf at epoch {epoch + 1}, step {self.step}; "
                + (f"the last good checkpoint (epoch {self.last_saved}) is kept in "
                   f"{checkpoint_path(self.run_dir)}" if self.last_saved is not None
                   else "no checkpoint was written yet")
                + "; lower --lr or use --precision fp32, then --resume")

    def end_epoch(self, epoch: int, metrics: EpochMetrics, lr: float, seconds: float, summary: RunSummary) -> None:
        """The epoch's metrics row (means over ranks; rank 0 writes), the summary, and a checkpoint when due."""
        plan = self.plan
        self.par.mean(metrics.sums)  # every rank's share of the global batch
        m = metrics.means()
        row = {"epoch": epoch + 1, "step": self.step, **{k: f"{v:.6g}" for k, v in m.items()},
               "lr": f"{lr:.6g}", "videos_per_s": f"{summary_videos_per_s(plan, seconds):.1f}",
               "seconds": f"{seconds:.2f}"}
        if self.par.is_main:
            write_metrics(self.run_dir, [row], self.keep)
            # at the epoch's last step (0-based, as train/*): a resumed run purges from the step after it
            self.log.scalars(self.step - 1, {**{f"epoch/{k}": v for k, v in m.items()}, "epoch/lr": lr,
                                         "epoch/videos_per_s": summary_videos_per_s(plan, seconds)})
        self.keep = None
        summary.final, summary.epochs, summary.steps = m, epoch + 1, self.step
        summary.videos_per_s = summary_videos_per_s(plan, seconds)
        if (epoch + 1) % self.cfg.checkpoint_every == 0 or epoch + 1 == self.cfg.epochs:
            self.checkpoint(epoch + 1)

    def checkpoint(self, epoch: int) -> None:
        """Save model, optimiser, scaler, position, config and meta (rank 0), then wait for every rank."""
        self.last_saved = epoch
        if self.par.is_main:  # one writer under torchrun
            save_checkpoint(self.run_dir, {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                                           "scaler": self.scaler.state_dict(), "epoch": epoch, "step": self.step,
                                           "config": self.cfg.to_dict(), "meta": self.meta})
        self.par.barrier()  # no rank runs ahead of the checkpoint it would resume from


def summary_videos_per_s(plan: Plan, seconds: float) -> float:
    """Videos trained on per second in an epoch of ``seconds`` (every rank's share together)."""
    return plan.steps_per_epoch * plan.global_batch / seconds


# ---------------------------------------------------------------- the run


def train(store_path: str | Path, view: str, out_dir: str | Path, cfg: ScaleConfig | None = None,
          resume: bool = False, *, split: str | None = "auto", quiet: bool = False,
          log: Callable[[str], None] | None = None, schedule: Schedule = lr_at,
          log_dir: str | Path | None = None) -> RunSummary:
    """Train the SCALE predictor on ``view`` of the store and write ``out_dir``.

    ``out_dir`` receives ``checkpoint.pt`` (every ``cfg.checkpoint_every`` epochs and at the end)
    and ``metrics.csv`` (one row per epoch). ``resume=True`` continues from the checkpoint there.
    ``schedule``: the learning rate per step (default :func:`vssl.optim.lr_at`, warmup + cosine, as
    released); a caller may pass its own, e.g. one that stops a run at a given step.
    ``log_dir``: TensorBoard event files there too (:mod:`vssl.training_log`; rank 0 writes): each
    step's losses, contrastive top-1 and learning rate, each epoch's means, the settings as text.
    """
    cfg = cfg or ScaleConfig()
    par = TrainingRanks()  # ranks of a torchrun launch (vssl.aggregate.distributed); identity for one process
    log = (log or (lambda msg: None)) if par.is_main else (lambda msg: None)
    run_dir = Path(out_dir)
    resumed = resume_point(run_dir, cfg, resume, log, par.world)
    # a resumed run's events replace those an interrupted run wrote past its checkpoint
    events = open_log(log_dir, write=par.is_main,
                      purge_step=resumed.step if resumed.state is not None else None)

    store = FeatureStore.open(store_path)
    the_view = store.view(view)
    videos = training_videos(store, view, split, log)
    num_videos = int(videos.size)
    if resumed.state is not None:
        check_same_data(resumed.state, run_dir, view, the_view, num_videos, par.world)
    run_dir.mkdir(parents=True, exist_ok=True)
    par.check_same_start(run_dir, resumed.epoch)

    plan = plan_run(cfg, the_view.num_clips, num_videos, par)
    meta = run_meta(store_path, store, view, the_view, plan, videos, resolve_split(store, split), par.world, cfg)
    log(f"training on {videos.size} videos of split '{meta['split']}' (splits {', '.join(meta['trained_on_splits'])}) "
        f"of view '{view}' ({_clips_per_video(the_view, videos)}, D={the_view.dim}), "
        f"sets of {'at most ' if plan.ragged else ''}{plan.set_size} with {describe(cfg.mask_mode, cfg.mask_ratio, plan.set_size) if cfg.masking else '0 masked'}"
        f", batch {plan.batch}"
        f"{f' x {par.world} ranks' if par.world > 1 else ''}, "
        f"{plan.device} {plan.precision}")
    trainer = _Trainer(cfg, par, plan, run_dir, meta, _build(cfg, the_view.dim, plan, resumed.state), resumed,
                       schedule, events)

    summary = RunSummary(str(run_dir), resumed.epoch, resumed.step, num_videos, plan.batch, device=str(plan.device),
                         precision=plan.precision, split=meta["split"], trained_on_splits=meta["trained_on_splits"])
    if resumed.epoch >= cfg.epochs:
        log(f"{run_dir} already trained {resumed.epoch} epochs; nothing to do")
        return summary

    events.text("settings", settings_text({"config": cfg.to_dict(), "view": view, "split": meta["split"],
                                           "store": str(store_path), "run": str(run_dir)}))

    with make_progress(quiet or not par.is_main) as progress, _training_numerics(plan.device):
        load_task = progress.add_task("loading features", total=num_videos, info="")
        feed = open_feed(the_view, videos, plan.device, cfg.max_memory_bytes,
                             progress=lambda n: progress.advance(load_task, n), box_encoding=cfg.box_encoding)
        progress.remove_task(load_task)
        summary.resident = feed.resident
        if not feed.resident:
            log("view does not fit in memory: reading batches from the store")
        task = progress.add_task("training", total=plan.total_steps, completed=trainer.step, info="")
        try:
            for epoch in range(resumed.epoch, cfg.epochs):
                metrics, lr, seconds = trainer.train_epoch(epoch, feed, the_view.num_clips, progress, task)
                trainer.end_epoch(epoch, metrics, lr, seconds, summary)
        finally:
            feed.close()
            events.close()
    par.barrier()  # when any rank returns, rank 0's checkpoint and metrics are on disk
    return summary
