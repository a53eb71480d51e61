"""Starting stage two: a new run, or the run in ``--out`` continued from its checkpoint.

A run directory is never silently overwritten, and a resume is refused when it would follow
another trajectory than the interrupted run (other settings, data or number of ranks), so a
resumed run is the uninterrupted one (:mod:`vssl.aggregate.training`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vssl.aggregate.checkpoint import checkpoint_path, read_checkpoint
from vssl.aggregate.config import ScaleConfig
from vssl.errors import VsslError
from vssl.features_store import View

# Settings that may change on --resume without changing the trajectory's definition.
RESUMABLE_CHANGES = {"epochs", "device", "precision", "checkpoint_every", "max_memory_bytes"}


@dataclass(frozen=True)
class Resume:
    """Where a run starts: the epoch and optimiser step reached, and the checkpoint read (None: new run)."""

    epoch: int = 0
    step: int = 0
    state: dict[str, Any] | None = None


def resume_point(run_dir: Path, cfg: ScaleConfig, resume: bool, log: Callable[[str], None], world: int = 1) -> Resume:
    """A new run, or (``resume``) the checkpoint in ``run_dir``; a run there is never overwritten, and
    resuming it with settings that define another trajectory is refused.

    The number of ranks may change when the global batch (``--batch-size`` x ranks) does not: every
    rank draws the global batches, sets and masks from (seed, epoch) and trains on its slice, so
    the trajectory is the same (dropout masks, drawn per rank, then agree in distribution only)."""
    if not checkpoint_path(run_dir).is_file():
        if resume:
            log(f"no checkpoint in {run_dir} yet; starting a new run")
        return Resume()
    if not resume:
        raise VsslError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    state = read_checkpoint(run_dir)
    # resolved values: a run of vssl 0.1 recorded heads=8 where today's config derives width / 32
    saved = ScaleConfig.from_stored(state["config"]).values()
    diff = [f"{k} (run {saved[k]!r}, now {v!r})" for k, v in sorted(cfg.values().items())
            if saved[k] != v and k not in RESUMABLE_CHANGES and k != "batch_size"]
    was_world = int(state.get("meta", {}).get("world_size", 1))
    if saved["batch_size"] * was_world != cfg.batch_size * world:  # another global batch: another trajectory
        diff.append(f"the global batch batch_size x ranks (run {saved['batch_size']} x {was_world} = "
                    f"{saved['batch_size'] * was_world}, now {cfg.batch_size} x {world} = {cfg.batch_size * world})")
    if diff:
        raise VsslError(f"--resume with settings that differ from the run in {run_dir}: {', '.join(diff)}; "
                        "resume with the original settings or start a new --out")
    return Resume(int(state["epoch"]), int(state["step"]), state)


def check_same_data(state: dict[str, Any], run_dir: Path, view: str, the_view: View, num_videos: int,
                     world: int) -> None:
    """Refuse to resume on another view or other videos (the number of ranks: :func:`resume_point`)."""
    was = state["meta"]
    now = {"view": view, "num_videos": num_videos, "in_dim": the_view.dim}
    changed = [f"{k} {was.get(k)!r} -> {v!r}" for k, v in now.items() if was.get(k) != v]
    if changed:
        raise VsslError(f"the run in {run_dir} was trained on other data ({'; '.join(changed)}); "
                        "resume it on the same store and view, or start a new --out")
