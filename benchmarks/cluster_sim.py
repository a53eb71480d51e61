"""Issue 18's measurements at cluster scale, simulated on one machine (used by bench_distributed.py --cluster).

1. Planning at 1M videos / 7,813 chunks / 64 workers: from the sizes a store records (one column
   read, plus the status arrays) vs every worker stat'ing every file (timed on 2,000 files here,
   scaled to 1M); the plan's balance.
2. Claiming: 64 worker processes claim the 7,813 chunks (real claim files; "work" is a sleep
   proportional to the chunk's cost), one worker 10x slower than the rest: every chunk done once,
   failed claim attempts, claim latency, and the makespan against a fixed plan's.
3. Memory maps during ``verify`` of a 1,000-chunk store: peak live maps with the LRU bound and the
   release after each scan, against none (as before).
4. A killed worker: two ``--shard`` processes, one SIGKILLed after its first chunk, then re-run
   alone: the store against an uninterrupted single process.
"""

from __future__ import annotations

import json
import mmap as real_mmap
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
import weakref
from pathlib import Path

import numpy as np

N_VIDEOS, CHUNK, WORKERS = 1_000_000, 128, 64


def _sizes(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)  # K400-like: per-class scale, lognormal within a class
    return (np.repeat(rng.lognormal(0, 0.3, 400), -(-n // 400))[:n] * rng.lognormal(0, 0.4, n) * 2e6).astype(np.int64)


def planning(tmp: Path, rows: list, notes: list) -> object:
    from vssl.distributed import file_sizes
    from vssl.extract.work import plan_chunks
    from vssl.features_store import BackboneSpec, FeatureStore, VideoEntry

    sizes = _sizes(N_VIDEOS)
    backbone = BackboneSpec(name="sim", embed_dim=768, frames=16, stride=4, size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    t = time.perf_counter()
    store = FeatureStore.create(tmp / "big.zarr", backbone, [VideoEntry(f"v/{i:07d}.mp4", 0, "train")
                                                             for i in range(N_VIDEOS)], ["c"], CHUNK, sizes=sizes)
    store.create_view("random16", 16, {"sampler": "sim"})
    create_s = time.perf_counter() - t
    t = time.perf_counter()
    plan = plan_chunks(FeatureStore.open(tmp / "big.zarr"), WORKERS, ["random16"])
    plan_s = time.perf_counter() - t
    files = []
    for i in range(2000):
        p = tmp / "stat" / f"{i}.mp4"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x" * (100 + i))
        files.append(str(p))
    t = time.perf_counter()
    file_sizes(files)
    stat_s = (time.perf_counter() - t) / len(files) * N_VIDEOS
    cost = 1 + sizes / sizes.mean()
    per_share = [sum(cost[c * CHUNK:(c + 1) * CHUNK].sum() for c in share) for share in plan.shares]
    n_chunks = -(-N_VIDEOS // CHUNK)
    rows.append(["plan from the store's sizes (read size + status columns, balance 64 shares)", f"{plan_s:.2f} s"])
    rows.append(["plan from stat() of every file, per worker (2,000 files timed, x500; local disk, warm)",
                 f"{stat_s:.2f} s"])
    rows.append(["store creation with the size column (1M rows, once)", f"{create_s:.1f} s"])
    notes.append(f"{N_VIDEOS:,} videos, {n_chunks:,} chunks of {CHUNK}, {WORKERS} shares: busiest share "
                 f"{max(per_share) / (sum(per_share) / WORKERS):.4f} x the ideal; {plan.per_claim} chunks per claim")
    return plan


def _claim_worker(args: tuple) -> dict:
    share, shares, cost, root, unit_s, slow = args
    from vssl.distributed import claims

    walk = list(shares[share]) + [c for k in range(1, len(shares)) for c in shares[(share + k) % len(shares)][::-1]]
    done_dir, claim_dir = root / "done", root / "claims"
    stats = {"claims": 0, "refused": 0, "dup": 0, "claim_s": 0.0}
    for c in walk:
        if (done_dir / str(c)).exists():  # the status snapshot
            continue
        t = time.perf_counter()
        ok = claims.try_claim(claim_dir / str(c))
        stats["claim_s"] += time.perf_counter() - t
        if not ok:
            stats["refused"] += 1
            continue
        if (done_dir / str(c)).exists():  # the re-check after claiming
            claims.release(claim_dir / str(c))
            continue
        stats["claims"] += 1
        time.sleep(unit_s * cost[c] * (10 if slow else 1))
        try:
            with open(done_dir / str(c), "x") as f:
                f.write(str(os.getpid()))
        except FileExistsError:
            stats["dup"] += 1
        claims.release(claim_dir / str(c))
    stats["end"] = time.time()
    return stats


def claiming(plan, tmp: Path, rows: list, notes: list) -> None:
    sizes = _sizes(N_VIDEOS)
    vid_cost = 1 + sizes / sizes.mean()
    n_chunks = -(-N_VIDEOS // CHUNK)
    cost = np.array([vid_cost[c * CHUNK:(c + 1) * CHUNK].sum() for c in range(n_chunks)]) / CHUNK  # ~2 per chunk
    unit_s = 0.004
    root = tmp / "claimsim"
    (root / "done").mkdir(parents=True)
    (root / "claims").mkdir()
    t0 = time.time()
    with mp.get_context("fork").Pool(WORKERS) as pool:
        stats = pool.map(_claim_worker, [(w, plan.shares, cost, root, unit_s, w == 0) for w in range(WORKERS)],
                         chunksize=1)
    wall = max(s["end"] for s in stats) - t0
    done = len(list((root / "done").iterdir()))
    claims_made = sum(s["claims"] for s in stats)
    fixed = max(cost[share].sum() * unit_s * (10 if w == 0 else 1) for w, share in enumerate(plan.shares))
    ideal = (cost.sum() + 9 * cost[plan.shares[0]].sum() / 10) * unit_s / WORKERS
    rows.append(["64 workers claim 7,813 chunks, worker 0 10x slow: makespan with claims", f"{wall:.1f} s"])
    rows.append(["the same work by a fixed plan (each worker its share, computed)", f"{fixed:.1f} s"])
    rows.append(["no overhead and perfect balance (computed)", f"{ideal:.1f} s"])
    lat = sum(s["claim_s"] for s in stats) / max(1, claims_made + sum(s["refused"] for s in stats))
    notes.append(f"chunks done {done:,} of {n_chunks:,}, by {claims_made:,} claims; done twice: "
                 f"{sum(s['dup'] for s in stats)}; claim attempts refused (held by a live worker): "
                 f"{sum(s['refused'] for s in stats):,}; mean claim attempt {lat * 1e3:.2f} ms "
                 f"(64 processes on this machine's cores); worker 0 did {stats[0]['claims']} chunks "
                 f"(its share: {len(plan.shares[0])})")


class _Counting:
    def __init__(self) -> None:
        self.live = self.peak = 0

    def __call__(self, *a, **k):
        m = real_mmap.mmap(*a, **k)
        self.live += 1
        self.peak = max(self.peak, self.live)
        weakref.finalize(m, self._gone)
        return m

    def _gone(self) -> None:
        self.live -= 1


def map_count(tmp: Path, rows: list, notes: list) -> None:
    from vssl.features_store import FeatureStore, rows as rowsmod, verify_store
    from vssl.features_store.synthetic import make_synthetic_store

    n = 1000
    feats = np.random.default_rng(0).normal(size=(n, 2, 8)).astype(np.float32)
    make_synthetic_store(tmp / "maps.zarr", feats, np.zeros(n, int), ["train"] * n, view="v", chunk_videos=1)
    real = rowsmod.mmap
    for label, bound, release in (("LRU bound 256 + release after each scan", "256", True),
                                  ("default bound (4096) + release", "", True),
                                  ("none (before: every map kept)", str(10 ** 9), False)):
        counter = _Counting()
        rowsmod.mmap = types.SimpleNamespace(mmap=counter, ACCESS_READ=real_mmap.ACCESS_READ)
        os.environ["VSSL_MAX_MAPS"] = bound
        original = rowsmod.ChunkMemmapReader.release
        if not release:
            rowsmod.ChunkMemmapReader.release = lambda self: None
        try:
            st = FeatureStore.open(tmp / "maps.zarr")
            t = time.perf_counter()
            assert verify_store(st) == []
            secs = time.perf_counter() - t
            rows.append([f"verify, {n:,} chunks x 2 arrays: {label}", f"{counter.peak:,} peak", f"{counter.live:,} after",
                         f"{secs:.2f} s"])
            del st
        finally:
            rowsmod.mmap = real
            rowsmod.ChunkMemmapReader.release = original
            os.environ.pop("VSSL_MAX_MAPS", None)
    notes.append("at 1M videos a verify maps ~7,813 chunk files per array (features, boxes, per view); "
                 "vm.max_map_count is 65,530 by default, and everything else the process maps counts too")


def killed_worker(tmp: Path, rows: list, notes: list, env: dict) -> None:
    from tests.test_distributed import assert_same_store
    from tests.videos import write_video
    from vssl.features_store import FeatureStore

    videos = tmp / "kv"
    for i in range(12):
        write_video(videos / f"c{i % 2}" / f"v{i:02d}.mp4", [80, 30, 60, 20][i % 4])
    args = [str(videos), "--views", "random:3,uniform:2x2", "--frames", "4", "--size", "32", "--chunk-videos", "2",
            "--seed", "5", "--batch-size", "5", "--quiet", "--json"]
    vssl = [sys.executable, "-m", "vssl", "extract"]
    t = time.perf_counter()
    subprocess.run([*vssl, *args, "--out", str(tmp / "whole")], env=env, check=True, capture_output=True)
    whole_s = time.perf_counter() - t
    out = tmp / "killed"
    t = time.perf_counter()
    procs = [subprocess.Popen([*vssl, *args, "--out", str(out), "--shard", f"{i}/2"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    while True:  # kill shard 1 once a chunk is written
        try:
            if (FeatureStore.open(out).video_status() == 1).sum() >= 2:
                break
        except Exception:
            pass
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    procs[0].wait()
    procs[1].wait()
    at_kill = int((FeatureStore.open(out).video_status() == 1).sum())
    held = len(list((tmp / "killed.claims").iterdir()))
    r = subprocess.run([*vssl, *args, "--out", str(out), "--shard", "1/2"], env=env, check=True, capture_output=True,
                       text=True)
    rerun = json.loads(r.stdout)
    total_s = time.perf_counter() - t
    assert_same_store(out, tmp / "whole")
    rows.append(["2 shards, shard 1 SIGKILLed, then `--shard 1/2` re-run alone",
                 f"{at_kill} of 12 done after the kill, {held} claim(s) left", f"re-run extracted {rerun['processed']}",
                 f"store equal to one uninterrupted process ({whole_s:.1f} s vs {total_s:.1f} s)"])
    notes.append("equal: same status, frame counts, boxes and done flags bit for bit; features to one float16 "
                 "rounding step (the batch composition changes the backbone's float32 sums)")


def run_all(env: dict) -> tuple[list, list, list, list]:
    plan_rows, claim_rows, map_rows, kill_rows, notes = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plan = planning(tmp, plan_rows, notes)
        claiming(plan, tmp, claim_rows, notes)
        map_count(tmp, map_rows, notes)
        killed_worker(tmp, kill_rows, notes, env)
    return plan_rows + claim_rows, map_rows, kill_rows, notes
