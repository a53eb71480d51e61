"""Issue 18's measurements at cluster scale, simulated on one machine (used by bench_distributed.py --cluster).

1. Planning at 1M videos / 7,813 chunks / 64 workers: from the sizes a store records (one column
   read, plus the status arrays) vs every worker stat'ing every file (timed on 2,000 files here,
   scaled to 1M); the plan's balance.
2. Claiming: 64 workers claim the 7,813 chunks through the real :class:`~vssl.extract.work.ClaimQueue`
   and real claim files (a discrete-event simulation in one process, each worker with its own claim
   token and clock), one worker 10x slower than the rest: every chunk done once, claim attempts,
   claim-file cost, and the makespan against a fixed plan's.
3. Memory maps during ``verify`` and stage two's resident load of a 1,000-chunk store: peak and
   remaining live maps with the LRU bound and the release after each scan, against none (as before).
4. A killed worker: two ``--shard`` processes, one SIGKILLed after its first chunk, then re-run
   alone: the store against an uninterrupted single process.
"""

from __future__ import annotations

import json
import mmap as real_mmap
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
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


UNIT_S = 0.04  # simulated seconds of work per unit of chunk cost (~2 units per chunk)


def _sim_queue():
    from vssl.extract.work import ClaimQueue

    class SimQueue(ClaimQueue):
        """The real queue (claim files, markers, stealing) over a simulated store: a chunk's status is a file."""

        def _has_work(self, c: int) -> bool:
            return not (self.sim_done / str(c)).exists()

    return SimQueue


def claiming(plan, tmp: Path, rows: list, notes: list) -> None:
    """64 workers as a discrete-event simulation in one process: each has its own claim token (so the
    others' claims are live and refused), its real claim-file operations are timed and added to its
    own clock (as if each had a core), and its work is virtual time: cost x UNIT_S (x10 for worker 0)."""
    import heapq

    from vssl.distributed import claims

    sizes = _sizes(N_VIDEOS)
    vid_cost = 1 + sizes / sizes.mean()
    n_chunks = -(-N_VIDEOS // CHUNK)
    cost = np.array([vid_cost[c * CHUNK:(c + 1) * CHUNK].sum() for c in range(n_chunks)]) / CHUNK  # ~2 per chunk
    root = tmp / "claimsim"
    for d in ("store", "simdone"):
        (root / d).mkdir(parents=True)
    store = types.SimpleNamespace(path=root / "store", chunk_videos=CHUNK, num_videos=N_VIDEOS)
    attempts, real_try = [0], claims.try_claim

    def counted(*a, **k):
        attempts[0] += 1
        return real_try(*a, **k)

    claims.try_claim = counted
    queues, iters, tokens, done_by = [], [], [], [0] * WORKERS
    for w in range(WORKERS):
        claims._TOKEN = (os.getpid(), f"worker{w:02d}")
        q = _sim_queue()(store, ["v"], plan, w, stale_s=1e9)
        q.sim_done = root / "simdone"
        queues.append(q)
        iters.append(iter(q))
        tokens.append(claims._TOKEN)
    events = [(0.0, w, None) for w in range(WORKERS)]  # (virtual time, worker, batch it finished)
    heapq.heapify(events)
    end, op_s, dup = [0.0] * WORKERS, 0.0, 0
    t_wall = time.perf_counter()
    while events:
        now, w, finished = heapq.heappop(events)
        claims._TOKEN = tokens[w]
        for c in finished or []:
            try:
                with open(root / "simdone" / str(c), "x"):  # the chunk write
                    pass
            except FileExistsError:
                dup += 1
        t = time.perf_counter()
        batch = next(iters[w], None)  # releases (and marks) the last batch, claims the next
        spent = time.perf_counter() - t
        op_s += spent
        if batch is None:
            end[w] = now + spent
            continue
        chunks = [c for a, b in batch for c in range(a // CHUNK, -(-b // CHUNK))]
        done_by[w] += len(chunks)
        work = sum(cost[c] for c in chunks) * UNIT_S * (10 if w == 0 else 1)
        heapq.heappush(events, (now + spent + work, w, chunks))
    wall = time.perf_counter() - t_wall
    claims.try_claim, claims._TOKEN = real_try, None
    done = len(list((root / "simdone").iterdir()))
    fixed = max(cost[share].sum() * UNIT_S * (10 if w == 0 else 1) for w, share in enumerate(plan.shares))
    work = cost.sum() * UNIT_S
    rows.append([f"64 workers, {n_chunks:,} chunks (~{UNIT_S * 2 * 1000:.0f} ms of work each), worker 0 10x slower: "
                 "makespan by claims (simulated clock, real claim files)", f"{max(end):.1f} s"])
    rows.append(["the same work by a fixed plan, each worker its own share (computed)", f"{fixed:.1f} s"])
    rows.append(["perfect balance, no overhead, worker 0 as fast as the others (computed)", f"{work / WORKERS:.1f} s"])
    notes.append(f"claims: chunks done {done:,} of {n_chunks:,}, done twice: {dup}; claim attempts {attempts[0]:,} "
                 f"({attempts[0] - n_chunks:,} refused or found done); all claim-file work of the 64 workers together "
                 f"{op_s:.1f} s ({op_s / max(1, attempts[0]) * 1e3:.2f} ms per attempt, local disk; the simulation "
                 f"took {wall:.0f} s); worker 0 did {done_by[0]} chunks (its share: {len(plan.shares[0])}), the "
                 f"others {min(done_by[1:])}–{max(done_by[1:])}")


def map_count(tmp: Path, rows: list, notes: list) -> None:
    from vssl.features_store import FeatureStore, rows as rowsmod, verify_store
    import torch

    from tests.features_store.test_store_durability import MapLimit
    from vssl.aggregate.data import ResidentFeed
    from vssl.features_store.synthetic import make_synthetic_store

    n = 1000
    feats = np.random.default_rng(0).normal(size=(n, 2, 8)).astype(np.float32)
    make_synthetic_store(tmp / "maps.zarr", feats, np.zeros(n, int), ["train"] * n, view="v", chunk_videos=1)
    real = rowsmod.mmap
    for label, bound, release in (("LRU bound 256 + release after each scan", "256", True),
                                  ("default bound (4096) + release", "", True),
                                  ("none (before: every map kept)", str(10 ** 9), False)):
        counter = MapLimit()
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
            rows.append([f"verify, {n:,} chunks x 2 arrays: {label}", f"{counter.peak:,}", f"{counter.live:,}",
                         f"{secs:.2f} s"])
            counter.peak = counter.live
            t = time.perf_counter()
            ResidentFeed(st.view("v"), np.arange(n), torch.device("cpu"))  # stage two's load, the view kept open
            rows.append([f"stage two's resident load, same store: {label}", f"{counter.peak:,}", f"{counter.live:,}",
                         f"{time.perf_counter() - t:.2f} s"])
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
    def kill_after_a_chunk(out: Path, procs: list, victim: int) -> None:
        while True:  # kill once a chunk is written
            try:
                if (FeatureStore.open(out).video_status() == 1).sum() >= 2:
                    break
            except Exception:
                pass
            time.sleep(0.02)
        procs[victim].send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()

    for label, shards in (("2 shards, shard 1 SIGKILLed after its first chunk; then `--shard 1/2` re-run", 2),
                          ("`--shard 1/2` alone, SIGKILLed after its first chunk; then re-run", 1)):
        out = tmp / f"killed{shards}"
        t = time.perf_counter()
        ids = range(2) if shards == 2 else [1]
        procs = [subprocess.Popen([*vssl, *args, "--out", str(out), "--shard", f"{i}/2"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in ids]
        kill_after_a_chunk(out, procs, len(procs) - 1)
        st = FeatureStore.open(out)
        at_kill = int(np.all([st.usable(v) for v in st.view_names()], axis=0).sum())  # table and every view
        held = len([p for p in (tmp / f"killed{shards}.claims").iterdir() if not p.name.startswith("done-")])
        r = subprocess.run([*vssl, *args, "--out", str(out), "--shard", "1/2"], env=env, check=True,
                           capture_output=True, text=True)
        rerun = json.loads(r.stdout)
        total_s = time.perf_counter() - t
        assert_same_store(out, tmp / "whole")
        rows.append([label, f"{at_kill} of 12 done, {held} claim(s) of the dead left",
                     f"re-run extracted {rerun['processed']}", f"equal to one uninterrupted process "
                     f"({whole_s:.1f} s; killed + re-run {total_s:.1f} s)"])
    notes.append("killed worker: equal means the same status, frame counts, boxes and done flags bit for bit, "
                 "features to one float16 rounding step (the batch composition changes the backbone's float32 "
                 "sums). With 2 shards the survivor finishes every chunk nobody holds (and takes over a dead owner's "
                 "claim when it reaches it after the death); the re-run takes over what is left. Done = done in the "
                 "video table and in every view: a video whose table entry was written before the kill but not its "
                 "done flags is redone")


def run_all(env: dict) -> tuple[list, list, list, list]:
    plan_rows, claim_rows, map_rows, kill_rows, notes = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plan = planning(tmp, plan_rows, notes)
        claiming(plan, tmp, claim_rows, notes)
        map_count(tmp, map_rows, notes)
        killed_worker(tmp, kill_rows, notes, env)
    return plan_rows + claim_rows, map_rows, kill_rows, notes
