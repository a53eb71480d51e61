"""SCALE's features for the probes: the exported aggregates of a run (SCALE §4.1).

``vssl aggregate --export`` writes ``aggregates/<run>/<view>/{set_token, clips}`` into the
store; when rows the probes need are missing they are exported here first (the export is
resumable and records the checkpoint's SHA-256, so rows of two checkpoints never mix).
SCALE_kNN uses the SET token; SCALE_linear a per-clip head on [C_i ⊕ Ĉ_i ⊕ SET].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from vssl.errors import VsslError

from .data import SplitData, read_rows

log = logging.getLogger("vssl.probe")


@dataclass
class ScaleFeatures:
    """A SCALE run checked against the store, with its aggregates for the probed view."""

    run_dir: Path
    group_path: str
    model: nn.Module
    width: int
    rows: object           # vssl.features_store.RowGroup

    @classmethod
    def open(cls, store, run_dir: Path, view: str, needed: np.ndarray, quiet: bool = False) -> "ScaleFeatures":
        """Load the run, refuse one trained on another backbone, export the missing rows."""
        from vssl.aggregate import aggregate_group, export, load_run
        from vssl.aggregate.checkpoint import check_trained_on
        from vssl.aggregate.export import find_export_name
        from vssl.features_store import FeatureStore

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise VsslError(f"--scale {run_dir}: no such run directory; train one with `vssl aggregate`")
        model, cfg, meta = load_run(run_dir, "cpu")
        check_trained_on(store, meta, f"--scale {run_dir}", fix="probe it with a run trained on this store")
        if model.in_dim != store.view(view).dim:
            raise VsslError(f"--scale {run_dir} expects {model.in_dim}-d clips but view '{view}' has "
                            f"{store.view(view).dim}-d; use the view (or backbone) the run was trained on")
        name = find_export_name(store, run_dir, view, meta["checkpoint_sha256"])
        group = aggregate_group(name, view)
        if not store.has_rows(group) or not store.rows(group).done()[needed].all():
            log.info("exporting SCALE aggregates of %s into %s/%s", run_dir, store.path, group)
            export(store.path, run_dir, view, name=name, quiet=quiet)
            store = FeatureStore.open(store.path)
        rows = store.rows(group)
        if rows.attrs.get("checkpoint_sha256") != meta["checkpoint_sha256"]:
            raise VsslError(f"{group} in {store.path} was exported from another checkpoint than {run_dir}; "
                            f"re-export it with `vssl aggregate --export` (or another run name)")
        if not rows.done()[needed].all():
            raise VsslError(f"{group} in {store.path} lacks rows for some probed videos after export; "
                            f"check `vssl store verify {store.path}`")
        return cls(run_dir, group, model, cfg.width, rows)

    def set_token(self, indices: np.ndarray) -> np.ndarray:
        """SET token (CLS output) [n, H] of store rows ``indices``."""
        return read_rows(lambda r: self.rows.read("set_token", r), indices).astype(np.float32)

    def clip_inputs(self, split: SplitData) -> np.ndarray:
        """[C_i ⊕ Ĉ_i ⊕ SET] for every clip of the split's videos: [n, K, D + 2H], features' dtype."""
        clips = read_rows(lambda r: self.rows.read("clips", r), split.indices)
        token = self.set_token(split.indices)
        n, k, _ = split.features.shape
        dtype = split.features.dtype
        return np.concatenate([split.features, clips.astype(dtype),
                               np.broadcast_to(token[:, None, :], (n, k, token.shape[-1])).astype(dtype)], axis=-1)
