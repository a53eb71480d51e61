"""The shape of a stage-two run, fixed before the first step: sets, device, batches, and its record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vssl import __version__
from vssl.aggregate.config import ScaleConfig
from vssl.aggregate.distributed import TrainingRanks
from vssl.aggregate.masking import expected_count
from vssl.device import resolve_device, resolve_precision
from vssl.errors import VsslError
from vssl.features_store import FeatureStore, View
from vssl.hashing import video_keys


@dataclass(frozen=True)
class Plan:
    """The run's shape: clip sets, device and precision, and the batches of every epoch."""

    set_size: int
    num_masked: int | None  # per set in fixed mode (0 without MCM); None: drawn per set (masking.py)
    device: torch.device
    precision: str
    batch: int  # per rank
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    ragged: bool = False  # a ragged view: sets of at most set_size clips, drawn from each video's own


def plan_run(cfg: ScaleConfig, num_clips: int | None, num_videos: int, par: TrainingRanks) -> Plan:
    """Set sizes (SCALE §3.2), this rank's device, and drop-last global batches of ``batch x ranks``
    (``num_clips`` None: a ragged view)."""
    set_size = cfg.resolve_set_size(num_clips)
    num_masked = cfg.num_masked(set_size)
    device = par.device(resolve_device(cfg.device))
    precision = resolve_precision(cfg.precision, device)
    if num_videos < par.world:
        raise VsslError(f"{num_videos} training videos for {par.world} ranks: every rank needs at least one video "
                        "per batch; run fewer ranks (or one process) or train on more videos")
    batch = min(cfg.batch_size, num_videos // par.world)  # per rank
    global_batch = batch * par.world
    steps_per_epoch = num_videos // global_batch  # drop_last, as the released code
    return Plan(set_size, num_masked, device, precision, batch, global_batch, steps_per_epoch,
                steps_per_epoch * cfg.epochs, num_clips is None)


def run_meta(store_path: str | Path, store: FeatureStore, view: str, the_view: View, plan: Plan,
             videos: np.ndarray, split: str, world: int, cfg: ScaleConfig) -> dict[str, Any]:
    """What the checkpoint records about the data and the run (read by ``load_run``, the probes and --resume).

    ``split`` is the resolved one ('train', 'all', ...; never 'auto'); ``trained_on_splits`` the
    distinct split names of the videos trained on; ``trained_on_videos`` their keys (sorted int64,
    :func:`vssl.hashing.video_keys` of their paths) and ``store_id`` the creation id of the store,
    so a probe can tell a transductive run (one that saw its test videos, as the released code
    does for UCF/HMDB) from an inductive one on any store holding those videos, moved or not.
    """
    expected = expected_count(cfg.mask_mode, cfg.mask_ratio, plan.set_size) if cfg.masking else 0.0
    return {"store": str(Path(store_path).resolve()), "view": view, "backbone": store.backbone.name,
            "backbone_spec": store.backbone.to_dict(),
            "backbone_sha256": store.backbone.checkpoint_sha256, "in_dim": the_view.dim,
            "num_clips": the_view.num_clips, "layout": the_view.layout, "set_size": plan.set_size, "num_masked": plan.num_masked,
            "mask_mode": cfg.mask_mode, "expected_masked": expected,
            "num_videos": int(videos.size), "split": split,
            "trained_on_splits": sorted({str(x) for x in store.splits()[videos]}),
            "store_id": store.store_id,
            "trained_on_videos": torch.from_numpy(np.unique(video_keys(store.paths()[videos]))),
            "batch_size": plan.batch, "world_size": world,
            "epochs_total": cfg.epochs, "vssl_version": __version__}
