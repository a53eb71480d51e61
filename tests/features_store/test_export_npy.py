"""`vssl store export --format npy`: one [num_clips, D] float32 file per video, read back with numpy."""

from __future__ import annotations

import csv
import signal

import numpy as np
import pytest

from vssl.cli import main
from vssl.errors import StoreError
from vssl.features_store import BackboneSpec, FeatureStore, VideoEntry, export_npy
from vssl.features_store.export_npy import npy_names

D = 6
BACKBONE = BackboneSpec(name="tiny", embed_dim=D, frames=4, stride=2, size=32, mean=(0.5,) * 3, std=(0.2,) * 3)
PATHS = ["jump/v0.mp4", "jump/v1.avi", "run/v2.mkv", "run/deep/v3.mp4", "run/v4.mp4"]


def clips_of(i: int) -> np.ndarray:
    return (i * 10 + np.arange(2 * i + 1)[:, None] + np.arange(D)[None, :] / 8).astype(np.float32)


def make_store(path, paths=PATHS, dtype="float16"):
    store = FeatureStore.create(path, BACKBONE, [VideoEntry(p, 0, "train") for p in paths], ["a"], chunk_videos=2)
    store.create_view("dense1", None, {"sampler": "dense", "seconds": 1.0}, dtype=dtype)
    store.create_view("uniform2x1", 2, {"sampler": "uniform"}, dtype=dtype)
    for start, stop in store.chunk_ranges():
        idx = list(range(start, stop))
        feats = [clips_of(i) for i in idx]
        store.write_videos(idx, {"dense1": (feats, [np.tile([0, 0, 0, 1, 1, 1, 0], (len(f), 1)) for f in feats]),
                                 "uniform2x1": ([f[:1].repeat(2, 0) for f in feats],
                                                [np.tile([0, 0, 0, 1, 1, 1, 0], (2, 1))] * len(idx))},
                           num_frames=[30] * len(idx), fps=[25.0] * len(idx),
                           errors=["broken file" if i == 4 else None for i in idx])
    return store


def read_index(directory) -> list[dict]:
    with open(directory / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_one_file_per_usable_video_mirroring_folders(tmp_path):
    store = make_store(tmp_path / "s")
    done = export_npy(store, tmp_path / "out", "dense1")
    assert (done.written, done.kept, done.skipped) == (4, 0, 1)  # the failed video is left out
    stored = store.view("dense1").read(np.arange(5))
    for i, name in enumerate(["jump/v0.npy", "jump/v1.npy", "run/v2.npy", "run/deep/v3.npy"]):
        arr = np.load(tmp_path / "out" / name)
        assert arr.dtype == np.float32 and arr.shape == (2 * i + 1, D)
        np.testing.assert_array_equal(arr, stored.features[i, :2 * i + 1].astype(np.float32))
        np.testing.assert_allclose(arr, clips_of(i), rtol=1e-3)  # float16 in the store
    assert not (tmp_path / "out" / "run" / "v4.npy").exists()
    index = read_index(tmp_path / "out")
    assert [r["path"] for r in index] == PATHS[:4] and [int(r["clips"]) for r in index] == [1, 3, 5, 7]
    assert {r["seconds_per_clip"] for r in index} == {"1.0"} and index[3]["file"] == "run/deep/v3.npy"


def test_fixed_views_export_too(tmp_path):
    store = make_store(tmp_path / "s")
    export_npy(store, tmp_path / "out", "uniform2x1")
    arr = np.load(tmp_path / "out" / "run" / "v2.npy")
    assert arr.shape == (2, D)
    np.testing.assert_array_equal(arr, store.view("uniform2x1").read([2]).features[0].astype(np.float32))
    assert {r["seconds_per_clip"] for r in read_index(tmp_path / "out")} == {""}  # not evenly spaced in time


@pytest.mark.slow
def test_resuming_rewrites_only_missing_or_broken_files(tmp_path):
    store = make_store(tmp_path / "s")
    export_npy(store, tmp_path / "out", "dense1")
    (tmp_path / "out" / "jump" / "v1.npy").unlink()
    (tmp_path / "out" / "run" / "v2.npy").write_bytes(b"half a file")
    (tmp_path / "out" / "index.csv").unlink()  # killed before the index
    again = export_npy(store, tmp_path / "out", "dense1")
    assert (again.written, again.kept) == (2, 2)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "run" / "v2.npy"), clips_of(2), rtol=1e-3)
    assert len(read_index(tmp_path / "out")) == 4
    assert not list((tmp_path / "out").rglob("*.partial"))


@pytest.mark.slow
def test_directory_rules(tmp_path):
    store = make_store(tmp_path / "s")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty and is not a vssl npy export"):
        export_npy(store, tmp_path / "busy", "dense1")
    export_npy(store, tmp_path / "out", "dense1")
    with pytest.raises(StoreError, match="holds an export of .* view 'dense1'"):
        export_npy(store, tmp_path / "out", "uniform2x1")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        export_npy(store, tmp_path / "file", "dense1")
    with pytest.raises(StoreError, match="no view 'nope'"):
        export_npy(store, tmp_path / "new", "nope")


def test_names_mirror_the_input_root_or_the_common_root_and_refuse_collisions():
    assert npy_names(["a/x.mp4", "b/y.avi"]) == ["a/x.npy", "b/y.npy"]
    assert npy_names(["/data/films/a/x.mp4", "/data/films/b/y.mp4"]) == ["a/x.npy", "b/y.npy"]
    assert npy_names(["../films/x.mp4", "../films/sub/y.mp4"]) == ["x.npy", "sub/y.npy"]
    with pytest.raises(StoreError, match="'a/x.mp4' and 'a/x.avi' would both be exported as a/x.npy"):
        npy_names(["a/x.mp4", "b/x.mp4", "a/x.avi"])


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--format", "npy"], "add --view NAME"),
    (["--format", "npy", "--view", "nope"], "no view 'nope'"),
    (["--view", "dense1"], "--view is for --format npy"),
    (["--format", "csv"], "choose hdf5 or npy"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    make_store(tmp_path / "s")
    with pytest.raises(SystemExit) as done:
        main(["store", "export", str(tmp_path / "s"), str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_cli_exports_npy(tmp_path, capsys):
    make_store(tmp_path / "s", dtype="float32")
    with pytest.raises(SystemExit) as done:
        main(["store", "export", str(tmp_path / "s"), str(tmp_path / "out"), "--format", "npy", "--view", "dense1"])
    assert done.value.code == 0
    assert "wrote 4 .npy files" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "run" / "deep" / "v3.npy"), clips_of(3))


def test_names_never_leave_the_export_directory_and_mixed_paths_are_one_rule():
    assert npy_names(["../o/v.mp4", "a/b.mp4"]) == ["o/v.npy", "a/b.npy"]      # was ../o/v.npy: outside DIR
    assert npy_names(["/abs/x.mp4", "a/b.mp4"]) == ["abs/x.npy", "a/b.npy"]    # was a ValueError traceback


@pytest.mark.slow
def test_a_store_made_anew_at_the_same_path_does_not_reuse_the_old_exports_files(tmp_path):
    import shutil

    export_npy(make_store(tmp_path / "s"), tmp_path / "out", "dense1")
    shutil.rmtree(tmp_path / "s")
    with pytest.raises(StoreError, match="holds an export of"):
        export_npy(make_store(tmp_path / "s"), tmp_path / "out", "dense1")


def boxes_for(features: list[np.ndarray]) -> list[np.ndarray]:
    return [np.tile([0, 0, 0, 1, 1, 1, 0], (len(f), 1)) for f in features]


def file_ids(directory) -> dict[str, tuple[int, int]]:
    """Each .npy file's inode and modification time: a rewritten file (renamed into place) changes both."""
    return {str(p.relative_to(directory)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.rglob("*.npy")}


@pytest.mark.slow
def test_a_file_is_kept_only_while_it_holds_the_videos_rows(tmp_path):
    """A file of the right shape used to be kept: a video re-extracted since (as many clips, other rows)
    kept its stale file. Now exactly that file is rewritten, and the file of a video that failed since
    is removed; the others are kept untouched."""
    store = make_store(tmp_path / "s", dtype="float32")
    out = tmp_path / "out"
    export_npy(store, out, "dense1")
    before = file_ids(out)
    again = [clips_of(2) + 0.5, clips_of(3)]  # chunk [2, 3] extracted again: video 2's rows changed
    store.write_videos([2, 3], {"dense1": (again, boxes_for(again))}, num_frames=[30, 30], fps=[25.0, 25.0],
                       errors=[None, None])
    failed = [clips_of(0), clips_of(1)]  # chunk [0, 1] again: video 1 fails this time
    store.write_videos([0, 1], {"dense1": (failed, boxes_for(failed))}, num_frames=[30, 30], fps=[25.0, 25.0],
                       errors=[None, "broken file"])
    done = export_npy(FeatureStore.open(tmp_path / "s"), out, "dense1")
    assert (done.written, done.kept, done.skipped, done.removed) == (1, 2, 2, 1)
    np.testing.assert_array_equal(np.load(out / "run" / "v2.npy"), clips_of(2) + 0.5)
    after = file_ids(out)
    assert after["run/v2.npy"] != before["run/v2.npy"] and "jump/v1.npy" not in after
    assert {k: after[k] for k in ("jump/v0.npy", "run/deep/v3.npy")} == {k: before[k] for k in
                                                                         ("jump/v0.npy", "run/deep/v3.npy")}
    assert [r["file"] for r in read_index(out)] == ["jump/v0.npy", "run/v2.npy", "run/deep/v3.npy"]


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_a_write_refused_mid_file_is_one_line_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    """A disk that fills in the middle of a file: `np.save` reported it as "N requested and M written",
    with no errno (an "unexpected OSError", exit 1), and left `.NAME.npy.partial` behind. The kernel
    refuses writes mid-file the same way past a file size limit (EFBIG instead of ENOSPC), which a test
    can set: 40 clips x 256 floats are 40 KB a file, over an 8 KB limit."""
    import resource

    from vssl.features_store.synthetic import make_synthetic_store

    monkeypatch.setenv("VSSL_LOG_DIR", str(tmp_path / "logs"))
    rng = np.random.default_rng(0)
    features = [rng.standard_normal((40, 256)).astype(np.float32) for _ in range(3)]
    make_synthetic_store(tmp_path / "s", features, [0, 0, 0], ["train"] * 3, view="dense1", dtype="float32")
    args = ["store", "export", str(tmp_path / "s"), str(tmp_path / "out"), "--format", "npy", "--view", "dense1"]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))
    try:
        with pytest.raises(SystemExit) as done:
            main(args)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.strip().splitlines()) == 1 and "File too large" in err, err
    assert str(tmp_path / "out" / "video000000.npy") in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["vssl-export.json"]  # nothing half-written
    with pytest.raises(SystemExit) as done:
        main(args)  # room again: the same command finishes the export
    assert done.value.code == 0
    for i, f in enumerate(features):
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"video{i:06d}.npy"), f)
