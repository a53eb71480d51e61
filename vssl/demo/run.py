"""`vssl demo`: generate a dataset, extract, train SCALE, export, probe, and say what it showed.

Everything runs through the same library calls as the CLI stages, so the demo is also an
end-to-end check of the pipeline. Its table is what this run measured, nothing else.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from vssl.aggregate import ScaleConfig, export, train
from vssl.extract.pipeline import extract
from vssl.probe import KnnConfig, LinearConfig, ProbeRequest, Report, TransformerConfig, run_probes
from vssl.probe.compare import paired_difference
from vssl.probe.report import ProbeResult, write_confusion_png
from vssl.probe.transformer import FinetuneConfig
from vssl.report_page import write_page

from .dataset import CLASSES, LONG_RANGE_CLASSES, generate_dataset

TRAIN_VIEW, EVAL_VIEW = "random16", "uniform5x3"


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of a demo run; the defaults finish in about three minutes on 2 CPU cores."""

    videos: int = 120
    seed: int = 0
    backbone: str = "efficientnet-lite0"
    frames: int = 2             # frames per clip (per-frame backbone: averaged)
    stride: int = 8
    size: int = 64
    train_views: str = "random:16"
    eval_views: str = "uniform:5x3"
    epochs: int = 300
    batch_size: int = 16
    width: int = 128
    pred_hidden: int = 512
    target_hidden: int = 512
    probe_epochs: int = 60
    probe_batch_size: int = 16  # small batches: enough steps on ~80 training videos
    probe_min_steps: int | None = None   # None: the probes' own floor (500 steps)
    workers: int = 0
    device: str = "auto"        # every stage: CUDA when present (the GPU check runs the demo there)

    @classmethod
    def quick(cls, **overrides) -> "DemoConfig":
        """A smoke-sized run (the test suite's): seconds, not minutes; numbers are not meaningful."""
        base = cls(videos=24, train_views="random:8", eval_views="uniform:2x1", epochs=3, batch_size=8,
                   width=64, pred_hidden=128, target_hidden=128, probe_epochs=5, probe_min_steps=0,
                   backbone="tiny", size=32)
        return replace(base, **overrides)


@dataclass
class DemoResult:
    out: Path
    report: Report
    files: dict[str, Path]
    seconds: dict[str, float] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)


def _view_name(spec: str) -> str:
    return spec.replace(":", "")


def _loss_curve_png(metrics_csv: Path, path: Path) -> None:
    from vssl.report_page.figures import save_png, training_curves_figure

    with metrics_csv.open(newline="") as fh:
        save_png(training_curves_figure(list(csv.DictReader(fh))), path, dpi=110)


def _pair_accuracy(result, classes: list[str]) -> float | None:
    """Mean accuracy on the two event-order classes (50% = a coin flip between them)."""
    accs = [result.per_class.get(c) for c in LONG_RANGE_CLASSES if c in classes]
    accs = [a for a in accs if a is not None]
    return float(np.mean(accs)) if accs else None


#: each SCALE row next to the backbone row of the same kind of probe; SCALE_ft vs Transformer is
#: the paper's measure of what pretraining adds (same architecture, another initialisation)
PAIRS = ((("scale_ft", "scale"), ("transformer", "backbone")),
         (("knn", "scale"), ("knn", "backbone")),
         (("scale_linear", "scale"), ("linear", "backbone")))

#: the paper's names of the rows the demo compares
NAMES = {("scale_ft", "scale"): "SCALE_ft", ("transformer", "backbone"): "Transformer",
         ("knn", "scale"): "SCALE_kNN", ("knn", "backbone"): "k-NN (backbone)",
         ("scale_linear", "scale"): "SCALE_linear", ("linear", "backbone"): "linear (backbone)"}


def compare_rows(a: ProbeResult, b: ProbeResult) -> str:
    """``a`` vs ``b`` on the same test videos: a difference is stated only when its 95% exact
    paired interval excludes 0, else "within noise" (:mod:`vssl.probe.compare`)."""
    name_a = NAMES.get((a.probe, a.features), f"{a.probe} ({a.features})")
    name_b = NAMES.get((b.probe, b.features), f"{b.probe} ({b.features})")
    return paired_difference(a.correct, b.correct, name_a, name_b).statement()


def findings(report: Report) -> list[str]:
    """Plain statements of what the table shows: where SCALE's rows beat the backbone's by more
    than the uncertainty of this test set, and the event-order classes."""
    rows = {(r.probe, r.features): r for r in report.results}
    out = [compare_rows(rows[a], rows[b]) for a, b in PAIRS if a in rows and b in rows]
    for r in report.results:
        pair = _pair_accuracy(r, list(r.per_class))
        if pair is not None:
            out.append(f"event-order classes ({' vs '.join(LONG_RANGE_CLASSES)}), {r.probe}/{r.features}: "
                       f"{pair:.0f}% (50% = chance between the two)")
    return out


def run_demo(out: str | Path = "vssl-demo", cfg: DemoConfig | None = None, quiet: bool = False,
             log: Callable[[str], None] = print) -> DemoResult:
    """Run the whole pipeline under ``out`` and return the probe report and where files went."""
    cfg = cfg or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store, run_dir = out / "store.zarr", out / "scale_run"
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    log(f"[1/5] generating {cfg.videos} videos of {len(CLASSES)} classes in {out / 'videos'}")
    manifest = generate_dataset(out / "videos", num_videos=cfg.videos, seed=cfg.seed)
    seconds["generate"] = time.perf_counter() - t

    t = time.perf_counter()
    train_view, eval_view = _view_name(cfg.train_views), _view_name(cfg.eval_views)
    log(f"[2/5] extracting {cfg.train_views} and {cfg.eval_views} clips with {cfg.backbone}")
    extract(manifest, store, backbone=cfg.backbone, views=[cfg.train_views, cfg.eval_views],
            frames=cfg.frames, stride=cfg.stride, size=cfg.size, workers=cfg.workers, seed=cfg.seed,
            device=cfg.device, progress=not quiet)
    seconds["extract"] = time.perf_counter() - t

    t = time.perf_counter()
    log(f"[3/5] training SCALE on {train_view} for {cfg.epochs} epochs")
    scale_cfg = ScaleConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, width=cfg.width,
                            pred_hidden=cfg.pred_hidden,
                            target_hidden=cfg.target_hidden, seed=cfg.seed, device=cfg.device,
                            checkpoint_every=max(1, cfg.epochs))
    train(store, train_view, run_dir, scale_cfg, resume=(run_dir / "checkpoint.pt").exists(), quiet=quiet)
    seconds["aggregate"] = time.perf_counter() - t

    t = time.perf_counter()
    log(f"[4/5] exporting SCALE's aggregated features for {eval_view}")
    export(store, run_dir, eval_view, device=cfg.device, quiet=quiet)
    seconds["export"] = time.perf_counter() - t

    t = time.perf_counter()
    log("[5/5] probing backbone and SCALE features (k-NN, linear, Transformer and SCALE_ft side by side)")
    trained = dict(epochs=cfg.probe_epochs, device=cfg.device,
                   **({} if cfg.probe_min_steps is None else {"min_steps": cfg.probe_min_steps}))
    request = ProbeRequest(store=store, view=eval_view, knn=KnnConfig(device=cfg.device),
                           linear=LinearConfig(device=cfg.device),              # solved: no epochs
                           transformer=TransformerConfig(**trained, batch_size=cfg.probe_batch_size),
                           finetune=FinetuneConfig(**trained, batch_size=cfg.probe_batch_size),
                           scale_run=run_dir,
                           seed=cfg.seed, quiet=quiet)
    report = run_probes(request)
    seconds["probe"] = time.perf_counter() - t

    files = {"videos": out / "videos", "store": store, "scale run": run_dir, "report": out / "report.json",
             "confusion matrix": out / "confusion.png", "loss curve": out / "loss_curve.png",
             "report page": out / "report.html"}
    for path in (files["report"], files["confusion matrix"], files["loss curve"], files["report page"]):
        path.unlink(missing_ok=True)
    report.write_json(files["report"])
    write_page(files["report"], files["report page"], quiet=quiet)
    write_confusion_png(report.best(), list(report.results[0].per_class), files["confusion matrix"])
    _loss_curve_png(run_dir / "metrics.csv", files["loss curve"])
    result = DemoResult(out, report, files, seconds, findings(report))
    (out / "demo.json").write_text(json.dumps({"config": asdict(cfg), "seconds": seconds,
                                                "findings": result.findings}, indent=2) + "\n")
    return result
