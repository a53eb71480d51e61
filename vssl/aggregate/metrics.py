"""Training metrics: summed on the device per epoch (one CSV row per epoch after), and each step's
values for the TensorBoard log (``--log-dir``, :mod:`vssl.training_log`)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from vssl.aggregate.checkpoint import METRICS
from vssl.aggregate.terms import TERMS, metric_keys
from vssl.training_log import NoLog, TrainingLog

METRIC_FIELDS = ["epoch", "step", *metric_keys(), "lr", "videos_per_s", "seconds"]


class EpochMetrics:
    """Per-epoch sums kept on the device (no host sync per step)."""

    keys = metric_keys()

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


class StepValues:
    """Each step's metric values and learning rate for the training log, kept on the device until
    the loop reads the host anyway (every step on CPU, every 20 on CUDA: :meth:`flush`)."""

    keys = metric_keys()

    def __init__(self, log: TrainingLog) -> None:
        self.log = log
        self.enabled = not isinstance(log, NoLog)
        self.first_step = 0
        self.values: list[torch.Tensor] = []
        self.lrs: list[float] = []

    def add(self, step: int, out: dict[str, torch.Tensor], lr: float) -> None:
        """Step ``step``'s outputs (this rank's batch share) at learning rate ``lr``."""
        if not self.enabled:
            return
        if not self.values:
            self.first_step = step
        self.values.append(torch.stack([out[k].detach().double() for k in self.keys]))
        self.lrs.append(lr)

    def flush(self) -> None:
        """Write the steps added since the last flush (one device-to-host copy for all of them)."""
        if not self.values:
            return
        rows = torch.stack(self.values).cpu().tolist()
        self.log.steps(self.first_step, [{**{f"train/{k}": v for k, v in zip(self.keys, row)}, "train/lr": lr}
                                         for row, lr in zip(rows, self.lrs)])
        self.values, self.lrs = [], []


def write_metrics(run_dir: Path, rows: list[dict], keep_until_epoch: int | None) -> None:
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


def progress_line(means: dict[str, float]) -> str:
    """``loss 1.234 mcm 0.567 set 0.667``: the total, then each term by its name."""
    return " ".join([f"loss {means['loss']:.3f}", *(f"{t.name} {means[t.metric_keys[0]]:.3f}" for t in TERMS)])


def summary_line(final: dict[str, float]) -> str:
    """``loss 1.2345 (MCM 0.5678, top-1 12.3%; SET ...)``: a finished run's last epoch, for the CLI."""
    terms = "; ".join(f"{t.title} {final.get(t.metric_keys[0], 0):.4f}, top-1 {100 * final.get(t.metric_keys[1], 0):.1f}%"
                      for t in TERMS)
    return f"loss {final.get('loss', float('nan')):.4f} ({terms})"
