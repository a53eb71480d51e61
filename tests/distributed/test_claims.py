"""Work by claims on a shared store (issue 18): stale locks and claims of dead owners, processes that
share the work without a plan, a file unreadable on one node, SIGTERM, and SLURM re-runs of one task.

Processes are real (subprocesses killed with SIGKILL/SIGTERM) where what is tested is a process's death.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests import distributed_workers as workers
from tests.conftest import REPO, run_vssl
from tests.distributed.test_distributed import assert_same_store, reference_store, videos  # noqa: F401 (fixtures)
from vssl.distributed import claims, video_weights
from vssl.extract.distributed import _claim_creation, extract_shared
from vssl.extract.work import claims_dir, plan_chunks
from vssl.features_store import FeatureStore

ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_line(proc: subprocess.Popen, word: str) -> None:
    line = proc.stdout.readline()
    assert word in line, (line, proc.stderr.read() if proc.poll() is not None else "")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _record(path: Path, **fields) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": 0, "start": "", "job": "", "token": "other",
                                **fields}))


# ---------------------------------------------------------------- claim files


@pytest.mark.slow
def test_a_claim_is_exclusive_and_a_dead_owners_is_taken_over(tmp_path):
    c = tmp_path / "claims" / "3"
    assert claims.try_claim(c) and claims.holds(c) and claims.try_claim(c)  # ours, and idempotent
    record = claims.read_claim(c)
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    other = _python(f"from vssl.distributed import claims; print(claims.try_claim({str(c)!r}))")
    assert other.communicate(timeout=60)[0].strip() == "False"  # a live owner keeps it
    claims.release(c)
    assert not c.exists()

    _record(c, pid=_dead_pid())  # a SIGKILLed owner on this host
    assert claims.try_claim(c) and claims.holds(c)
    c.unlink()
    _record(c, host="another-node", pid=os.getpid())  # fresh, on another host: alive
    assert not claims.try_claim(c, stale_s=60)
    old = time.time() - 120
    os.utime(c, (old, old))  # not touched for 2 minutes: its owner's heartbeat stopped
    assert claims.try_claim(c, stale_s=60) and claims.holds(c)
    assert not [p for p in c.parent.iterdir() if p.name != "3"]  # nothing left aside


def test_heartbeat_keeps_a_claim_fresh(tmp_path):
    c = tmp_path / "c"
    assert claims.try_claim(c)
    old = time.time() - 1000
    os.utime(c, (old, old))
    beat = claims.Heartbeat(stale_s=0.2)
    beat.add(c)
    time.sleep(0.3)
    beat.stop()
    assert time.time() - c.stat().st_mtime < 10


# ---------------------------------------------------------------- the creation lock

_HOLD_LOCK = """
import sys, time
from pathlib import Path
from vssl.extract.distributed import _claim_creation
lock = _claim_creation(Path(sys.argv[1]))
print("locked" if lock else "not locked", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_a_killed_creators_lock_is_taken_over_without_waiting(videos, tmp_path, monkeypatch):
    out = tmp_path / "s"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)], env=ENV, stdout=subprocess.PIPE,
                              text=True)
    _wait_for_line(holder, "locked")
    record = claims.read_claim(tmp_path / "s.creating")
    assert record["pid"] == holder.pid  # owner recorded: host, pid, job
    holder.send_signal(signal.SIGKILL)  # `finally` never runs: the lock stays
    holder.wait()
    assert (tmp_path / "s.creating").exists()

    def no_waiting(seconds):
        raise AssertionError("waited for a dead owner's lock")

    monkeypatch.setattr("vssl.extract.distributed.time.sleep", no_waiting)
    summary, _ = extract_shared(videos, out, shard="1/2", **workers.extract_kwargs())
    assert summary.processed == 9 and not (tmp_path / "s.creating").exists()


@pytest.mark.slow
def test_a_live_creators_lock_is_waited_for_a_bounded_time(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path / "s")], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        _wait_for_line(holder, "locked")
        t0 = time.monotonic()
        assert _claim_creation(tmp_path / "s", poll_s=0.05, wait_s=0.3) is None  # go on: creation is atomic
        assert time.monotonic() - t0 < 30
    finally:
        holder.kill()
        holder.wait()


_SLOW_CREATE = """
import sys, time
from vssl.features_store import FeatureStore
from vssl.extract.distributed import extract_shared
def slow(*a, **k):
    print("creating", flush=True)
    time.sleep(120)
FeatureStore.create = slow
extract_shared(sys.argv[1], sys.argv[2], shard="0/2", views="uniform:1x1", frames=4, size=32, progress=False)
"""


@pytest.mark.slow
def test_sigterm_releases_the_creation_lock(videos, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CREATE, str(videos), str(tmp_path / "s")], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_line(proc, "creating")
    assert (tmp_path / "s.creating").exists()
    proc.send_signal(signal.SIGTERM)  # SLURM's time limit
    assert proc.wait(timeout=60) == 143
    assert not (tmp_path / "s.creating").exists()


# ---------------------------------------------------------------- work by claims


@pytest.mark.slow
def test_two_plain_extracts_on_one_store_share_the_work(videos, reference_store, tmp_path):
    cmd = [sys.executable, "-m", "vssl", "extract", str(videos), "--out", str(tmp_path / "s"), "--views",
           "random:3,uniform:2x2", "--chunk-videos", "2", "--batch-size", "5", "--frames", "4", "--size", "32",
           "--seed", "5", "--quiet", "--json"]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    reports = [json.loads(o[0]) for o in outs]
    assert sum(r["processed"] for r in reports) == 9  # each video once (both did all 9 before claims)
    assert_same_store(tmp_path / "s", reference_store)
    assert [p.name[:5] for p in claims_dir(tmp_path / "s").iterdir()] == ["done-"]  # no claim left


@pytest.mark.slow
def test_claims_of_dead_owners_are_taken_over_and_live_ones_left(videos, reference_store, tmp_path):
    out = tmp_path / "s"
    kwargs = workers.extract_kwargs()
    _record(claims_dir(out) / "0", pid=_dead_pid())  # chunk 0: its owner was SIGKILLed
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _record(claims_dir(out) / "1", pid=live.pid)  # chunk 1 (videos 2, 3): another process works on it
        summary, _ = extract_shared(videos, out, **kwargs)
        assert summary.processed == 7
        st = FeatureStore.open(out)
        assert (st.video_status()[2:4] == 0).all() and (st.video_status()[[0, 1, 4, 5, 6, 7, 8]] == 1).all()
        # verify and info say the store is not finished (before, it verified clean)
        r = run_vssl("store", "verify", out)
        assert r.returncode == 1 and "incomplete: 2 videos pending" in r.stdout
        info = json.loads(run_vssl("store", "info", out, "--json").stdout)
        assert info["videos"]["incomplete"] == 2
    finally:
        live.kill()
        live.wait()
    summary, _ = extract_shared(videos, out, **kwargs)  # its owner died: the re-run takes chunk 1 over
    assert summary.processed == 2 and summary.skipped_done == 7
    assert_same_store(out, reference_store)
    r = run_vssl("store", "verify", out)
    assert r.returncode == 0 and "complete" in r.stdout


@pytest.mark.slow
def test_a_chunk_taken_over_meanwhile_is_not_written_by_the_presumed_dead(videos, tmp_path, monkeypatch):
    from vssl.extract import work

    monkeypatch.setattr(work.ClaimQueue, "still_mine", lambda self, c: c != 2)  # chunk 2 went to another
    summary, _ = extract_shared(videos, tmp_path / "s", **workers.extract_kwargs())
    status = FeatureStore.open(tmp_path / "s").video_status()
    assert (status[4:6] == 0).all() and (np.delete(status, [4, 5]) == 1).all()


@pytest.mark.slow
def test_a_file_unreadable_on_one_node_does_not_change_the_plan(videos, reference_store, monkeypatch):
    st = FeatureStore.open(reference_store)
    paths = [str(videos / p) for p in st.paths()]
    assert st.sizes() is not None and (st.sizes() > 0).all()  # recorded at creation
    fresh = plan_chunks(st, 2, ["random3"], paths=paths).shares
    before = video_weights(paths)
    real_stat = os.stat

    def flaky(path, *a, **k):  # this node cannot read v0 (NFS hiccup, permissions)
        if str(path).endswith("v0.mp4"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *a, **k)

    monkeypatch.setattr("vssl.distributed.planning.os.stat", flaky)
    assert not np.array_equal(video_weights(paths), before)  # planning from a stat would move chunks
    assert plan_chunks(st, 2, ["random3"], paths=paths).shares == fresh  # planning from the store does not


# ---------------------------------------------------------------- SLURM


def test_rerunning_one_array_task_keeps_the_pinned_shard_count(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/bash\necho "$@" > "$ARGS_OUT"\n')
    (fake / "python").chmod(0o755)
    script = REPO / "docs" / "slurm" / "extract_array.sbatch"
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", SLURM_CPUS_PER_TASK="4",
               ARGS_OUT=str(tmp_path / "args"), SLURM_ARRAY_TASK_COUNT="1")  # sbatch --array=7
    for task, shard in (("7", "7/32"), ("0", "0/32")):
        r = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": task}, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        assert f"--shard {shard}" in (tmp_path / "args").read_text()
    r = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "40"}, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "outside the 32 shards" in r.stderr


@pytest.mark.slow
def test_a_store_made_anew_at_the_same_path_ignores_the_old_ones_finished_markers(videos, reference_store, tmp_path):
    """The claims folder sits beside the store: deleting the store leaves its markers, and a new
    directory often gets the old inode back; the new store must still be extracted."""
    import shutil

    out = tmp_path / "s"
    kwargs = workers.extract_kwargs()
    extract_shared(videos, out, **kwargs)
    shutil.rmtree(out)
    assert any(p.name.startswith("done-") for p in claims_dir(out).iterdir())  # left behind
    summary, _ = extract_shared(videos, out, **kwargs)
    assert summary.processed == 9
    assert_same_store(out, reference_store)


@pytest.mark.slow
def test_a_chunk_given_back_unfinished_by_another_process_is_picked_up(videos, reference_store, tmp_path,
                                                                       monkeypatch):
    """Chunk 1 is held by a live process when this one passes it; that process is then preempted and
    gives it back unfinished: this process's next walk takes it (before, it was left to nobody)."""
    real = claims.try_claim
    refused = []

    def held_once(path, *a, **k):
        if Path(path).name == "1" and not refused:
            refused.append(path)
            return False
        return real(path, *a, **k)

    monkeypatch.setattr(claims, "try_claim", held_once)
    summary, _ = extract_shared(videos, tmp_path / "s", **workers.extract_kwargs())
    assert refused and summary.processed == 9
    assert_same_store(tmp_path / "s", reference_store)


def test_a_file_system_without_hard_links_is_one_line(tmp_path, monkeypatch):
    from vssl.errors import VsslError

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(claims.os, "link", no_links)
    with pytest.raises(VsslError, match="hard link"):
        claims.try_claim(tmp_path / "claims" / "0")


@pytest.mark.slow
def test_a_second_retry_failed_run_retries_what_still_failed(tmp_path):
    """Finished-chunk markers of an earlier run are only a hint: after one --retry-failed run (the file
    still broken), fixing the file and retrying again extracts it (before, the marker said the chunk was
    finished and the run did nothing: "0 done, 0 failed")."""
    from tests.videos import write_broken, write_video

    root, out = tmp_path / "videos", tmp_path / "s"
    write_video(root / "a" / "v0.mp4", 20)
    write_video(root / "a" / "v1.mp4", 24)
    write_broken(root / "a" / "v2.mp4", "text")
    kwargs = dict(views="random:2", chunk_videos=2, frames=4, size=32, progress=False)
    first, _ = extract_shared(root, out, **kwargs)
    assert (first.done, first.failed) == (2, 1)
    again, _ = extract_shared(root, out, retry_failed=True, **kwargs)
    assert (again.done, again.failed) == (0, 1)  # still broken
    write_video(root / "a" / "v2.mp4", 18)  # fixed
    fixed, _ = extract_shared(root, out, retry_failed=True, **kwargs)
    assert (fixed.done, fixed.failed) == (1, 0)
    assert (FeatureStore.open(out).video_status() == 1).all()
