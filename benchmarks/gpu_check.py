"""One check of every CUDA branch, a few minutes on one GPU; one table at the end.

Runs, in order: the pipeline (generated videos → extraction → stage two → export → every probe),
extraction at fp32/bf16/fp16 with ``verify`` (and the largest feature difference from fp32), stage
two resident vs streaming (same metrics), resume (same metrics as one run), export, every probe,
bf16 k-NN against CPU faiss neighbours, and backbone throughput fp32 vs bf16.

Where there is no CUDA (``--device cpu``, or ``auto`` on a CPU machine) it runs what the CPU can,
at tiny sizes, and marks the rest skipped: the test suite runs it that way so it does not rot.
``benchmarks/gpu_check.sh`` is the entry point; ``--dry-run`` prints the plan only.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from unittest import mock

import numpy as np
import torch

from benchmarks.harness import markdown_table
from vssl.device import autocast, resolve_device

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class Sizes:
    """How big each check is: ``gpu`` fills a few minutes of one GPU, ``tiny`` seconds of a CPU."""

    videos: int
    backbone: str
    frames: int
    size: int
    epochs: int
    probe_epochs: int
    knn_train: int
    throughput_batch: int

    @classmethod
    def for_device(cls, device: torch.device) -> "Sizes":
        if device.type == "cuda":
            return cls(videos=120, backbone="efficientnet-lite0", frames=2, size=112, epochs=20, probe_epochs=20,
                       knn_train=200_000, throughput_batch=64)
        return cls(videos=24, backbone="tiny", frames=4, size=32, epochs=2, probe_epochs=1, knn_train=2_000,
                   throughput_batch=4)


@dataclass
class Check:
    """What the run shares: where it writes, the device, the sizes, and the table's rows."""

    out: Path
    device: torch.device
    sizes: Sizes
    rows: list[list[object]] = field(default_factory=list)

    def row(self, name: str, status: str, figure: str, seconds: float) -> None:
        self.rows.append([name, status, figure, round(seconds, 1)])
        print(f"{name}: {status} {figure} ({seconds:.1f} s)", flush=True)

    @property
    def dev(self) -> str:
        return str(self.device)

    def store(self, precision: str = "fp32") -> Path:
        return self.out / f"store_{precision}.zarr"


TRAIN_VIEW, EVAL_VIEW = "random8", "uniform2x1"


def videos(c: Check) -> None:
    from vssl.demo.dataset import generate_dataset

    t = time.perf_counter()
    generate_dataset(c.out / "videos", num_videos=c.sizes.videos, frames=(16, 32), sizes=(48, 64))
    c.row("videos", "ok", f"{c.sizes.videos} generated", time.perf_counter() - t)


def extraction(c: Check) -> None:
    """Each precision into its own store, verified; bf16/fp16 features compared with fp32's."""
    from vssl.extract.pipeline import extract
    from vssl.features_store import FeatureStore, verify_store

    reference = None
    for precision in PRECISIONS:
        if precision == "fp16" and c.device.type != "cuda":
            c.row("extract fp16", "skipped", "needs CUDA", 0.0)
            continue
        t = time.perf_counter()
        s = extract(c.out / "videos" / "manifest.csv", c.store(precision), backbone=c.sizes.backbone,
                    views=["random:8", "uniform:2x1"], frames=c.sizes.frames, size=c.sizes.size,
                    precision=precision, device=c.dev, progress=False)
        store = FeatureStore.open(c.store(precision))
        problems = verify_store(store)
        feats = store.view(EVAL_VIEW).read(np.arange(store.num_videos)).features.astype(np.float32)
        reference = feats if reference is None else reference
        diff = float(np.abs(feats - reference).max())
        ok = not problems and s.failed == 0
        c.row(f"extract {precision}", "ok" if ok else "FAIL",
              f"{s.clips_per_s:.0f} clips/s, {s.failed} failed, max abs diff to fp32 {diff:.3g}"
              + (f", verify: {problems[0]}" if problems else ""), time.perf_counter() - t)
    if c.device.type == "cuda":
        same_rows_as_cpu(c, reference)


def same_rows_as_cpu(c: Check, on_device: np.ndarray) -> None:
    """The CUDA path (pinned joins of batches spanning videos, upload stream, results read one batch
    late) gives every video its own rows: fp32 features agree with a CPU run's, row by row."""
    from vssl.extract.pipeline import extract
    from vssl.features_store import FeatureStore

    t = time.perf_counter()
    out = c.out / "extract-cpu-reference.zarr"
    extract(c.out / "videos" / "manifest.csv", out, backbone=c.sizes.backbone, views=["uniform:2x1"],
            frames=c.sizes.frames, size=c.sizes.size, precision="fp32", device="cpu", batch_size=3,
            progress=False)
    store = FeatureStore.open(out)
    cpu = store.view(EVAL_VIEW).read(np.arange(store.num_videos)).features.astype(np.float32)
    a, b = on_device.reshape(-1, on_device.shape[-1]), cpu.reshape(-1, cpu.shape[-1])
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    worst = float(cos.min())  # TF32 convolutions on the GPU move a row a little; a wrong row moves it a lot
    c.row("extract cuda = cpu rows", "ok" if worst > 0.999 else "FAIL", f"min cosine {worst:.5f}",
          time.perf_counter() - t)


def _scale_config(c: Check, **kw):
    from vssl.aggregate import ScaleConfig

    return ScaleConfig(**{**dict(width=64, heads=2, pred_hidden=128, target_hidden=128, epochs=c.sizes.epochs,
                                 batch_size=4, device=c.dev, checkpoint_every=1), **kw})


def stage_two(c: Check) -> None:
    """Resident and streaming training give the same metrics; a resumed run equals one run."""
    from vssl.aggregate import train

    runs = {}
    for name, memory in (("resident", 0), ("streaming", 1)):
        t = time.perf_counter()
        s = train(c.store(), TRAIN_VIEW, c.out / f"run_{name}", _scale_config(c, max_memory_bytes=memory), quiet=True)
        runs[name] = s
        c.row(f"aggregate {name}", "ok" if s.resident == (name == "resident") else "FAIL",
              f"{s.videos_per_s:.0f} videos/s, loss {s.final.get('loss', float('nan')):.4f}", time.perf_counter() - t)
    same = _same_metrics(runs["resident"].final, runs["streaming"].final)
    c.row("resident = streaming", "ok" if same else "FAIL", "final metrics equal" if same else "metrics differ", 0.0)
    t = time.perf_counter()
    with _cut_after_first_epoch():
        train(c.store(), TRAIN_VIEW, c.out / "run_resumed", _scale_config(c), quiet=True)
    resumed = train(c.store(), TRAIN_VIEW, c.out / "run_resumed", _scale_config(c), resume=True, quiet=True)
    same = _same_metrics(runs["resident"].final, resumed.final)
    c.row("resume", "ok" if same else "FAIL", "same metrics as one run" if same else "metrics differ",
          time.perf_counter() - t)


class _Cut(Exception):
    """The run stopped on purpose, its first epoch's checkpoint written."""


@contextlib.contextmanager
def _cut_after_first_epoch() -> Iterator[None]:
    """Stop a training run right after its first epoch's checkpoint, as a killed job would."""
    trainer = importlib.import_module("vssl.aggregate.train")._Trainer
    real = trainer.end_epoch

    def end_epoch(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise _Cut

    with mock.patch.object(trainer, "end_epoch", end_epoch), contextlib.suppress(_Cut):
        yield


def _same_metrics(a: dict[str, float], b: dict[str, float]) -> bool:
    keys = [k for k in a if k not in ("videos_per_s", "seconds")]
    return all(np.isclose(a[k], b.get(k, np.nan), rtol=1e-4, atol=1e-5) for k in keys)


def export_and_probes(c: Check) -> None:
    from vssl.aggregate import export
    from vssl.probe.config import ProbeConfig
    from vssl.probe.run import run_probes

    t = time.perf_counter()
    e = export(c.store(), c.out / "run_resident", EVAL_VIEW, device=c.dev, quiet=True)
    c.row("export", "ok", f"{e.get('done', e)} rows", time.perf_counter() - t)
    t = time.perf_counter()
    cfg = ProbeConfig(view=EVAL_VIEW, knn=True, linear=True, mlp=True, transformer=True, finetune=True,
                      scale=str(c.out / "run_resident"), epochs=c.sizes.probe_epochs, device=c.dev, quiet=True)
    report = run_probes(cfg.request(c.store()))
    rows = ", ".join(f"{r.probe}/{r.features} {r.top1:.0f}" for r in report.results)
    c.row("probes", "ok", rows, time.perf_counter() - t)


def knn_bf16(c: Check) -> None:
    """bf16 shortlist + exact re-rank on the device against CPU faiss: the same neighbour sets."""
    from vssl.probe.knn import KnnConfig, search

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 256))
    tr = centres[rng.integers(0, 50, c.sizes.knn_train)] + rng.normal(size=(c.sizes.knn_train, 256))
    te = centres[rng.integers(0, 50, 512)] + rng.normal(size=(512, 256))
    tr, te = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (tr.astype(np.float32), te.astype(np.float32)))
    t = time.perf_counter()
    _, got = search(tr, te, KnnConfig(backend="torch", precision="bf16", device=c.dev))
    seconds = time.perf_counter() - t
    _, want = search(tr, te, KnnConfig(backend="faiss", device="cpu"))
    same = float((np.sort(got, 1) == np.sort(want, 1)).all(1).mean())
    c.row("k-NN bf16 vs faiss", "ok" if same == 1.0 else "FAIL", f"{same:.1%} of queries identical", seconds)


def throughput(c: Check) -> None:
    from vssl.extract.backbones import create_backbone

    from benchmarks.harness import timeit

    model = create_backbone(c.sizes.backbone).freeze().to(c.device)
    s = model.spec
    x = torch.randn(c.sizes.throughput_batch, 3, s.frames, s.size, s.size, device=c.device)
    rates = {}
    for precision in ("fp32", "bf16"):
        def run() -> None:
            with torch.inference_mode(), autocast(c.device, precision):
                model(x)
            if c.device.type == "cuda":
                torch.cuda.synchronize()
        rates[precision] = len(x) / timeit(run, repeat=3)
    c.row("backbone throughput", "ok", f"fp32 {rates['fp32']:.0f} clips/s, bf16 {rates['bf16']:.0f} clips/s "
          f"({rates['bf16'] / rates['fp32']:.2f}x)", 0.0)


#: the checks in order (each reads what the ones before it wrote)
CHECKS: dict[str, Callable[[Check], None]] = {"videos": videos, "extract": extraction, "aggregate": stage_two,
                                              "probes": export_and_probes, "knn": knn_bf16,
                                              "throughput": throughput}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    ap.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan (device, sizes, checks) and stop")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every check; the exit status is 1 when one failed."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    sizes = Sizes.for_device(device)
    print(f"gpu_check on {device}: {sizes}; checks: {', '.join(CHECKS)}", flush=True)
    if args.dry_run:
        return 0
    with tempfile.TemporaryDirectory(prefix="vssl-gpu-check-") as tmp:
        c = Check(args.out or Path(tmp), device, sizes)
        c.out.mkdir(parents=True, exist_ok=True)
        for name, fn in CHECKS.items():
            try:
                fn(c)
            except Exception as exc:  # one broken branch must not hide the others' figures
                c.row(name, "FAIL", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}", 0.0)
                if name in ("videos", "extract"):  # every later check reads their store
                    break
    print(markdown_table(["check", "status", "figures", "s"], c.rows))
    return int(any(r[1] == "FAIL" for r in c.rows))


if __name__ == "__main__":
    raise SystemExit(main())
