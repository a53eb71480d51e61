"""Scale-out: torchrun ranks and --shard tasks (2 processes, gloo backend, CPU).

Distributed extraction must write the store a single process writes; distributed training must
follow single-process training with the same global batch; rank 0 alone writes; killed runs resume.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests import distributed_workers as workers
from tests.aggregate_helpers import assert_same_weights
from tests.videos import write_video
from vssl.aggregate.synthetic import structured_clip_features
from vssl.distributed import balance_chunks, rank_env, video_weights
from vssl.errors import VsslError
from vssl.extract.distributed import extract_shared, plan_shares
from vssl.extract.pipeline import extract
from vssl.features_store import FeatureStore
from vssl.features_store.synthetic import make_synthetic_store

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, *args, world: int = 2) -> None:
    mp.start_processes(fn, args=(world, free_port(), *args), nprocs=world, start_method="spawn", join=True)


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    st = FeatureStore.open(path)
    out = {"status": st.video_status(), "num_frames": st.num_frames(), "paths": st.paths()}
    for v in st.view_names():
        f, b = st.view(v).read(np.arange(st.num_videos))
        out[f"{v}/features"], out[f"{v}/boxes"], out[f"{v}/done"] = f, b, st.view(v).done()
    return out


def assert_same_store(a: Path, b: Path) -> None:
    """Same videos, status, frames and boxes; features equal up to one float16 rounding step, since
    the backbone's float32 sums depend on how clips of other videos share a batch (as with --batch-size)."""
    x, y = store_arrays(a), store_arrays(b)
    assert x.keys() == y.keys()
    for k in x:
        if k.endswith("/features"):
            np.testing.assert_allclose(x[k].astype(np.float32), y[k].astype(np.float32), rtol=2 ** -10,
                                       atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """9 videos, the long ones (55..70 frames) first: equal chunk counts would give one rank most work."""
    root = tmp_path_factory.mktemp("dist_videos")
    for i, n in enumerate([70, 65, 60, 55, 9, 10, 9, 11, 10]):
        write_video(root / ("a" if i < 4 else "b") / f"v{i}.mp4", n)
    return root


@pytest.fixture(scope="module")
def reference_store(videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "store"
    extract(videos, out, **workers.extract_kwargs())
    return out


# ---------------------------------------------------------------- planning (no processes)


def test_rank_env_reads_torchrun_variables_and_rejects_nonsense():
    assert rank_env({}) == rank_env({"WORLD_SIZE": "1"})
    e = rank_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (e.rank, e.world_size, e.local_rank, e.distributed, e.is_main) == (3, 4, 1, True, False)
    for bad in ({"RANK": "4", "WORLD_SIZE": "4"}, {"WORLD_SIZE": "two"}):
        with pytest.raises(VsslError, match="RANK"):
            rank_env(bad)


def test_balance_chunks_by_weight_not_count():
    chunks = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
    weights = np.array([10, 10, 1, 1, 1, 1, 1, 1, 5], float)  # chunk costs 20, 2, 2, 2, 5
    shares = balance_chunks(chunks, weights, 2)
    # hand LPT: 20 -> rank 0; 5 -> rank 1; 2, 2, 2 -> rank 1 (7, 9, 11 < 20)
    assert shares == [[(0, 2)], [(2, 9)]]
    covered = sorted(r for s in balance_chunks(chunks, np.ones(9), 3) for r in s)
    assert _cover(covered) == list(range(9))  # every video exactly once, whatever the weights
    assert balance_chunks(chunks, weights, 7)[5:] == [[], []]  # more ranks than chunks: idle ranks


def _cover(ranges):
    return [i for a, b in ranges for i in range(a, b)]


def test_video_weights_follow_file_size(tmp_path):
    (tmp_path / "small").write_bytes(b"x" * 100)
    (tmp_path / "big").write_bytes(b"x" * 300)
    w = video_weights([str(tmp_path / "small"), str(tmp_path / "big"), str(tmp_path / "missing")])
    np.testing.assert_allclose(w, [1 + 100 / 200, 1 + 300 / 200, 1.0])  # fixed part + size / mean size


@pytest.mark.slow
def test_shards_plan_alone_and_together_equal_one_run(videos, reference_store, tmp_path):
    out = tmp_path / "sharded"
    summaries = [extract_shared(videos, out, shard=f"{i}/2", **workers.extract_kwargs())[0] for i in range(2)]
    # one after the other: the first claims its share, then the second's (nobody claimed it); the second
    # finds nothing left (before claims, each did its own share whatever the other had done)
    assert [s.processed for s in summaries] == [9, 0] and [s.assigned for s in summaries] == [9, 0]
    assert_same_store(out, reference_store)
    assert [p.name[:5] for p in (tmp_path / "sharded.claims").iterdir()] == ["done-"]  # no claim left
    # the plan depends on the files only: a late shard computes the same split as an early one
    st = FeatureStore.open(out)
    paths = [str(videos / p) for p in st.paths()]
    assert plan_shares(st, paths, 2) == plan_shares(FeatureStore.open(reference_store), paths, 2)
    # balanced by length: the busiest shard decodes fewer frames than with equal chunk counts
    frames = st.num_frames()
    by_size = max(frames[_cover(share)].sum() for share in plan_shares(st, paths, 2))
    by_count = max(frames[_cover(st.chunk_ranges((i, 2)))].sum() for i in range(2))
    assert by_size < by_count, (by_size, by_count)
    assert not (tmp_path / "sharded.creating").exists()
    with pytest.raises(VsslError, match="i/n"):
        extract_shared(videos, out, shard="2", **workers.extract_kwargs())


@pytest.mark.slow
def test_a_shard_waits_while_another_creates_the_store(videos, tmp_path, monkeypatch):
    lock = tmp_path / "s.creating"
    lock.mkdir()  # another task is creating the store
    released = []

    def release():
        released.append(True)
        lock.rmdir()

    timer = threading.Timer(0.5, release)
    timer.start()
    monkeypatch.setattr("vssl.extract.distributed.time.sleep", lambda s: timer.join())
    summary, _ = extract_shared(videos, tmp_path / "s", shard="1/2", **workers.extract_kwargs())
    assert released and summary.processed > 0  # it started only after the creator was done


# ---------------------------------------------------------------- 2 processes


@pytest.mark.slow
def test_torchrun_extract_writes_the_single_process_store(videos, reference_store, tmp_path):
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not on PATH")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "vssl", "extract", str(videos),
           "--out", str(tmp_path / "s"), "--views", "random:3,uniform:2x2", "--chunk-videos", "2",
           "--batch-size", "5", "--frames", "4", "--size", "32", "--seed", "5", "--quiet", "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)  # one JSON document: only rank 0 prints
    assert report["ranks"] == 2 and report["problems"] == []
    assert report["processed"] == report["done"] == 9 and report["assigned"] == 9
    assert_same_store(tmp_path / "s", reference_store)


@pytest.mark.slow
def test_killed_rank_then_rerun_resumes_to_the_same_store(videos, reference_store, tmp_path):
    out, result = tmp_path / "s", str(tmp_path / "result")
    with pytest.raises(mp.ProcessExitedException):
        spawn(workers.extract_worker, str(videos), str(out), result, 1)  # rank 1 dies after one chunk
    # done = usable in every view: the ranks stopped by the dead one may be cut between a chunk's video
    # table and its views' done flags, and such videos are rightly redone (FeatureStore.usable)
    store = FeatureStore.open(out)
    partial = np.logical_and.reduce([store.usable(v) for v in store.view_names()])
    assert 0 < partial.sum() < 9
    spawn(workers.extract_worker, str(videos), str(out), result, -1)
    report = json.loads(Path(f"{result}.rank0.json").read_text())
    assert report["problems"] == []
    s = report["summary"]
    assert s["skipped_done"] == partial.sum() and s["processed"] == 9 - s["skipped_done"]
    assert_same_store(out, reference_store)


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_ddp_training_matches_single_process_with_the_same_global_batch(tmp_path):
    feats, boxes = structured_clip_features(16, 8, 12, seed=1)  # one global batch of 16: one step per epoch
    store = tmp_path / "store"
    make_synthetic_store(store, feats, np.zeros(16, int), ["train"] * 16, view="v", boxes=boxes, chunk_videos=8)
    runs = tmp_path / "runs"
    runs.mkdir()
    from vssl.aggregate import train

    torch.manual_seed(0)
    single = train(store, "v", runs / "single", workers.small_cfg(batch_size=16), quiet=True)  # global 16
    spawn(workers.train_worker, str(store), str(runs))  # 2 ranks x 8

    for rank in range(2):  # the gathered loss and its gradient against a hand-written full-batch loss
        check = json.loads((runs / f"gradcheck-rank{rank}.json").read_text())
        assert check["mean_loss"] == pytest.approx(check["ref_loss"], rel=1e-5)
        assert check["grad_err"] < 1e-5
        # under bf16 autocast, keys gathered in fp32 give one process's gradient; gathered in bf16 they did not
        assert check["bf16_err_now"] < 1e-6 < check["bf16_err_before"], check
    a, b = _metrics(runs / "single"), _metrics(runs / "ddp")
    assert len(a) == len(b) == 2 and single.steps == 2  # one writer of metrics
    for ra, rb in zip(a, b):  # step 1 (epoch 1) and step 2: same losses and accuracies
        for key in ("loss", "mcm_loss", "set_loss", "mcm_top1", "set_top1"):
            assert float(rb[key]) == pytest.approx(float(ra[key]), rel=1e-4, abs=1e-5), key
        assert rb["step"] == ra["step"]
    sa = torch.load(runs / "single" / "checkpoint.pt", weights_only=True)
    sb = torch.load(runs / "ddp" / "checkpoint.pt", weights_only=True)
    assert_same_weights(sa["model"], sb["model"], width=32)
    assert sb["meta"]["world_size"] == 2 and sb["meta"]["batch_size"] == 8
    # only rank 0 wrote checkpoints: ddp (2 epochs) + resumed (1 before the crash, 1 after)
    assert not (runs / "saved-by-rank1").exists()
    assert len((runs / "saved-by-rank0").read_text().split()) == 4
    # stopped after epoch 1 and resumed: the same run as the uninterrupted one
    sc = torch.load(runs / "resumed" / "checkpoint.pt", weights_only=True)
    for name, p in sb["model"].items():
        torch.testing.assert_close(sc["model"][name], p, rtol=0, atol=0, msg=name)
    assert [r["loss"] for r in _metrics(runs / "resumed")] == [r["loss"] for r in b]
    # a 2-rank run does not silently resume as a 1-process run with another global batch (8 x 1 ranks)...
    with pytest.raises(VsslError, match=r"batch_size x ranks \(run 8 x 2 = 16, now 8 x 1 = 8\)"):
        train(store, "v", runs / "ddp", workers.small_cfg(epochs=3), resume=True, quiet=True)
    # ...but does with the same one (16 x 1): epoch 3 as the 1-process run with batch 16 goes
    train(store, "v", runs / "ddp", workers.small_cfg(epochs=3, batch_size=16), resume=True, quiet=True)
    train(store, "v", runs / "single", workers.small_cfg(epochs=3, batch_size=16), resume=True, quiet=True)
    a3, b3 = _metrics(runs / "single")[2], _metrics(runs / "ddp")[2]
    for key in ("loss", "mcm_loss", "set_loss"):
        assert float(b3[key]) == pytest.approx(float(a3[key]), rel=1e-3), key


@pytest.mark.slow
def test_ddp_training_on_a_ragged_view_matches_single_process(tmp_path):
    """Each rank's sets have other sizes (and padding); the gathered keys and padding masks still
    give the single-process run on the global batch."""
    rng = np.random.default_rng(2)
    counts = [2, 3, 9, 4, 6, 12, 2, 5, 7, 3, 8, 2, 10, 4, 6, 3]
    feats = [rng.normal(size=(c, 12)).astype(np.float32) for c in counts]
    store = tmp_path / "store"
    make_synthetic_store(store, feats, np.zeros(16, int), ["train"] * 16, view="d", chunk_videos=8)
    runs = tmp_path / "runs"
    runs.mkdir()
    from vssl.aggregate import train

    train(store, "d", runs / "single", workers.small_cfg(batch_size=16, set_size=3, mask_mode="bernoulli"),
          quiet=True)
    spawn(workers.ragged_train_worker, str(store), str(runs))  # 2 ranks x 8
    a, b = _metrics(runs / "single"), _metrics(runs / "ddp")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        for key in ("loss", "mcm_loss", "set_loss", "mcm_top1", "set_top1"):
            assert float(rb[key]) == pytest.approx(float(ra[key]), rel=1e-4, abs=1e-5), key


def test_torchrun_ranks_never_redo_the_whole_job(videos, tmp_path, monkeypatch):
    """A rank that would process everything (a library call outside the rank machinery) refuses."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(VsslError, match="rank 1 of 2"):
        extract(videos, tmp_path / "s", **workers.extract_kwargs())
    with pytest.raises(VsslError, match="use one of them"):
        extract_shared(videos, tmp_path / "s", shard="0/2", **workers.extract_kwargs())
    from vssl.aggregate import train

    with pytest.raises(VsslError, match="outside a process group"):
        train(tmp_path / "no-store", "v", tmp_path / "run", workers.small_cfg())
    assert not (tmp_path / "s").exists() and not (tmp_path / "run").exists()
