"""Supervised training of probe heads with model selection on held-out parts of the training split.

Every grid point (learning rate x weight decay) is a separate head; all heads of a grid see
the same minibatches and are trained side by side in one pass over the data (the data
gather and, for linear heads, the matrix product are shared). Batch size and optimizer change
the minibatches or the update rule, so each of their combinations is a pass of its own. After
each epoch every head is scored on the held-out videos; the best (batch size, optimizer, lr,
wd, epoch) is then refit on the whole training split with the same schedule, stopped at that
epoch. The test split takes no part in any choice (unlike the official SCALE eval.py, which
reports the best test epoch).

The budget is counted in optimizer steps, not only in epochs: a head gets ``epochs`` passes over
its training clips but never fewer than ``min_steps`` steps. Counted in epochs alone, a few
hundred training videos get a few dozen steps and a head stops far from convergence; so on a
small split the minibatch shrinks (never below :data:`MIN_BATCH`) until the epochs hold
``min_steps`` steps, and epochs are added only past that floor. On a large split the floor is
already met and nothing changes. Selection can score on at least ``holdout_min`` held-out
videos, drawn as several disjoint parts in turn where one ``holdout`` part holds fewer
(:func:`~vssl.probe.lowshot.selection_folds`): a couple of dozen held-out videos select by noise.
Each part is one more training of every head, so the trained heads default to one part (0) and
the solved linear heads, for which a part costs a few solves, to 100 videos.

Optimisation follows released SCALE (``src/train.py`` ``get_optimizer``, which ``src/eval.py``
uses for its probes): a linear warm-up over ``warmup`` (released: 5%) of the steps, then a
half-cosine to 0, per step; no weight decay on biases, norm weights and learned tokens
(:mod:`vssl.optim`, shared with stage two). Unlike eval.py, the probe's own settings build its
optimiser (eval.py passes the *pretraining* arguments, so its cosine spans the 200 pretraining
epochs while the probe trains 60).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from vssl.device import PRECISION_CHOICES, autocast, resolve_precision
from vssl.errors import VsslError
from vssl.optim import lr_at, param_groups
from vssl.training_log import NoLog, TrainingLog, current_log, settings_text

from .common import resolve_device, seed_everything
from .lowshot import selection_folds
from .task import task_of

#: ``--precision`` values of the trained probes: the toolkit's, less fp16 (no loss scaling here)
PROBE_PRECISIONS = tuple(p for p in PRECISION_CHOICES if p != "fp16")
#: the smallest minibatch the step floor shrinks a batch to (samples: clips, or videos for set probes)
MIN_BATCH = 16


@dataclass(frozen=True)
class TrainConfig:
    """Optimization settings shared by the trained probes; each probe subclasses it with its defaults."""

    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    weight_decays: tuple[float, ...] = (0.0, 1e-4)
    epochs: int = 20
    batch_size: int = 1024
    optimizer: str = "adamw"          # adamw | sgd (momentum 0.9)
    warmup: float = 0.05              # fraction of the steps of linear warm-up (released: 5%)
    batch_sizes: tuple[int, ...] = ()  # when given, searched instead of batch_size
    optimizers: tuple[str, ...] = ()   # when given, searched instead of optimizer
    holdout: float = 0.1              # fraction of the training split used to select grid point + epoch
    holdout_min: int = 0              # videos selection scores on at least (several held-out parts if needed)
    min_steps: int = 500              # optimizer steps a head takes at least, however small the split
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"           # auto (bf16 where the hardware is fast at it, else fp32) | bf16 | fp32

    def grid(self) -> list[tuple[float, float]]:
        """The (lr, wd) points trained side by side in one pass."""
        return [(lr, wd) for lr in self.lrs for wd in self.weight_decays]

    def passes(self) -> list["TrainConfig"]:
        """One config per (batch size, optimizer) searched: each is a pass of its own."""
        return [replace(self, batch_size=b, optimizer=o, batch_sizes=(), optimizers=())
                for b in (self.batch_sizes or (self.batch_size,)) for o in (self.optimizers or (self.optimizer,))]

    def params(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def candidates(self) -> int:
        """How many settings selection chooses among (besides the epoch)."""
        return len(self.grid()) * len(self.passes())

    def candidate_flags(self) -> str:
        """The flags that fix the one candidate of a run without selection (``--holdout 0``)."""
        return "--lr, --weight-decay, --batch-size and --optimizer"

    def validate(self) -> None:
        if not self.lrs or not self.weight_decays:
            raise VsslError("the hyper-parameter grid is empty; give at least one --lr and one --weight-decay")
        if self.precision not in PROBE_PRECISIONS:
            raise VsslError(f"--precision {self.precision}: use one of {', '.join(PROBE_PRECISIONS)}")
        for optimizer in (self.optimizer, *self.optimizers):
            if optimizer not in ("adamw", "sgd"):
                raise VsslError(f"optimizer {optimizer!r} is unknown; use adamw or sgd")
        if self.epochs < 1 or min((self.batch_size, *self.batch_sizes)) < 1:
            raise VsslError("--epochs and --batch-size must be at least 1")
        if not 0.0 <= self.warmup < 1.0:
            raise VsslError(f"--warmup {self.warmup}: use a fraction of the steps in [0, 1), e.g. 0.05")
        if not 0.0 <= self.holdout < 1.0:
            raise VsslError(f"--holdout {self.holdout}: use a fraction in [0, 1), e.g. 0.1")
        if self.holdout_min < 0 or self.min_steps < 0:
            raise VsslError("--holdout-min and --min-steps must be at least 0")
        if self.holdout == 0.0 and self.candidates() > 1:
            raise VsslError(f"--holdout 0 leaves nothing to select the grid on; fix one {self.candidate_flags()}")


class Inputs(Protocol):
    """How a probe's samples are batched for training and scored per video."""

    labels: np.ndarray

    def batches(self, positions: np.ndarray, batch_size: int, gen: torch.Generator,
                device: torch.device) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]: ...

    def predict(self, model: nn.Module, positions: np.ndarray, device: torch.device,
                precision: str = "fp32") -> np.ndarray: ...


class GridHeads(nn.Module):
    """``G`` independent heads behind one shared, parameter-free ``pre`` module -> logits [B, G, C]."""

    def __init__(self, heads: Sequence[nn.Module], pre: nn.Module | None = None):
        super().__init__()
        self.pre = pre if pre is not None else nn.Identity()
        self.heads = nn.ModuleList(heads)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) == 1:                      # clip-level heads: one feature tensor
            inputs = (self.pre(inputs[0]),)
        return torch.stack([h(*inputs) for h in self.heads], dim=1)


@dataclass
class FitResult:
    """The refit model, what was chosen, and the held-out score that chose it."""

    model: nn.Module
    lr: float | None                                             # None: a solved (not trained) head
    weight_decay: float | None
    epochs: int | None
    val_score: float | None                                      # held-out score: see ``val_metric``
    precision: str = "fp32"                                      # as resolved; predict with the same
    history: list[list[float]] = field(default_factory=list)   # [epoch][grid point] held-out score
    batch_size: int | None = None
    optimizer: str | None = None
    val_metric: str = "top1"                                     # top1 | mAP | -mse (Task.selection)
    held_out: int = 0                                            # videos the selection scored on
    solver: dict | None = None                                   # a solved head: its solver's record

    @property
    def val_top1(self) -> float | None:
        """The former name of :attr:`val_score`, kept for old callers: it holds mAP or -MSE too."""
        warnings.warn("FitResult.val_top1 is deprecated: use val_score (see val_metric)", DeprecationWarning,
                      stacklevel=2)
        return self.val_score

    def params(self) -> dict:
        chosen = {"lr": self.lr, "weight_decay": self.weight_decay, "epochs": self.epochs,
                  "batch_size": self.batch_size, "optimizer": self.optimizer} if self.solver is None else self.solver
        return {**chosen, "val_score": self.val_score, "val_metric": self.val_metric, "held_out": self.held_out,
                "precision": self.precision}


def probe_precision(precision: str, device: torch.device) -> str:
    """The toolkit's choice (:func:`vssl.device.resolve_precision`), but fp32 where ``auto``
    would pick fp16: probe training has no loss scaling. So ``auto`` is bf16 on a CUDA GPU that
    has it or a CPU with native bf16 GEMMs (measured 1.5x faster for linear heads, 1.8x for the
    transformer probe on AVX512-BF16), else fp32."""
    resolved = resolve_precision(precision, device)
    return "fp32" if resolved == "fp16" else resolved


def fit(inputs: Inputs, positions: np.ndarray, build: Callable[[list[tuple[float, float]]], GridHeads],
        cfg: TrainConfig, advance: Callable[[int], None] | None = None) -> FitResult:
    """Select (lr, wd, epoch) on held-out parts of ``positions`` and refit on all of them.

    ``build(grid)`` returns a fresh :class:`GridHeads` with one head per ``(lr, wd)``.
    With a training log open (``vssl probe --log-dir``, :func:`~vssl.training_log.current_log`), each
    training of the grid is a run of its own in it: ``select-<part>-<pass>`` per held-out part and
    (batch size, optimizer) pass, then ``refit``.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    cfg = replace(cfg, precision=probe_precision(cfg.precision, device))
    grid = cfg.grid()
    passes = [budget(run, _num_samples(inputs, positions)) for run in cfg.passes()]
    log = current_log()
    log.text("settings", settings_text(cfg.params()))
    if cfg.holdout == 0.0:
        (lr, wd), run = grid[0], passes[0]
        expect(advance, run.epochs)
        model, _ = _train(inputs, positions, None, build, [(lr, wd)], run, run.epochs, device, advance,
                          log.child("refit"))
        return FitResult(model, lr, wd, run.epochs, None, cfg.precision, batch_size=run.batch_size,
                         optimizer=run.optimizer)
    task = task_of(inputs.labels)
    folds = held_out_folds(inputs.labels, positions, cfg)
    expect(advance, len(folds) * sum(run.epochs for run in passes) + max(run.epochs for run in passes))
    score, loss = 0.0, 0.0                       # [epoch, pass x grid], averaged over held-out videos
    for part, (fit_pos, held_pos) in enumerate(folds):
        history = np.concatenate([np.asarray(_train(inputs, fit_pos, held_pos, build, grid, run, run.epochs,
                                                    device, advance, log.child(f"select-{part}-{p}"))[1])
                                  for p, run in enumerate(passes)], axis=1)
        weight = len(held_pos) / sum(len(h) for _, h in folds)
        score, loss = score + weight * history[..., 0], loss + weight * history[..., 1]
    points = [(run, lr, wd) for run in passes for lr, wd in grid]
    best = select(score, loss)
    epoch, (run, lr, wd) = int(best[0]) + 1, points[int(best[1])]
    model, _ = _train(inputs, positions, None, build, [(lr, wd)], run, epoch, device, advance, log.child("refit"))
    return FitResult(model, lr, wd, epoch, float(score[best]), cfg.precision, score.tolist(), run.batch_size,
                     run.optimizer, task.selection_metric, sum(len(h) for _, h in folds))


def expect(advance: Callable[[int], None] | None, total: int) -> None:
    """Tell a progress bar passed as ``advance`` how many units the fit will take, once known."""
    set_total = getattr(advance, "expect", None)
    if set_total is not None:
        set_total(total)


def held_out_folds(labels: np.ndarray, positions: np.ndarray, cfg: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, held-out) positions model selection scores on (:func:`selection_folds`), a clear error
    when the training split is too small to hold any video out."""
    strata = task_of(labels).stratify(labels[positions])
    folds = [(positions[f], positions[h]) for f, h in selection_folds(strata, cfg.holdout, cfg.holdout_min, cfg.seed)]
    if not folds or len(folds[0][1]) == 0:
        raise VsslError("the training split is too small to hold out videos for model selection; "
                        f"use --holdout 0 and fix one {cfg.candidate_flags()}")
    return folds


def budget(cfg: TrainConfig, samples: int) -> TrainConfig:
    """``cfg`` with the minibatch and epochs that give at least ``min_steps`` optimizer steps over
    ``samples`` training samples: the batch shrinks first (the same compute in more, smaller
    steps; never below :data:`MIN_BATCH`), then epochs are added. A split whose ``epochs`` already
    hold ``min_steps`` steps keeps its settings."""
    steps = cfg.epochs * math.ceil(samples / cfg.batch_size)
    if steps >= cfg.min_steps or samples == 0:
        return cfg
    per_epoch = math.ceil(cfg.min_steps / cfg.epochs)
    batch = min(cfg.batch_size, max(MIN_BATCH, samples // per_epoch))
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / math.ceil(samples / batch)))
    return replace(cfg, batch_size=batch, epochs=epochs)


def select(score: np.ndarray, loss: np.ndarray) -> tuple[int, int]:
    """(epoch index, grid point) of the highest held-out ``score`` (top-1; mAP; -MSE:
    :meth:`Task.selection`); a tie (common: small held-out sets saturate) goes to the lowest held-out
    ``loss``, i.e. the more confident, usually later, epoch. A diverged head (NaN score or loss, e.g.
    a regression head's MSE) is never selected over a finite one."""
    score = np.where(np.isfinite(score), score, -np.inf)
    loss = np.where(np.isfinite(loss), loss, np.inf)
    return min(np.ndindex(*score.shape), key=lambda eg: (-score[eg], loss[eg], eg))


def _train(inputs: Inputs, train_pos: np.ndarray, held_pos: np.ndarray | None, build, grid, cfg: TrainConfig,
           stop_epoch: int, device: torch.device, advance, log: TrainingLog | None = None
           ) -> tuple[nn.Module, list[np.ndarray]]:
    log = log or NoLog()
    watched = HeadLog(log, grid, cfg, task_of(inputs.labels).selection_metric)
    gen = seed_everything(cfg.seed)
    task = task_of(inputs.labels)
    model = build(grid).to(device)
    opt = make_optimizer(model, grid, cfg.optimizer)
    base = [g["lr"] for g in opt.param_groups]
    steps_per_epoch = max(1, math.ceil(_num_samples(inputs, train_pos) / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch          # the schedule always spans cfg.epochs, so a refit
    step, history = 0, []                          # stopped at epoch e sees the selected run's rates
    for _ in range(stop_epoch):
        model.train()
        for xs, y in inputs.batches(train_pos, cfg.batch_size, gen, device):
            for group, lr in zip(opt.param_groups, base):            # warm-up, then cosine, per step
                group["lr"] = lr_at(step, total, lr, cfg.warmup)
            opt.zero_grad(set_to_none=True)
            for part_xs, part_y in step_parts(inputs, xs, y):
                with autocast(device, cfg.precision):
                    logits = model(*part_xs)                           # [b, G, C]
                # sum over heads (independent); the parts' losses add up to the batch's mean
                (task.loss(logits.float(), part_y) * (len(part_y) / len(y))).backward()
                watched.add_loss(task, logits, part_y, len(part_y) / len(y))
            watched.end_step(step, [g["lr"] for g in opt.param_groups])
            opt.step()
            step += 1
        if held_pos is not None:
            scores = inputs.predict(model, held_pos, device, cfg.precision)   # [n, G, C]
            history.append(np.stack(task.selection(scores, inputs.labels[held_pos]), axis=-1))
            watched.held_out(step, history[-1])
        watched.flush()
        if advance:
            advance(1)
    model.eval()
    return model, history


class HeadLog:
    """What a grid's training writes to its log: each head's loss and learning rate per step (the
    losses kept on the device and written once an epoch), and each epoch's held-out score and loss
    per head. Heads are named by their (lr, wd); without a log it does nothing."""

    def __init__(self, log: TrainingLog, grid: Sequence[tuple[float, float]], cfg: TrainConfig, metric: str):
        self.log, self.enabled = log, not isinstance(log, NoLog)
        self.names = [f"lr{lr:g}_wd{wd:g}" for lr, wd in grid]
        self.metric = metric
        self.losses: list[torch.Tensor] = []
        self.part: torch.Tensor | None = None
        self.rows: list[dict[str, float]] = []
        self.first_step = 0

    def add_loss(self, task, logits: torch.Tensor, y: torch.Tensor, weight: float) -> None:
        """One micro-batch's loss per head, weighted by its share of the batch."""
        if not self.enabled:
            return
        with torch.no_grad():
            per_head = torch.stack([task.loss(logits[:, g:g + 1].float(), y) for g in range(logits.shape[1])]) * weight
        self.part = per_head if self.part is None else self.part + per_head

    def end_step(self, step: int, group_lrs: list[float]) -> None:
        """The step's learning rates (each head's, from its optimiser groups); its losses are kept."""
        if not self.enabled:
            return
        if not self.rows:
            self.first_step = step
        per_head = len(group_lrs) // len(self.names)
        self.rows.append({f"lr/{n}": group_lrs[i * per_head] for i, n in enumerate(self.names)})
        self.losses.append(self.part)
        self.part = None

    def held_out(self, step: int, history: np.ndarray) -> None:
        """The epoch's held-out ``[heads, 2]`` (score, loss), at the step the epoch ended."""
        if self.enabled:
            self.log.scalars(step, {**{f"held_out_{self.metric}/{n}": float(v) for n, v in zip(self.names, history[:, 0])},
                                    **{f"held_out_loss/{n}": float(v) for n, v in zip(self.names, history[:, 1])}})

    def flush(self) -> None:
        """Write the steps since the last flush (one device-to-host copy)."""
        if not self.rows:
            return
        losses = torch.stack(self.losses).cpu().tolist()
        self.log.steps(self.first_step, [{**row, **{f"loss/{n}": v for n, v in zip(self.names, loss)}}
                                         for row, loss in zip(self.rows, losses)])
        self.rows, self.losses = [], []


def step_parts(inputs: Inputs, xs: tuple[torch.Tensor, ...], y: torch.Tensor) -> list[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    """The micro-batches one optimizer step is computed in: the whole batch, or the parts of it that
    inputs bounding a step's memory (``micro_batches``: e.g. thousands of tokens per sample) cut it
    into. Gradients accumulate over the parts, so the step is the whole batch's."""
    split = getattr(inputs, "micro_batches", None)
    return [(xs, y)] if split is None else split(xs, y)


def make_optimizer(model: GridHeads, grid: Sequence[tuple[float, float]], optimizer: str) -> torch.optim.Optimizer:
    """One optimiser over every head of ``model``, each head with its own (lr, wd) and no weight
    decay on its biases, norms and tokens (:func:`vssl.optim.param_groups`). SGD uses momentum 0.9
    (released ``get_optimizer``)."""
    groups = [g for head, (lr, wd) in zip(model.heads, grid) for g in param_groups(head, wd, lr) if g["params"]]
    if optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=0.9)
    return torch.optim.AdamW(groups)


def _num_samples(inputs: Inputs, positions: np.ndarray) -> int:
    if hasattr(inputs, "num_samples"):                 # e.g. a ragged view's clips: counts vary per video
        return inputs.num_samples(positions)
    per = getattr(inputs, "samples_per_video", 1)
    return len(positions) * per


def with_defaults(cfg: TrainConfig, **overrides) -> TrainConfig:
    """A copy of ``cfg`` with the non-``None`` overrides (flags fix any value)."""
    changes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    return replace(cfg, **changes)
