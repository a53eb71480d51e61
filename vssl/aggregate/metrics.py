"""Per-epoch training metrics: summed on the device while training, one CSV row per epoch after."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from vssl.aggregate.checkpoint import METRICS

METRIC_FIELDS = ["epoch", "step", "loss", "mcm_loss", "set_loss", "mcm_top1", "set_top1", "lr",
                 "videos_per_s", "seconds"]


class EpochMetrics:
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
