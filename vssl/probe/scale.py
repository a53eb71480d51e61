"""SCALE's features for the probes: the exported aggregates of a run (SCALE §4.1).

``vssl aggregate --export`` writes ``aggregates/<run>/<view>/{set_token, clips}`` into the
store; when rows the probes need are missing they are exported here first (the export is
resumable and records the checkpoint's SHA-256, so rows of two checkpoints never mix).
What the rows read (SCALE §4.1): SCALE_kNN the mean over a video's clips of [C_i ⊕ SET]
(SET alone as a variant), SCALE_linear a per-clip head on [C_i ⊕ SET] ([C_i ⊕ Ĉ_i ⊕ SET] as a
variant). C_i is the backbone's clip feature, Ĉ_i SCALE's refined clip, SET its CLS output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from vssl.errors import VsslError
from vssl.features_store.ragged import RaggedClips, as_ragged, read_clips, segment_mean

from .data import SplitData, read_in_blocks

log = logging.getLogger("vssl.probe")


@dataclass
class ScaleFeatures:
    """A SCALE run checked against the store, with its aggregates for the probed view."""

    run_dir: Path
    group_path: str
    model: nn.Module
    width: int
    exported: object       # vssl.features_store.RowGroup: aggregates/<run>/<view>
    config: Any = None     # the run's ScaleConfig (its architecture)
    meta: dict = field(default_factory=dict)   # the checkpoint's meta (what it trained on)
    refined: object = None  # a ragged view's Ĉ (its export's ragged row group); None: ``exported["clips"]``

    @classmethod
    def open(cls, store, run_dir: Path, view: str, needed: np.ndarray, quiet: bool = False) -> "ScaleFeatures":
        """Load the run, refuse one trained on another backbone, export the missing rows."""
        from vssl.aggregate import aggregate_group, export, load_run
        from vssl.aggregate.checkpoint import check_trained_on
        from vssl.aggregate.exporting import find_export_name
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
        if not store.has_row_group(group) or not store.row_group(group).done()[needed].all():
            log.info("exporting SCALE aggregates of %s into %s/%s", run_dir, store.path, group)
            export(store.path, run_dir, view, name=name, quiet=quiet)
            store = FeatureStore.open(store.path)
        exported = store.row_group(group)
        if exported.attrs.get("checkpoint_sha256") != meta["checkpoint_sha256"]:
            raise VsslError(f"{group} in {store.path} was exported from another checkpoint than {run_dir}; "
                            f"re-export it with `vssl aggregate --export` (or another run name)")
        if not exported.done()[needed].all():
            raise VsslError(f"{group} in {store.path} lacks rows for some probed videos after export; "
                            f"check `vssl store verify {store.path}`")
        refined = store.ragged_group(exported.attrs["clips_group"]) if exported.attrs.get("clips_group") else None
        return cls(run_dir, group, model, cfg.width, exported, cfg, meta, refined)

    def set_token(self, indices: np.ndarray) -> np.ndarray:
        """SET token (CLS output) [n, H] of store rows ``indices``."""
        return read_in_blocks(lambda r: self.exported.read("set_token", r), indices).astype(np.float32)

    def clip_inputs(self, split: SplitData, append_refined: bool = False) -> RaggedClips:
        """[C_i ⊕ SET] per clip of the split's videos, ``[n, K, D + H]`` in the features' dtype, as
        :class:`RaggedClips` (a fixed view's with constant counts): each clip with its video's SET.

        The paper's text (§4.1) and the released eval (``LinearOnTop(append_h=False)``) feed the
        head the raw clip and the SET token; ``append_refined`` also appends SCALE's refined clip
        Ĉ_i (``[C_i ⊕ Ĉ_i ⊕ SET]``, ``[n, K, D + 2H]``), vssl's earlier default.
        """
        token = self.set_token(split.indices)
        clips = as_ragged(split.features)
        parts = [clips.flat]
        if append_refined:
            parts.append(self.refined_clips(split.indices).flat.astype(clips.dtype))
        parts.append(np.repeat(token, clips.counts, axis=0).astype(clips.dtype))
        return RaggedClips(np.concatenate(parts, axis=-1), clips.offsets)

    def refined_clips(self, indices: np.ndarray) -> RaggedClips:
        """SCALE's refined clips Ĉ_i of store rows ``indices``: a ragged view's export holds them in
        a ragged row group of their own, a fixed view's in the ``clips`` array ``[n, K, H]``."""
        if self.refined is not None:
            return read_clips(self.refined, indices)[0]
        return as_ragged(read_in_blocks(lambda r: self.exported.read("clips", r), indices))

    def video_inputs(self, split: SplitData, features: str = "clip_set", rule: str = "released") -> np.ndarray:
        """What SCALE's k-NN embeds per video, ``[n, D + H]`` float32 before centring and l2:
        ``clip_set`` = the mean over clips of [C_i ⊕ SET] = [mean_i C_i ⊕ SET] (§4.1; released
        eval.py's k-NN input, ``rule="released"``), or with ``rule="dino"`` the mean of the
        l2-normalized [C_i ⊕ SET]; ``set`` = the SET token alone (either rule)."""
        token = self.set_token(split.indices)
        if features == "set":
            return token
        if rule == "dino":
            return mean_of_normalized(split.features, token)
        return np.concatenate([as_ragged(split.features).mean(), token], axis=-1)


def mean_of_normalized(clips: np.ndarray | RaggedClips, token: np.ndarray) -> np.ndarray:
    """mean_i [C_i ⊕ SET] / ||[C_i ⊕ SET]|| per video, without forming the concatenations: with
    r_i = sqrt(||C_i||² + ||SET||²) it is [mean_i C_i / r_i ⊕ SET mean_i 1 / r_i] (float64)."""
    clips = as_ragged(clips)
    tok = np.asarray(token, np.float64)
    tok_sq = (tok * tok).sum(axis=-1)
    flat = clips.flat.astype(np.float64)
    inv = 1.0 / np.maximum(np.sqrt((flat * flat).sum(-1) + np.repeat(tok_sq, clips.counts)), 1e-12)
    mean_clip = segment_mean(flat * inv[:, None], clips.counts)
    weight = segment_mean(inv[:, None], clips.counts)[:, 0]
    return np.concatenate([mean_clip, tok * weight[:, None]], axis=-1).astype(np.float32)
