"""One check of every CUDA branch, a few minutes on one GPU; one table at the end.

Runs, in order: generated videos → extraction at fp32/bf16/fp16 with ``verify`` → stage two
(resident, streaming, resumed) → export → every probe → bf16 k-NN against CPU faiss → backbone
throughput fp32 vs bf16.

Every row computes numbers and compares them with a stated bound; the row says each measured
value beside its bound and is ``FAIL`` (the exit status 1) when one is off. The bounds are
against the CPU: the same inputs and seed run on the CPU in fp32 (``COS_MIN``/``REL_TOL`` for
features and aggregates, ``PROBE_POINTS``/``PROBE_VIDEOS`` for probe accuracies, ``LOSS_REL`` for
stage two's loss), or a stated floor (throughput, counts). Where there is no CUDA (``--device cpu``, or
``auto`` on a CPU machine) the same rows run at tiny sizes, so the test suite keeps them from
rotting; where the device side would be the CPU reference itself, one side is perturbed
instead, so the comparison still measures something: extraction in bf16, probes on the features
rounded to bf16, stage two's reference trained in bf16; extraction and export are compared with
another code path (another batch size; the model called directly).

The side under test of each comparison comes from one ``device_*`` function (``device_export``,
``device_probes``, ``device_throughput``), so a test substitutes a wrong result there and sees the
row fail (``tests/test_gpu_check.py``). ``--checks`` runs some checks only, reading what the
earlier ones wrote in ``--out`` (``aggregate`` trains its runs anew: their exports in the stores
then belong to the old checkpoints, so re-run it from ``extract``). ``benchmarks/gpu_check.sh``
is the entry point; ``--dry-run`` prints the plan only.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence
from unittest import mock

import numpy as np
import torch

from benchmarks.harness import markdown_table
from vssl.device import autocast, resolve_device

PRECISIONS = ("fp32", "bf16", "fp16")

#: the smallest cosine between a row (a video's clip features, a backbone output) and the same row
#: of its reference, by the precision of the side under test. bf16: EfficientNet-Lite0's clip
#: embeddings under bf16 autocast reach cosine 0.9894 at worst against fp32's (docs/PERFORMANCE.md,
#: "Extraction precision"); fp16 keeps 3 more mantissa bits; fp32 on CUDA runs cuDNN's convolutions in
#: TF32. A misplaced row or a broken kernel is far off (cosine ~0 to 0.9 between different videos).
COS_MIN = {"bf16": 0.98, "fp16": 0.995, "fp32": 0.999}
#: the largest max|a - b| / max|b| of an fp32 result ``a`` against the CPU's fp32 ``b``: on the CPU
#: the same arithmetic in another order (batch size, blocking); on CUDA other kernels (TF32 where on)
REL_TOL = {"cpu": 1e-5, "cuda": 1e-2}
#: a probe row's top-1 may differ from the CPU's by this many points, or by this many test videos
#: (whichever is more): other kernels move a few borderline videos, never a whole class
PROBE_POINTS, PROBE_VIDEOS = 5.0, 2
#: stage two's final loss may differ from the CPU run's by this fraction (same data, seed, steps)
LOSS_REL = 0.05
#: the most a final metric of two runs that must agree may differ, relative to its size
SAME_RUN_REL = 1e-4
#: throughput floors: on CUDA the backbone must beat the CPU's fp32 rate and bf16 must not fall far
#: below fp32 (a slow path); the CPU has an absolute floor (the tiny backbone does ~100 clips/s)
CUDA_OVER_CPU, BF16_OVER_FP32, CPU_FLOOR = 1.0, 0.5, 1.0

OPS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "<=": ("≤", lambda v, b: v <= b), ">=": ("≥", lambda v, b: v >= b), "==": ("=", lambda v, b: v == b)}


@dataclass(frozen=True)
class Figure:
    """One number of a row, and the bound it must meet (``op`` None: reported, not bounded)."""

    what: str
    value: float
    op: str | None = None
    bound: float | None = None

    @property
    def holds(self) -> bool:
        """Within the bound (a NaN or infinite value never is)."""
        return self.op is None or (math.isfinite(self.value) and OPS[self.op][1](self.value, self.bound))

    def __str__(self) -> str:
        text = f"{self.what} {self.value:.4g}"
        if self.op is not None:
            text += f" ({'' if self.holds else 'OFF: '}bound {OPS[self.op][0]} {self.bound:.4g})"
        return text


def at_most(what: str, value: float, bound: float) -> Figure:
    return Figure(what, float(value), "<=", float(bound))


def at_least(what: str, value: float, bound: float) -> Figure:
    return Figure(what, float(value), ">=", float(bound))


def exactly(what: str, value: float, bound: float) -> Figure:
    return Figure(what, float(value), "==", float(bound))


@dataclass
class Sizes:
    """How big each check is: ``gpu`` fills a few minutes of one GPU, ``tiny`` seconds of a CPU."""

    videos: int
    backbone: str
    frames: int
    size: int
    epochs: int
    probe_epochs: int
    probe_min_steps: int | None     # None: the probes' own step floor; 0 in seconds-long CPU runs
    knn_train: int
    throughput_batch: int
    throughput_repeat: int

    @classmethod
    def for_device(cls, device: torch.device) -> "Sizes":
        if device.type == "cuda":
            return cls(videos=120, backbone="efficientnet-lite0", frames=2, size=112, epochs=20, probe_epochs=20,
                       probe_min_steps=None, knn_train=200_000, throughput_batch=64, throughput_repeat=3)
        return cls(videos=24, backbone="tiny", frames=4, size=32, epochs=2, probe_epochs=1, probe_min_steps=0,
                   knn_train=2_000, throughput_batch=4, throughput_repeat=1)


@dataclass
class Check:
    """What the run shares: where it writes, the device, the sizes, and the table's rows."""

    out: Path
    device: torch.device
    sizes: Sizes
    rows: list[list[object]] = field(default_factory=list)

    def row(self, name: str, figures: Sequence[Figure], seconds: float) -> bool:
        """Record a row: ``ok`` when every bounded figure holds, else ``FAIL``. A row without a
        bounded figure is a bug of this script (it could never fail)."""
        if not any(f.op is not None for f in figures):
            raise ValueError(f"row '{name}' states no bound")
        ok = all(f.holds for f in figures)
        self._add(name, "ok" if ok else "FAIL", ", ".join(map(str, figures)), seconds)
        return ok

    def skip(self, name: str, why: str) -> None:
        self._add(name, "skipped", why, 0.0)

    def fail(self, name: str, why: str) -> None:
        self._add(name, "FAIL", why, 0.0)

    def _add(self, name: str, status: str, figure: str, seconds: float) -> None:
        self.rows.append([name, status, figure, round(seconds, 1)])
        print(f"{name}: {status} {figure} ({seconds:.1f} s)", flush=True)

    @property
    def dev(self) -> str:
        return str(self.device)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def rel_tol(self) -> float:
        """:data:`REL_TOL` of this device's fp32 results against the CPU's."""
        return REL_TOL[self.device.type]

    def agreement(self, got: np.ndarray, want: np.ndarray, precision: str) -> list[Figure]:
        """Rows of ``got`` against the same rows of ``want``: the smallest cosine (:data:`COS_MIN` of
        ``precision``) and the largest relative difference (bounded for fp32 on the CPU only, where
        no other kernel is involved; elsewhere a few outlying elements may move more)."""
        rel = rel_diff(got, want)
        exact = precision == "fp32" and not self.cuda
        return [at_least("min cosine", min_cosine(got, want), COS_MIN[precision]),
                at_most("max rel diff", rel, self.rel_tol) if exact else Figure("max rel diff", rel)]

    def store(self, precision: str = "fp32") -> Path:
        return self.out / f"store_{precision}.zarr"

    def fresh(self, name: str) -> Path:
        """``out/name``, emptied: a check's own output, so a check can run again on the same ``--out``."""
        path = self.out / name
        shutil.rmtree(path, ignore_errors=True)
        return path


TRAIN_VIEW, EVAL_VIEW = "random8", "uniform2x1"


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the reference's magnitude max |b| (inf where shapes differ)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return math.inf
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)) if b.size else 0.0


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine between matching rows of two ``[..., D]`` arrays."""
    a, b = (np.asarray(x, np.float64).reshape(-1, x.shape[-1]) for x in (a, b))
    return float(((a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)).min())


# ----------------------------------------------------------------------------- videos and extraction


def videos(c: Check) -> None:
    from vssl.demo.dataset import generate_dataset

    t = time.perf_counter()
    manifest = generate_dataset(c.out / "videos", num_videos=c.sizes.videos, frames=(16, 32), sizes=(48, 64))
    listed = sum(1 for _ in manifest.open()) - 1
    files = sum(1 for p in (c.out / "videos").rglob("*.mp4") if p.stat().st_size > 0)
    c.row("videos", [exactly("in the manifest", listed, c.sizes.videos), exactly("files", files, c.sizes.videos)],
          time.perf_counter() - t)


def _extract(c: Check, out: Path, precision: str, device: str, views: list[str], **kw):
    from vssl.extract.pipeline import extract

    shutil.rmtree(out, ignore_errors=True)
    return extract(c.out / "videos" / "manifest.csv", out, backbone=c.sizes.backbone, views=views,
                   frames=c.sizes.frames, size=c.sizes.size, precision=precision, device=device, progress=False, **kw)


def _features(path: Path) -> np.ndarray:
    from vssl.features_store import FeatureStore

    store = FeatureStore.open(path)
    return store.view(EVAL_VIEW).read(np.arange(store.num_videos)).features.astype(np.float32)


def extraction(c: Check) -> None:
    """Each precision into its own store, verified; bf16/fp16 features against fp32's, and fp32's
    against a CPU extraction of another batch size (batches that span videos differently)."""
    from vssl.features_store import FeatureStore, verify_store

    for precision in PRECISIONS:
        if precision == "fp16" and not c.cuda:
            c.skip("extract fp16", "needs CUDA")
            continue
        t = time.perf_counter()
        # a CPU's bf16 convolutions are slow: there only the compared view
        views = ["random:8", "uniform:2x1"] if precision == "fp32" or c.cuda else ["uniform:2x1"]
        s = _extract(c, c.store(precision), precision, c.dev, views)
        problems = verify_store(FeatureStore.open(c.store(precision)))
        figures = [exactly("failed", s.failed, 0), exactly("verify problems", len(problems), 0),
                   Figure("clips/s", s.clips_per_s)]
        if precision != "fp32":       # against fp32's features on the same device
            figures[:0] = c.agreement(_features(c.store(precision)), _features(c.store("fp32")), precision)
        c.row(f"extract {precision}", figures, time.perf_counter() - t)
    same_rows_as_cpu(c)


def same_rows_as_cpu(c: Check) -> None:
    """The device's fp32 rows against a CPU fp32 extraction with batches of 3: on CUDA the pinned
    joins of batches spanning videos, the upload stream and results read one batch late; on the
    CPU the batching. Every video gets its own rows back."""
    t = time.perf_counter()
    out = c.out / "extract-cpu-reference.zarr"
    _extract(c, out, "fp32", "cpu", ["uniform:2x1"], batch_size=3)
    got, want = _features(c.store("fp32")), _features(out)
    c.row("extract fp32 = cpu rows", c.agreement(got, want, "fp32"), time.perf_counter() - t)


# ----------------------------------------------------------------------------- stage two


def _scale_config(c: Check, **kw):
    from vssl.aggregate import ScaleConfig

    return ScaleConfig(**{**dict(width=64, heads=2, pred_hidden=128, target_hidden=128, epochs=c.sizes.epochs,
                                 batch_size=4, device=c.dev, checkpoint_every=1), **kw})


def metrics_gap(a: dict[str, float], b: dict[str, float]) -> float:
    """The largest relative difference of two runs' final metrics (timings left out)."""
    keys = [k for k in a if k not in ("videos_per_s", "seconds")]
    return max((abs(a[k] - b.get(k, math.nan)) / max(abs(b.get(k, math.nan)), 1e-3) for k in keys), default=0.0)


def stage_two(c: Check) -> None:
    """Resident and streaming training give the same metrics; a resumed run equals one run; the
    device's loss is the CPU's (stage two's reference: fp32 on the CPU; in CPU mode bf16)."""
    from vssl.aggregate import train

    runs = {}
    for name, memory in (("resident", 0), ("streaming", 1)):
        t = time.perf_counter()
        s = train(c.store(), TRAIN_VIEW, c.fresh(f"run_{name}"), _scale_config(c, max_memory_bytes=memory), quiet=True)
        runs[name] = s
        c.row(f"aggregate {name}", [exactly("resident", s.resident, name == "resident"),
                                    Figure("loss", s.final.get("loss", math.nan)), Figure("videos/s", s.videos_per_s)],
              time.perf_counter() - t)
    c.row("resident = streaming", [at_most("max rel diff of final metrics",
                                           metrics_gap(runs["streaming"].final, runs["resident"].final), SAME_RUN_REL)],
          0.0)
    t = time.perf_counter()
    with _cut_after_first_epoch():
        train(c.store(), TRAIN_VIEW, c.fresh("run_resumed"), _scale_config(c), quiet=True)
    resumed = train(c.store(), TRAIN_VIEW, c.out / "run_resumed", _scale_config(c), resume=True, quiet=True)
    gap = metrics_gap(resumed.final, runs["resident"].final)
    c.row("resume", [at_most("max rel diff of final metrics to one run", gap, SAME_RUN_REL)], time.perf_counter() - t)
    t = time.perf_counter()
    reference = train(c.store(), TRAIN_VIEW, c.fresh("run_cpu_reference"),
                      _scale_config(c, device="cpu", precision="fp32" if c.cuda else "bf16"), quiet=True)
    loss, want = runs["resident"].final["loss"], reference.final["loss"]
    c.row("aggregate loss = cpu", [at_most("rel diff of the final loss", abs(loss - want) / abs(want), LOSS_REL),
                                   Figure("cpu loss", want)], time.perf_counter() - t)


class _Cut(Exception):
    """The run stopped on purpose, its first epoch's checkpoint written."""


@contextlib.contextmanager
def _cut_after_first_epoch() -> Iterator[None]:
    """Stop a training run right after its first epoch's checkpoint, as a killed job would."""
    trainer = importlib.import_module("vssl.aggregate.training")._Trainer
    real = trainer.end_epoch

    def end_epoch(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise _Cut

    with mock.patch.object(trainer, "end_epoch", end_epoch), contextlib.suppress(_Cut):
        yield


# ----------------------------------------------------------------------------- export and probes


def device_export(c: Check) -> tuple[np.ndarray, np.ndarray]:
    """The side under test: ``vssl aggregate --export`` of the resident run on the device (fp32),
    read back: SET tokens ``[n, H]`` and refined clips ``[n, K, H]`` of the usable videos."""
    from vssl.aggregate import aggregate_group, export
    from vssl.features_store import FeatureStore

    run = c.out / "run_resident"
    export(c.store(), run, EVAL_VIEW, device=c.dev, precision="fp32", quiet=True)
    store = FeatureStore.open(c.store())
    idx = np.flatnonzero(store.usable(EVAL_VIEW))
    rows = store.row_group(aggregate_group(run.name, EVAL_VIEW))
    return rows.read("set_token", idx), rows.read("clips", idx)


def cpu_export(c: Check) -> tuple[np.ndarray, np.ndarray]:
    """The reference: the run's model called directly on the CPU in fp32, every usable video at once."""
    from vssl.aggregate import load_run
    from vssl.features_store import FeatureStore

    model, _, _ = load_run(c.out / "run_resident", "cpu")
    store = FeatureStore.open(c.store())
    f, b = store.view(EVAL_VIEW).read(np.flatnonzero(store.usable(EVAL_VIEW)))
    with torch.inference_mode():
        clips, token = model.encode(torch.from_numpy(f).float(), torch.from_numpy(b).float())
    return token.numpy(), clips.numpy()


def export_check(c: Check) -> None:
    t = time.perf_counter()
    (token, clips), (want_token, want_clips) = device_export(c), cpu_export(c)
    c.row("export = cpu", [exactly("rows", len(token), len(want_token)),
                           at_most("max rel diff of SET", rel_diff(token, want_token), c.rel_tol),
                           at_most("max rel diff of refined clips", rel_diff(clips, want_clips), c.rel_tol)],
          time.perf_counter() - t)


ProbeRows = dict[str, tuple[float, int, np.ndarray]]


def _probe_top1(c: Check, store: Path, device: str, precision: str) -> ProbeRows:
    """Every probe on ``store`` with the resident run: ``{probe/features: (top-1, test videos, scores)}``."""
    from vssl.probe.config import ProbeConfig
    from vssl.probe.run import run_probes

    cfg = ProbeConfig(view=EVAL_VIEW, knn=True, linear=True, mlp=True, transformer=True, finetune=True,
                      scale=str(c.out / "run_resident"), epochs=c.sizes.probe_epochs,
                      min_steps=c.sizes.probe_min_steps, device=device,
                      precision=precision, knn_precision="fp32", quiet=True)
    report = run_probes(cfg.request(store))
    return {f"{r.probe}/{r.features}": (float(r.top1), int(r.n_test), np.asarray(r.scores[0])) for r in report.results}


def device_probes(c: Check) -> ProbeRows:
    """The side under test: every probe on the device at its precision (``auto``). In CPU mode,
    where that is the reference's own arithmetic, the probes read the features rounded to bf16."""
    return _probe_top1(c, c.store() if c.cuda else bf16_rounded_store(c), c.dev, "auto")


def bf16_rounded_store(c: Check) -> Path:
    """A copy of the fp32 store whose probed view holds its features rounded to bf16 (and no
    aggregates: the probes export the run's anew from those features). The store's record is
    unchanged, so the run trained on the fp32 store is accepted."""
    import zarr

    def no_aggregates(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n != "zarr.json"] if Path(folder).name == "aggregates" else []

    out = c.fresh("store_fp32_bf16_rounded.zarr")
    shutil.copytree(c.store(), out, ignore=no_aggregates)
    features = zarr.open_array(str(out / "views" / EVAL_VIEW / "features"), mode="r+")
    rounded = torch.from_numpy(np.asarray(features[:], np.float32)).bfloat16().float().numpy()
    features[:] = rounded.astype(features.dtype)
    return out


def cpu_probes(c: Check) -> ProbeRows:
    """The reference: every probe on the CPU in fp32, on the fp32 features, with the same seed."""
    return _probe_top1(c, c.store(), "cpu", "fp32")


def probes(c: Check) -> None:
    """One row per probe: its top-1 against the CPU's (:data:`PROBE_POINTS`, :data:`PROBE_VIDEOS`)."""
    t = time.perf_counter()
    got = device_probes(c)
    seconds = time.perf_counter() - t
    want = cpu_probes(c)
    missing = (math.nan, 0, np.zeros(0))
    for name in [*want, *(n for n in got if n not in want)]:
        (top1, _, scores), (ref, n_ref, ref_scores) = got.get(name, missing), want.get(name, missing)
        bound = max(PROBE_POINTS, PROBE_VIDEOS * 100.0 / max(n_ref, 1))
        c.row(f"probe {name}", [at_most("top-1 difference to cpu", abs(top1 - ref), bound), Figure("top-1", top1),
                                Figure("cpu top-1", ref),
                                Figure("scores' max rel diff", rel_diff(scores, ref_scores))], seconds)
        seconds = 0.0


# ----------------------------------------------------------------------------- k-NN and throughput


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
    same = float((np.sort(got, 1) == np.sort(want, 1)).all(1).mean()) * 100.0
    c.row("k-NN bf16 vs faiss", [at_least("% queries with faiss's neighbours", same, 100.0)], seconds)


def backbone_rate(model, x: torch.Tensor, precision: str, repeat: int) -> tuple[float, np.ndarray]:
    """Clips per second of ``model`` on the batch ``x`` at ``precision``, and its output (float32, CPU)."""
    from benchmarks.harness import timeit

    def run() -> torch.Tensor:
        with torch.inference_mode(), autocast(x.device, precision):
            out = model(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        return out

    out = run().float().cpu().numpy()               # also the warm-up
    return len(x) / timeit(run, repeat=repeat, warmup=0), out


def device_throughput(c: Check, x: torch.Tensor) -> dict[str, tuple[float, np.ndarray]]:
    """The side under test: the backbone on the device at fp32 and bf16: ``{precision: (clips/s, output)}``."""
    from vssl.extract.backbones import create_backbone

    torch.manual_seed(0)
    model = create_backbone(c.sizes.backbone).freeze().to(c.device)
    return {p: backbone_rate(model, x.to(c.device), p, c.sizes.throughput_repeat) for p in ("fp32", "bf16")}


def throughput(c: Check) -> None:
    """fp32: above the CPU's rate (CUDA) or a floor (CPU), outputs equal to the CPU's; bf16: its
    output within bf16's tolerance of fp32's and, on CUDA, not far below fp32's rate."""
    from vssl.extract.backbones import create_backbone

    torch.manual_seed(0)
    cpu_model = create_backbone(c.sizes.backbone).freeze()
    s = cpu_model.spec
    x = torch.randn(c.sizes.throughput_batch, 3, s.frames, s.size, s.size, generator=torch.Generator().manual_seed(0))
    rates = device_throughput(c, x)
    (fp32, out32), (bf16, out16) = rates["fp32"], rates["bf16"]
    if c.cuda:
        cpu_rate, cpu_out = backbone_rate(cpu_model, x, "fp32", c.sizes.throughput_repeat)
        c.row("backbone throughput fp32", [at_least("clips/s over the cpu's", fp32 / cpu_rate, CUDA_OVER_CPU),
                                           Figure("clips/s", fp32), Figure("cpu clips/s", cpu_rate),
                                           *c.agreement(out32, cpu_out, "fp32")], 0.0)
        bf16_rate = at_least("bf16 / fp32 rate", bf16 / fp32, BF16_OVER_FP32)
    else:
        c.row("backbone throughput fp32", [at_least("clips/s", fp32, CPU_FLOOR)], 0.0)
        bf16_rate = Figure("bf16 / fp32 rate", bf16 / fp32)      # a CPU's bf16 autocast is no fast path
    c.row("backbone throughput bf16", [*c.agreement(out16, out32, "bf16"), bf16_rate, Figure("clips/s", bf16)], 0.0)


#: the checks in order (each reads what the ones before it wrote)
CHECKS: dict[str, Callable[[Check], None]] = {"videos": videos, "extract": extraction, "aggregate": stage_two,
                                              "export": export_check, "probes": probes, "knn": knn_bf16,
                                              "throughput": throughput}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    ap.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--checks", default=",".join(CHECKS),
                    help=f"comma-separated checks to run, in this order: {', '.join(CHECKS)} (default: all); "
                         "a later check reads what the earlier ones wrote in --out")
    ap.add_argument("--dry-run", action="store_true", help="print the plan (device, sizes, checks) and stop")
    args = ap.parse_args(argv)
    chosen = [name.strip() for name in args.checks.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(CHECKS))
    if unknown or not chosen:
        ap.error(f"--checks {args.checks}: unknown {', '.join(unknown) or 'none given'}; "
                 f"choose from {', '.join(CHECKS)}")
    args.checks = [name for name in CHECKS if name in chosen]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the checks; the exit status is 1 when a row failed."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    sizes = Sizes.for_device(device)
    print(f"gpu_check on {device}: {sizes}; checks: {', '.join(args.checks)}", flush=True)
    if args.dry_run:
        return 0
    with tempfile.TemporaryDirectory(prefix="vssl-gpu-check-") as tmp:
        c = Check(args.out or Path(tmp), device, sizes)
        c.out.mkdir(parents=True, exist_ok=True)
        for name in args.checks:
            try:
                CHECKS[name](c)
            except Exception as exc:  # one broken branch must not hide the others' figures
                c.fail(name, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
                if name in ("videos", "extract"):  # every later check reads their store
                    break
    print(markdown_table(["check", "status", "figures", "s"], c.rows))
    failed = [r[0] for r in c.rows if r[1] == "FAIL"]
    if failed:
        print(f"FAILED: {', '.join(failed)}", flush=True)
    return int(bool(failed))


if __name__ == "__main__":
    raise SystemExit(main())
