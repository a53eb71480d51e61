"""What a report page reads: a probe's JSON report and the SCALE runs it names or is given."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vssl.errors import VsslError
from vssl.probe.report import REPORT_FORMAT


def read_report(path: str | Path) -> dict[str, Any]:
    """The JSON report at ``path``; a missing or unreadable file, or a report of another format
    version (one this vssl cannot read), is one line."""
    path = Path(path)
    if not path.is_file():
        raise VsslError(f"{path}: no such report; write one with `vssl probe ... --report {path.name}`")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VsslError(f"{path}: not a JSON report ({exc})") from None
    found = doc.get("format") if isinstance(doc, dict) else None
    if found != REPORT_FORMAT:
        what = "no format version (written before vssl 0.1 reports were versioned)" if found is None \
            else f"format {found!r}"
        raise VsslError(f"{path}: report has {what}; this vssl reads format {REPORT_FORMAT}: probe again with "
                        "this vssl to write one (`vssl probe ... --report`)")
    return doc


@dataclass
class RunRecord:
    """A SCALE run as its page section shows it: its settings and its per-epoch metrics."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, float]] = field(default_factory=list)     # metrics.csv, one dict per epoch


def read_run(path: str | Path) -> RunRecord:
    """The run in folder ``path``: its checkpoint's config and meta, and ``metrics.csv``; a missing
    folder or a folder that holds no run is one line."""
    from vssl.aggregate.checkpoint import METRICS, checkpoint_path

    path = Path(path)
    if not path.is_dir():
        raise VsslError(f"--run {path}: no such run folder (a `vssl aggregate --out` folder)")
    ckpt = checkpoint_path(path)
    if not ckpt.is_file():
        raise VsslError(f"--run {path}: holds no {ckpt.name}; give the folder `vssl aggregate --out` trained into")
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    metrics: list[dict[str, float]] = []
    if (path / METRICS).is_file():
        with open(path / METRICS, newline="") as fh:
            metrics = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]
    return RunRecord(path, dict(state.get("config", {})), dict(state.get("meta", {})), metrics)
