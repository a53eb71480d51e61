"""The feature store: round trips, crash safety, concurrent writers, errors, HDF5."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vssl.errors import StoreError
from vssl.features_store import (STATUS_DONE, STATUS_FAILED, BackboneSpec, FeatureStore, VideoEntry,
                                 export_hdf5, import_hdf5, verify_store)
from vssl.features_store.synthetic import make_synthetic_store

WRITER = Path(__file__).resolve().parents[1] / "store_writer.py"
sys.path.insert(0, str(WRITER.parent))
from store_writer import D, K, error_for, rows_for  # noqa: E402

BACKBONE = BackboneSpec(name="tiny", embed_dim=D, frames=8, stride=2, size=64,
                        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                        checkpoint="/ckpt/tiny.pth", checkpoint_sha256="ab" * 32, family="tiny")


def new_store(path: Path, n: int = 40, chunk: int = 8) -> FeatureStore:
    videos = [VideoEntry(f"v/{i}.mp4", label=i % 3, split="train" if i % 4 else "test") for i in range(n)]
    store = FeatureStore.create(path, BACKBONE, videos, classes=["a", "b", "c"], chunk_videos=chunk)
    store.create_view("v", num_clips=K, spec={"sampler": "uniform", "T": 2, "S": 2})
    return store


def all_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a store by path, for whole-store equality."""
    root = zarr.open_group(str(path), mode="r")
    out = {}

    def walk(g, prefix):
        for k in g.array_keys():
            out[prefix + k] = np.asarray(g[k][:])
        for k in g.group_keys():
            walk(g[k], prefix + k + "/")

    walk(root, "")
    return out


def assert_same_store(a: Path, b: Path) -> None:
    xa, xb = all_arrays(a), all_arrays(b)
    assert xa.keys() == xb.keys()
    for k in xa:
        assert np.array_equal(xa[k], xb[k]), k


def run_writer(path: Path, shard: tuple[int, int] = (0, 1), *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WRITER), str(path), str(shard[0]), str(shard[1]), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ------------------------------------------------------------------ round trip


def test_every_field_round_trips(tmp_path):
    store = new_store(tmp_path / "s", n=20, chunk=8)
    idx = np.arange(8, 16)
    feats, boxes = rows_for(idx)
    errors = [error_for(int(i)) for i in idx]
    store.write_videos(idx, {"v": (feats, boxes)}, num_frames=(idx * 3).tolist(), fps=[29.97] * 8, errors=errors)

    s = FeatureStore.open(tmp_path / "s")
    assert s.backbone == BACKBONE
    assert s.classes == ["a", "b", "c"] and s.num_videos == 20 and s.chunk_videos == 8
    assert s.paths()[5] == "v/5.mp4" and s.labels()[5] == 2 and s.splits()[4] == "test"
    failed = np.array([e is not None for e in errors])
    assert np.array_equal(s.video_status()[idx], np.where(failed, STATUS_FAILED, STATUS_DONE))
    assert s.video_status()[:8].tolist() == [0] * 8
    assert s.errors()[idx][failed].tolist() == [e for e in errors if e]
    assert np.array_equal(s.num_frames()[idx], idx * 3) and np.allclose(s.fps()[idx], 29.97)
    view = s.view("v")
    assert (view.num_clips, view.dim, view.dtype, view.spec) == (K, D, np.float16, {"sampler": "uniform", "T": 2, "S": 2})
    got_f, got_b = view.read(idx)
    assert np.array_equal(got_f[~failed], feats[~failed]) and np.array_equal(got_b[~failed], boxes[~failed])
    assert np.array_equal(view.done()[idx], ~failed)
    # pending excludes failed videos only when asked: failed videos are not retried by default
    assert set(view.pending(exclude=s.video_status() == STATUS_FAILED).tolist()) == set(range(20)) - set(idx.tolist())
    assert verify_store(s) == []


def test_random_reads_any_order_with_repeats_and_unwritten_chunks(tmp_path):
    store = new_store(tmp_path / "s", n=30, chunk=8)
    idx = np.arange(0, 8)
    feats, boxes = rows_for(idx)
    store.write_videos(idx, {"v": (feats, boxes)}, [10] * 8, [25.0] * 8, [None] * 8)
    order = np.array([7, 0, 7, 3, 20])  # 20 lies in a chunk never written: fill value
    got = store.view("v").read_features(order)
    assert np.array_equal(got[:4], feats[[7, 0, 7, 3]]) and not got[4].any()
    with pytest.raises(IndexError):
        store.view("v").read_features([30])


def test_partial_chunk_write_keeps_other_rows(tmp_path):
    store = new_store(tmp_path / "s", n=16, chunk=8)
    first, second = np.array([0, 1, 2]), np.array([5, 6])
    for idx in (first, second):
        f, b = rows_for(idx)
        store.write_videos(idx, {"v": (f, b)}, [10] * len(idx), [25.0] * len(idx), [None] * len(idx))
    both = np.concatenate([first, second])
    assert np.array_equal(store.view("v").read_features(both), rows_for(both)[0])
    assert store.view("v").done().tolist() == [i in both for i in range(16)]


def test_a_write_spanning_two_chunks_is_refused(tmp_path):
    store = new_store(tmp_path / "s", n=16, chunk=8)
    f, b = rows_for(np.array([7, 8]))
    with pytest.raises(ValueError, match="one chunk"):
        store.write_videos([7, 8], {"v": (f, b)}, [1, 1], [1.0, 1.0], [None, None])


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 40), k=st.integers(1, 5), d=st.integers(1, 12), chunk=st.integers(1, 16),
       dtype=st.sampled_from(["float16", "float32"]), seed=st.integers(0, 2**16))
@pytest.mark.slow
def test_hypothesis_shapes_round_trip(tmp_path_factory, n, k, d, chunk, dtype, seed):
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, k, d)).astype(dtype)
    path = tmp_path_factory.mktemp("h") / "s"
    store = make_synthetic_store(path, feats, rng.integers(0, 3, n), ["train"] * n, view="x",
                                 chunk_videos=chunk, dtype=dtype)
    idx = rng.integers(0, n, size=min(n, 17))
    got_f, got_b = FeatureStore.open(path).view("x").read(idx)
    assert got_f.dtype == np.dtype(dtype) and np.array_equal(got_f, feats[idx])
    assert got_b.shape == (len(idx), k, 7)
    assert store.view("x").done().all() and verify_store(store) == []
    ranges = store.chunk_ranges()
    assert ranges[0][0] == 0 and ranges[-1][1] == n and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


# ------------------------------------------------------------------ crashes and concurrency


@pytest.mark.slow
def test_sigkill_mid_block_then_resume_equals_uninterrupted_run(tmp_path):
    reference = tmp_path / "ref"
    new_store(reference, n=64, chunk=4)
    proc = run_writer(reference)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()

    killed = tmp_path / "killed"
    new_store(killed, n=64, chunk=4)
    proc = run_writer(killed, (0, 1), "--pause", "0.2")
    # wait until a few chunks are complete, then kill while the next one is half written
    lines = [proc.stdout.readline() for _ in range(3)]
    assert all(line.startswith("chunk") for line in lines)
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    interrupted = FeatureStore.open(killed)
    assert verify_store(interrupted) == []  # opens, and every done row is complete
    done = interrupted.video_status() != 0
    assert 0 < done.sum() < 64
    assert run_writer(killed).wait(timeout=120) == 0
    assert_same_store(reference, killed)


@pytest.mark.slow
def test_two_processes_write_disjoint_shards_at_once(tmp_path):
    both, reference = tmp_path / "both", tmp_path / "ref"
    new_store(both, n=96, chunk=4)
    new_store(reference, n=96, chunk=4)
    procs = [run_writer(both, (i, 2)) for i in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    assert run_writer(reference).wait(timeout=120) == 0
    assert verify_store(FeatureStore.open(both)) == []
    assert_same_store(reference, both)


def test_shards_cover_every_chunk_once(tmp_path):
    store = new_store(tmp_path / "s", n=50, chunk=4)
    for n in (1, 2, 3, 5, 13, 20):
        covered = [r for i in range(n) for r in store.chunk_ranges(shard=(i, n))]
        assert sorted(covered) == store.chunk_ranges()


# ------------------------------------------------------------------ verify


def test_verify_finds_nan_and_done_rows_never_written(tmp_path):
    store = make_synthetic_store(tmp_path / "s", np.ones((10, 2, 3), np.float16), [0] * 10, ["t"] * 10,
                                 chunk_videos=4)
    root = zarr.open_group(str(tmp_path / "s"), mode="r+")
    block = np.asarray(root["views/random16/features"][0:4])
    block[2, 1, 0] = np.nan
    root["views/random16/features"][0:4] = block
    status = root["views/random16/status"]
    status[:] = 1  # mark everything done ...
    (tmp_path / "s" / "views/random16/features/c/2/0/0").unlink()  # ... and lose the last chunk
    problems = verify_store(FeatureStore.open(tmp_path / "s"))
    assert any("NaN/inf in done rows [2]" in p for p in problems)
    assert any("rows 8-9 marked done but never written" in p for p in problems)
    del store


# ------------------------------------------------------------------ HDF5


@pytest.mark.slow
def test_hdf5_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    store = make_synthetic_store(tmp_path / "s", rng.standard_normal((21, 3, 5)).astype(np.float16),
                                 rng.integers(0, 2, 21), ["train"] * 11 + ["test"] * 10, chunk_videos=8)
    agg = store.create_row_group("aggregates/run1/random16", {"set_token": ((6,), "float32")}, {"run": "run1"})
    agg.write(np.arange(8), {"set_token": rng.standard_normal((8, 6)).astype(np.float32)})
    export_hdf5(store, tmp_path / "x.h5")
    back = import_hdf5(tmp_path / "x.h5", tmp_path / "back")
    assert_same_store(tmp_path / "s", tmp_path / "back")
    assert dict(back.root.attrs) == dict(store.root.attrs)
    assert back.row_group("aggregates/run1/random16").attrs == {"run": "run1"}
    assert back.view("random16").spec == store.view("random16").spec
    assert back.paths().tolist() == store.paths().tolist()


# ------------------------------------------------------------------ user errors


def test_create_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x").write_text("mine")
    with pytest.raises(StoreError, match="already exists"):
        new_store(tmp_path / "s")


def test_view_with_other_settings_is_refused(tmp_path):
    store = new_store(tmp_path / "s")
    assert store.create_view("v", num_clips=K, spec={"sampler": "uniform", "T": 2, "S": 2}).name == "v"
    with pytest.raises(StoreError, match="exists with K=4"):
        store.create_view("v", num_clips=K + 1, spec={"sampler": "uniform"})


def test_backbone_mismatch_is_refused(tmp_path):
    store = new_store(tmp_path / "s")
    other = BackboneSpec.from_dict({**BACKBONE.to_dict(), "checkpoint_sha256": "cd" * 32})
    with pytest.raises(StoreError, match="checkpoint_sha256"):
        store.check_backbone(other)
    store.check_backbone(BACKBONE)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "plain_dir", "foreign_zarr", "future_format", "export_exists"])
def test_cli_user_errors_are_one_line_exit_2(tmp_path, vssl_cli, case):
    target = tmp_path / "s"
    args = ["store", "info", target]
    if case == "plain_dir":
        target.mkdir()
    elif case == "foreign_zarr":
        zarr.open_group(str(target), mode="w")
    elif case == "future_format":
        new_store(target)
        zarr.open_group(str(target), mode="r+").attrs["vssl_format"] = 99
    elif case == "export_exists":
        new_store(target)
        args = ["store", "export", target, tmp_path / "x.h5"]
        (tmp_path / "x.h5").write_text("already here")
    r = vssl_cli(*args)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.stderr
    assert str(target if case != "export_exists" else tmp_path / "x.h5") in r.stderr.replace("\n", "")


@pytest.mark.slow
def test_cli_import_refuses_a_file_that_is_not_an_export(tmp_path, vssl_cli):
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"not hdf5 at all")
    r = vssl_cli("store", "import", bogus, tmp_path / "s")
    assert r.returncode == 2 and "not a readable HDF5 file" in r.stderr


@pytest.mark.slow
def test_cli_info_verify_export_import(tmp_path, vssl_cli):
    store = new_store(tmp_path / "s", n=12, chunk=4)
    idx = np.arange(4)
    f, b = rows_for(idx)
    store.write_videos(idx, {"v": (f, b)}, [10] * 4, [25.0] * 4, [None, None, None, "bad file"])
    r = vssl_cli("store", "info", tmp_path / "s", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["videos"] == {"done": 3, "failed": 1, "pending": 8, "incomplete": 8}
    assert info["groups"]["views/v"]["done"] == 3 and info["groups"]["views/v"]["pending"] == 8
    assert info["backbone"]["checkpoint_sha256"] == "ab" * 32
    r = vssl_cli("store", "info", tmp_path / "s")
    assert r.returncode == 0 and "views/v" in r.stdout
    r = vssl_cli("store", "verify", tmp_path / "s")  # consistent, but not finished: not "all is well"
    assert r.returncode == 1 and "incomplete: 8 videos pending" in r.stdout and "consistent so far" in r.stdout
    assert vssl_cli("store", "export", tmp_path / "s", tmp_path / "x.h5").returncode == 0
    assert vssl_cli("store", "import", tmp_path / "x.h5", tmp_path / "t").returncode == 0
    assert_same_store(tmp_path / "s", tmp_path / "t")
    # a broken store makes verify exit 1
    root = zarr.open_group(str(tmp_path / "t"), mode="r+")
    block = np.asarray(root["views/v/features"][0:4])
    block[0] = np.inf
    root["views/v/features"][0:4] = block
    r = vssl_cli("store", "verify", tmp_path / "t")
    assert r.returncode == 1 and "NaN/inf" in r.stdout


def test_the_old_row_group_method_names_still_work_and_say_they_are_deprecated(tmp_path):
    from vssl.features_store.store import RENAMED_METHODS

    store = FeatureStore.create(tmp_path / "s", BACKBONE, [VideoEntry("a.mp4", 0, "train")], ["x"])
    with pytest.warns(DeprecationWarning, match="create_row_group"):
        store.create_rows("aggregates/r/v", {"set_token": ((4,), "float32")})
    with pytest.warns(DeprecationWarning, match="has_row_group"):
        assert store.has_rows("aggregates/r/v")
    with pytest.warns(DeprecationWarning, match="row_group"):
        assert store.rows("aggregates/r/v").done().tolist() == [False]
    assert set(RENAMED_METHODS) == {"rows", "has_rows", "create_rows", "ragged_rows", "create_ragged_rows"}
