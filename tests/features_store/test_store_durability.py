"""What a store and a run directory look like after a kill at any point, with many readers (issue 18):
the order of writes, views created concurrently, bounded memory maps, per-rank verification, checkpoints,
and the stage-two guards for many ranks."""

from __future__ import annotations

import errno
import mmap as real_mmap
import threading
import time
import types
import weakref
from datetime import timedelta

import numpy as np
import pytest
import torch

from vssl.aggregate.checkpoint import read_checkpoint, save_checkpoint
from vssl.aggregate.config import ScaleConfig
from vssl.aggregate.distributed import DataParallel
from vssl.aggregate.plan import plan_run
from vssl.distributed import RankEnv
from vssl.distributed.ranks import _timeout
from vssl.errors import VsslError
from vssl.extract.pipeline import views_to_do
from vssl.features_store import FeatureStore, View, rows, verify_store
from vssl.features_store.synthetic import make_synthetic_store, uniform_boxes
from vssl.features_store.verify import pending_videos
from vssl.hashing import remember_hashes, sha256_of


def _store(path, n=6, chunk=2, k=2, d=4):
    feats = np.random.default_rng(0).normal(size=(n, k, d)).astype(np.float32)
    return make_synthetic_store(path, feats, np.zeros(n, int), ["train"] * n, view="v", chunk_videos=chunk)


def _write(store, idx, view="v"):
    k, d = store.view(view).num_clips, store.view(view).dim
    store.write_videos(idx, {view: (np.ones((len(idx), k, d), np.float32), uniform_boxes(len(idx), k))},
                       num_frames=[10] * len(idx), fps=[25.0] * len(idx), errors=[None] * len(idx))


# ---------------------------------------------------------------- order of writes


def test_data_then_table_then_done_flags_each_synced_first(tmp_path, monkeypatch):
    store = _store(tmp_path / "s")
    synced: list[str] = []
    real = rows.sync_file
    monkeypatch.setattr(rows, "sync_file", lambda p: (synced.append(str(p)), real(p)))
    _write(store, [2, 3])
    where = {key: max(i for i, p in enumerate(synced) if key in p)
             for key in ("views/v/features", "views/v/boxes", "videos/num_frames", "videos/status", "views/v/status")}
    assert where["views/v/features"] < where["videos/num_frames"] < where["videos/status"] < where["views/v/status"]
    assert where["views/v/boxes"] < where["videos/status"]


def test_a_kill_before_the_done_flags_leaves_the_video_to_redo(tmp_path, monkeypatch):
    store = _store(tmp_path / "s")
    store = FeatureStore.open(tmp_path / "s", "r+")
    store._table["status"][2:4] = 0  # chunk 1 pending again, as before extraction
    store.view("v").mark(np.arange(2, 4), np.zeros(2, bool))

    def killed(self, idx, done=None):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(View, "mark", killed)
        with pytest.raises(KeyboardInterrupt):
            _write(store, [2, 3])
    again = FeatureStore.open(tmp_path / "s")
    assert (again.video_status()[2:4] == 1).all() and not again.view("v").done()[2:4].any()
    assert views_to_do(again, ["v"])[2:4].all() and not again.usable("v")[2:4].any()
    assert pending_videos(again) == 2 and verify_store(again) == []


def test_a_retried_failed_video_is_not_failed_forever(tmp_path):
    """The old order (view flags, then the table) left a retried video done in the view and failed in the
    table when killed in between: skipped by every re-run, even with --retry-failed."""
    store = _store(tmp_path / "s")
    store = FeatureStore.open(tmp_path / "s", "r+")
    store._table["status"][4] = 2  # failed, but the view says done: what the old order left
    assert views_to_do(store, ["v"])[4].all() and not store.usable("v")[4]


# ---------------------------------------------------------------- views created concurrently


@pytest.mark.slow
def test_a_view_is_never_seen_before_its_arrays(tmp_path, monkeypatch):
    _store(tmp_path / "s")
    real_create = View.create.__func__

    def slow_create(cls, parent, name, *args, **kwargs):
        group = parent.create_group(name)  # the group appears before its arrays, as zarr makes them
        time.sleep(0.4)
        del parent[name]
        return real_create(cls, parent, name, *args, **kwargs)

    monkeypatch.setattr(View, "create", classmethod(slow_create))
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                st = FeatureStore.open(tmp_path / "s")
                if "new" in st.view_names():
                    st.view("new").read(np.arange(2))
            except BaseException as exc:  # KeyError 'features' before the fix
                errors.append(exc)
                return

    t = threading.Thread(target=reader)
    t.start()
    writers = [threading.Thread(target=lambda: FeatureStore.open(tmp_path / "s", "r+").create_view(
        "new", 2, {"sampler": "x"})) for _ in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    t.join()
    assert not errors, errors
    assert FeatureStore.open(tmp_path / "s").view("new").num_clips == 2
    assert not [p for p in tmp_path.iterdir() if "view-new" in p.name]  # staging cleaned up


# ---------------------------------------------------------------- memory maps


class MapLimit:
    """mmap.mmap counting live maps (and their peak), with a small vm.max_map_count: ENOMEM past ``limit``
    live maps (None: no limit, count only; benchmarks/cluster_sim.py counts with it)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit, self.live, self.peak = limit, 0, 0

    def __call__(self, *args, **kwargs):
        if self.limit is not None and self.live >= self.limit:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        m = real_mmap.mmap(*args, **kwargs)
        self.live += 1
        self.peak = max(self.peak, self.live)
        weakref.finalize(m, self._unmapped)
        return m

    def _unmapped(self) -> None:
        self.live -= 1


@pytest.mark.slow
def test_chunk_maps_stay_under_a_small_max_map_count(tmp_path, monkeypatch):
    _store(tmp_path / "s", n=40, chunk=1)  # 40 chunk files per array, 80 maps for a full scan
    limit = MapLimit(12)
    monkeypatch.setattr(rows, "mmap", types.SimpleNamespace(mmap=limit, ACCESS_READ=real_mmap.ACCESS_READ))
    monkeypatch.setenv("VSSL_MAX_MAPS", "8")
    st = FeatureStore.open(tmp_path / "s")
    assert verify_store(st) == []
    assert rows.live_maps() == 0  # released after the sequential scan
    f, _ = st.view("v").read(np.random.default_rng(0).permutation(40))  # random reads: LRU keeps 8
    assert f.shape == (40, 2, 4) and limit.peak <= 8 and rows.live_maps() <= 8
    monkeypatch.setenv("VSSL_MAX_MAPS", "1000")  # unbounded, as before: the simulated limit is reached
    with pytest.raises(OSError, match="Cannot allocate memory"):
        FeatureStore.open(tmp_path / "s").view("v").read(np.arange(40))


# ---------------------------------------------------------------- verification by share


@pytest.mark.slow
def test_each_rank_verifies_its_own_chunks(tmp_path):
    _store(tmp_path / "s")
    st = FeatureStore.open(tmp_path / "s", "r+")
    arr = st.view("v").array("features")
    arr[4:6] = np.full((2, 2, 4), np.nan, np.float16)  # chunk 2 broken
    assert verify_store(st, [(0, 4)], table=False) == []  # rank 0 of 2 (chunks 0, 1) does not read it
    assert any("NaN" in p for p in verify_store(st, [(4, 6)], table=False))
    assert any("NaN" in p for p in verify_store(st))


# ---------------------------------------------------------------- checkpoints and hashes


def test_the_last_good_checkpoint_survives_a_failed_save(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"model": {"w": torch.ones(2)}, "epoch": 1})
    from vssl.aggregate import checkpoint

    synced = []
    monkeypatch.setattr(checkpoint, "sync_file", lambda p: synced.append(p.name))
    save_checkpoint(tmp_path, {"model": {"w": torch.ones(2)}, "epoch": 2})
    assert synced == ["checkpoint.pt.tmp", tmp_path.name]  # the new file, then the rename

    def disk_full(p):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "sync_file", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, {"model": {"w": torch.zeros(2)}, "epoch": 3})
    assert read_checkpoint(tmp_path)["epoch"] == 2


def test_a_checkpoint_is_hashed_once_per_job(tmp_path, monkeypatch):
    f = tmp_path / "w.pth"
    f.write_bytes(b"weights")
    from vssl import hashing

    key = hashing._identity(f)
    remember_hashes({key: "from-rank-0"})  # rank 0 broadcast it
    assert sha256_of(f) == "from-rank-0"
    f.write_bytes(b"other weights")  # changed: hashed again
    assert sha256_of(f) != "from-rank-0"


# ---------------------------------------------------------------- stage two across ranks


def test_fewer_training_videos_than_ranks_is_one_line():
    par = DataParallel(RankEnv(0, 4, 0))
    with pytest.raises(VsslError, match="3 training videos for 4 ranks"):
        plan_run(ScaleConfig(device="cpu", precision="fp32"), 8, 3, par)


def test_the_long_timeout_is_for_extraction_only(monkeypatch):
    monkeypatch.delenv("VSSL_DIST_TIMEOUT_S", raising=False)
    assert _timeout(True) == timedelta(hours=24) and _timeout(False) is None  # training: torch's default
    monkeypatch.setenv("VSSL_DIST_TIMEOUT_S", "60")
    assert _timeout(False) == _timeout(True) == timedelta(seconds=60)
