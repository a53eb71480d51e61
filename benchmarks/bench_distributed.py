"""Scale-out: what dividing the work costs and gains (docs/SCALING.md, docs/PERFORMANCE.md).

Three measurements, each a side-by-side comparison in one run:

1. Planning at Kinetics-400 scale (no processes): the time to balance 240k videos over N ranks,
   the stat() cost per video, and the busiest rank's load relative to a perfect split, for
   chunk-count splitting (``store.chunk_ranges(shard)``) vs vssl's size-balanced plan, on two
   simulated collections: trimmed clips (K400-like: sizes lognormal, sigma 0.4, in class order)
   and long-form video (durations lognormal, sigma 1.2).
2. Extraction: ``python -m vssl extract`` alone vs ``torchrun --nproc_per_node 2`` on the same
   generated videos (tiny backbone, one thread per process), wall time including start-up.
3. Training: ``python -m vssl aggregate`` with batch 2B vs 2 ranks of batch B (gloo, CPU), the
   second epoch's videos/s from metrics.csv.

4. ``--cluster``: a simulated cluster (:mod:`benchmarks.cluster_sim`): planning and claiming at
   1M videos / 7,813 chunks / 64 workers, memory maps during verify, a killed worker's re-run;
   written to docs/SCALING.md.

    python benchmarks/bench_distributed.py [--cluster] [--write-doc]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 3
sys.path.insert(0, str(REPO))

from benchmarks.harness import machine, markdown_table, write_section  # noqa: E402
from vssl.distributed import balance_chunks, video_weights  # noqa: E402


def _cover(ranges):
    return np.concatenate([np.arange(a, b) for a, b in ranges]) if ranges else np.zeros(0, int)


def planning(rows: list, notes: list) -> None:
    rng = np.random.default_rng(0)
    n, chunk = 240_000, 64
    chunks = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
    # K400-like: 400 classes in order, per-class mean size varies (resolution/bitrate), lognormal within
    class_scale = np.repeat(rng.lognormal(0, 0.3, 400), n // 400)
    collections = {"trimmed 10 s clips (K400-like)": class_scale * rng.lognormal(0, 0.4, n),
                   "long-form (durations lognormal sigma 1.2)": rng.lognormal(0, 1.2, n),
                   "long-form, manifest sorted by duration": np.sort(rng.lognormal(0, 1.2, n))}
    for name, size in collections.items():
        cost = 1 + size / size.mean()  # true cost model: fixed backbone part + decode part
        for parts in (8, 64):
            t = time.perf_counter()
            shares = balance_chunks(chunks, video_weights_from_sizes(size), parts)
            plan_s = time.perf_counter() - t
            ideal = cost.sum() / parts
            by_size = max(cost[_cover(s)].sum() for s in shares) / ideal
            nc = len(chunks)
            by_count = max(cost[_cover(chunks[i * nc // parts:(i + 1) * nc // parts])].sum()
                           for i in range(parts)) / ideal
            rows.append([name, parts, f"{by_count:.3f}", f"{by_size:.3f}", f"{plan_s * 1000:.0f} ms"])
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(2000):
            p = Path(tmp) / f"{i}.mp4"
            p.write_bytes(b"x" * (100 + i))
            files.append(str(p))
        t = time.perf_counter()
        video_weights(files)
        per = (time.perf_counter() - t) / len(files)
    notes.append(f"stat() per video here: {per * 1e6:.1f} µs (local disk, warm cache) → "
                 f"{per * n:.2f} s for 240k videos")


def video_weights_from_sizes(size: np.ndarray) -> np.ndarray:
    """:func:`video_weights`' formula on given sizes (the simulated files do not exist)."""
    return 1.0 + size / size.mean()


def _run(cmd: list[str], env: dict) -> tuple[float, str]:
    """(wall seconds including interpreter and torchrun start-up, stdout)."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t, proc.stdout


def extraction(rows: list, tmp: Path, env: dict) -> None:
    from tests.videos import write_video

    videos = tmp / "videos"
    for i in range(24):
        write_video(videos / f"c{i % 2}" / f"v{i:02d}.mp4", [400, 60, 300, 40][i % 4], width=320, height=240)
    args = [str(videos), "--views", "uniform:4x2", "--frames", "8", "--size", "64", "--chunk-videos", "2",
            "--quiet", "--json"]
    runs: dict[str, list[tuple[float, float]]] = {"single": [], "dist": []}
    for r in range(ROUNDS):  # interleaved rounds, best of each: the shared machine's load moves a lot
        wall, out = _run([sys.executable, "-m", "vssl", "extract", *args, "--out", str(tmp / f"s1_{r}")], env)
        runs["single"].append((wall, json.loads(out)["seconds"]))
        wall, out = _run(["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "vssl", "extract", *args,
                          "--out", str(tmp / f"s2_{r}")], env)
        runs["dist"].append((wall, json.loads(out)["seconds"]))  # seconds of the slowest rank
    (single, work1), (dist, work2) = (tuple(min(v) for v in zip(*runs[k])) for k in ("single", "dist"))
    rows.append(["extract 24 videos (320x240, 40–400 frames), tiny, uniform:4x2: wall incl. start-up",
                 f"{single:.1f} s", f"{dist:.1f} s", f"{single / dist:.2f}x"])
    rows.append(["the same, time inside extract() (slowest rank)", f"{work1:.1f} s", f"{work2:.1f} s",
                 f"{work1 / work2:.2f}x"])


def _videos_per_s(run: Path) -> float:
    with open(run / "metrics.csv", newline="") as fh:
        return float(list(csv.DictReader(fh))[-1]["videos_per_s"])


def training(rows: list, tmp: Path, env: dict) -> None:
    from vssl.aggregate.synthetic import structured_clip_features
    from vssl.features_store.synthetic import make_synthetic_store

    feats, boxes = structured_clip_features(2048, 16, 128, seed=0)
    store = tmp / "train_store"
    make_synthetic_store(store, feats, np.zeros(2048, int), ["train"] * 2048, view="v", boxes=boxes)
    common = ["--view", "v", "--epochs", "2", "--width", "64", "--heads", "2", "--pred-hidden", "256",
              "--target-hidden", "256", "--device", "cpu", "--precision", "fp32", "--quiet", "--json"]
    a = b = 0.0
    for r in range(ROUNDS):
        _run([sys.executable, "-m", "vssl", "aggregate", str(store), "--out", str(tmp / f"r1_{r}"),
              "--batch-size", "256", *common], env)
        _run(["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "vssl", "aggregate", str(store),
              "--out", str(tmp / f"r2_{r}"), "--batch-size", "128", *common], env)
        a, b = max(a, _videos_per_s(tmp / f"r1_{r}")), max(b, _videos_per_s(tmp / f"r2_{r}"))
    rows.append(["aggregate, global batch 256, D=128, width 64 (epoch 2 videos/s)", f"{a:.0f}/s", f"{b:.0f}/s",
                 f"{b / a:.2f}x"])


def cluster(write_doc: bool) -> None:
    """Issue 18: planning and claiming at 1M videos / 64 workers, maps during verify, a killed worker."""
    from benchmarks.cluster_sim import run_all

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    load = os.getloadavg()[0]
    work, maps, kill, notes = run_all(env)
    text = f"""### Measured: a cluster, simulated (`bench_distributed.py --cluster`)

{machine()}; load average at the start {load:.1f} (2 cores shared with other jobs).

{markdown_table(["1M videos, 7,813 chunks, 64 workers", "time"], work)}

{markdown_table(["memory maps", "live maps, peak", "live after", "time"], maps)}

{markdown_table(["killed worker", "state", "re-run", "result"], kill)}

{chr(10).join('- ' + n for n in notes)}
"""
    print(text)
    if write_doc:
        write_section("cluster", text, REPO / "docs" / "SCALING.md")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write-doc", action="store_true")
    ap.add_argument("--cluster", action="store_true", help="issue 18's simulated cluster measurements only")
    args = ap.parse_args()
    if args.cluster:
        cluster(args.write_doc)
        return
    plan_rows: list = []
    notes: list = []
    planning(plan_rows, notes)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    load = os.getloadavg()[0]
    run_rows: list = []
    with tempfile.TemporaryDirectory() as tmp:
        extraction(run_rows, Path(tmp), env)
        training(run_rows, Path(tmp), env)
    t1 = markdown_table(["collection", "ranks", "busiest rank / ideal: equal chunk counts", "size-balanced (vssl)",
                         "planning time"], plan_rows)
    t2 = markdown_table(["work", "1 process", "2 processes (torchrun, gloo)", "speed-up"], run_rows)
    text = f"""## Scale-out (`torchrun`, `--shard`): planning and 2-process runs

`python benchmarks/bench_distributed.py --write-doc` — {machine()}; one thread per process;
best of {ROUNDS} interleaved rounds; load average at the start {load:.1f} (other jobs share the 2 cores).
See docs/SCALING.md for how the work divides and the expected throughput per GPU count.

{t1}

{chr(10).join('- ' + n for n in notes)}

{t2}

- Planning: equal chunk counts are already within 2–18% on shuffled trimmed clips, but a
  collection listed in length order (a manifest sorted by duration, or a folder of films before
  a folder of clips) leaves the busiest of 64 ranks with ~6x its share; the size-balanced plan
  stays within 1% in every case, in well under a second at Kinetics-400 scale.
- The 2-process rows are start-up and overhead checks, not scaling figures: the machine has 2
  cores and other jobs kept the load average at 4+, so the second process rarely had a core of
  its own. Extraction inside `extract()` still gains 1.7x from two ranks; the 1–2 s torchrun and
  second-interpreter start-up is what the wall-time row adds. Training at this toy size is
  dominated by per-step fixed costs and the gradient all-reduce over TCP, so two CPU ranks are
  slower than one process with the same global batch; on GPUs the all-reduce runs over NVLink
  (see docs/SCALING.md for the per-step estimate).
"""
    print(text)
    if args.write_doc:
        write_section("distributed", text)


if __name__ == "__main__":
    main()
