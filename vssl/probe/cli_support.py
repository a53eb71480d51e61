"""Turning `vssl probe` flags into a :class:`~vssl.probe.run.ProbeRequest` (kept out of vssl/cli.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vssl.errors import VsslError

from .knn import KnnConfig
from .linear import LinearConfig
from .mlp import MlpConfig
from .run import ProbeRequest
from .train import with_defaults
from .transformer import FinetuneConfig, TransformerConfig


def request_from_flags(f: dict[str, Any]) -> ProbeRequest:
    """Probe configs from the flags: the shared training flags fix the value in every trained probe."""
    _log_to_stderr(f["quiet"])
    for path, flag in ((f.get("report"), "--report"), (f.get("confusion"), "--confusion")):
        if path is not None and not Path(path).expanduser().resolve().parent.is_dir():
            raise VsslError(f"{flag} {path}: its directory does not exist; create it or choose another path")
    chosen = {p: f[p] for p in ("knn", "linear", "mlp", "transformer", "finetune")}
    if not any(chosen.values()):
        chosen.update(knn=True, linear=True)
    train = {"lrs": f["lr"] or None, "weight_decays": f["weight_decay"] or None, "epochs": f["epochs"],
             "batch_size": f["batch_size"], "optimizer": f["optimizer"], "holdout": f["holdout"],
             "seed": f["seed"], "device": f["device"], "precision": f["precision"]}
    if f["k"] < 1 or f["temperature"] <= 0:
        raise VsslError("--k must be at least 1 and --temperature positive (DINO: k=20, T=0.07)")

    def cfg(enabled: bool, base, **more):
        return with_defaults(base, **train, **more) if enabled else None

    return ProbeRequest(
        store=Path(f["store"]), view=f["view"], train_split=f["train_split"], test_split=f["test_split"],
        knn=KnnConfig(k=f["k"], temperature=f["temperature"], center=f["center"], backend=f["knn_backend"],
                      precision=f["knn_precision"], device=f["device"]) if chosen["knn"] else None,
        linear=cfg(chosen["linear"], LinearConfig(), batchnorm=f["batchnorm"] or None),
        mlp=cfg(chosen["mlp"], MlpConfig(), batchnorm=f["batchnorm"] or None),
        transformer=cfg(chosen["transformer"], TransformerConfig()),
        finetune=cfg(chosen["finetune"], FinetuneConfig()),
        scale_run=f["scale"], low_shot=f["low_shot"], seed=f["seed"], quiet=f["quiet"])


def _log_to_stderr(quiet: bool) -> None:
    """Probe logs (one line per result, warnings) go to stderr; ``--quiet`` keeps only warnings."""
    log = logging.getLogger("vssl.probe")
    if not log.handlers:
        from rich.console import Console
        from rich.logging import RichHandler

        log.addHandler(RichHandler(console=Console(stderr=True), show_time=False, show_path=False))
        log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.INFO)
