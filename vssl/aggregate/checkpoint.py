"""Run directory I/O: ``RUN_DIR/checkpoint.pt`` holds the model, optimiser, config and meta.

Checkpoints are written to a temporary file, synced, and renamed over the old one, so a crash
(or a run stopped for a NaN loss, or a node lost mid-write) always leaves the last good
checkpoint readable.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch

from vssl.aggregate.config import ScaleConfig
from vssl.aggregate.model import ScaleModel
from vssl.errors import CheckpointError
from vssl.features_store import BackboneSpec, FeatureStore
from vssl.features_store.rows import sync_file
from vssl.hashing import sha256_of as file_sha256  # the checkpoint's identity, as the store records weights

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
CHECKPOINT_FORMAT = 1


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT


def save_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (plus the format tag) to ``RUN_DIR/checkpoint.pt``."""
    path = checkpoint_path(run_dir)
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    sync_file(tmp)  # durable before it replaces the last good one (network file systems reorder writes)
    os.replace(tmp, path)
    sync_file(path.parent)  # the rename itself
    return path


def read_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict; a missing or foreign file is a :class:`CheckpointError`."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise CheckpointError(f"no {CHECKPOINT} in {run_dir}; train first with `vssl aggregate STORE --out {run_dir}`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated/corrupt file
        raise CheckpointError(f"{path} cannot be read ({exc}); retrain or restore the file") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise CheckpointError(f"{path} is not a vssl aggregate checkpoint")
    return state


def check_trained_on(store: FeatureStore, meta: Mapping, run_dir: str | Path, fix: str) -> None:
    """Refuse a run trained on features of another backbone than ``store``'s (the store's one rule).

    Runs record the store's backbone record; those of vssl 0.1 only its name and checkpoint hash.
    """
    if "backbone_spec" in meta:
        trained_on, fields = BackboneSpec.from_dict(meta["backbone_spec"]), None
    else:
        trained_on = replace(store.backbone, name=meta.get("backbone"), checkpoint_sha256=meta.get("backbone_sha256"))
        fields = ("name", "checkpoint_sha256")
    store.check_backbone(trained_on, fields, fix=fix, who=str(run_dir))


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[ScaleModel, ScaleConfig, dict]:
    """(model in eval mode on ``device``, its config, meta) of a trained run.

    ``meta`` holds: store (path), view, backbone (name), backbone_sha256, in_dim, num_clips,
    set_size, num_masked (None when drawn per set), mask_mode, expected_masked, split (resolved, never
    'auto'), trained_on_splits, store_id and trained_on_videos (absent from older runs; see
    :func:`~vssl.aggregate.plan.run_meta`), epochs (done), epochs_total, step, checkpoint_sha256.
    """
    state = read_checkpoint(run_dir)
    cfg = ScaleConfig.from_stored(state["config"])
    meta = dict(state.get("meta", {}))
    model = ScaleModel(cfg, int(meta["in_dim"]))
    model.load_state_dict(state["model"])
    meta.update(epochs=int(state["epoch"]), step=int(state["step"]),
                checkpoint_sha256=file_sha256(checkpoint_path(run_dir)))
    return model.to(device).eval(), cfg, meta
