"""Daily-use faults: no tracebacks, no silent skips, full tables when piped, a full disk loses nothing."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from tests.videos import write_video
from vssl.cli import main
from vssl.features_store import FeatureStore, verify_store

pytestmark = pytest.mark.usefixtures("one_thread")


def run(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(args)
    return done.value.code or 0, capsys.readouterr().err


def write_gif(path, n: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("gif", rate=10)
        s.width, s.height, s.pix_fmt = 32, 24, "rgb8"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), i * 20, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_an_unexpected_error_is_one_line_with_a_log_of_the_traceback(tmp_path, capsys, monkeypatch):
    import vssl.features_store.info as info

    def boom(store):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(info, "store_summary", boom)
    monkeypatch.setattr("vssl.features_store.store_summary", boom)
    monkeypatch.setenv("VSSL_LOG_DIR", str(tmp_path / "logs"))
    write_video(tmp_path / "v" / "a" / "0.mp4", 10)
    assert run(["extract", str(tmp_path / "v"), "--out", str(tmp_path / "s"), "--quiet",
                "--views", "uniform:1x1"], capsys)[0] == 0
    code, err = run(["store", "info", str(tmp_path / "s")], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "unexpected RuntimeError in `vssl store`: something inside broke" in err
    (log,) = (tmp_path / "logs").iterdir()
    assert "Traceback" in log.read_text() and "something inside broke" in log.read_text() and str(log) in err


def test_gif_and_other_containers_are_read_and_skipped_files_are_reported(tmp_path, capsys):
    write_gif(tmp_path / "v" / "a" / "anim.gif")
    write_video(tmp_path / "v" / "b" / "clip.mp4", 12)
    (tmp_path / "v" / "b" / "notes.txt").write_text("x")
    (tmp_path / "v" / "b" / "labels.txt").write_text("x")
    (tmp_path / "v" / "b" / "._clip.mp4").write_bytes(b"resource fork")
    code, err = run(["extract", str(tmp_path / "v"), "--out", str(tmp_path / "s"), "--quiet",
                     "--views", "uniform:2x1"], capsys)
    assert code == 0
    store = FeatureStore.open(tmp_path / "s")
    assert sorted(store.paths().tolist()) == ["a/anim.gif", "b/clip.mp4"] and store.view("uniform2x1").done().all()
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 2
    assert any("2 .txt files" in line and "not a video container" in line for line in skipped)
    assert any("1 hidden file" in line for line in skipped)


@pytest.mark.slow
def test_tables_are_not_cut_when_piped():
    proc = subprocess.run([sys.executable, "-m", "vssl", "backbones"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "efficientnet-lite0" in proc.stdout and "…" not in proc.stdout


@pytest.mark.slow
def test_a_full_disk_during_extraction_is_one_line_and_the_rerun_completes_the_store(tmp_path, capsys, monkeypatch):
    import zarr.storage._local as local

    for i in range(6):
        write_video(tmp_path / "v" / "a" / f"{i}.mp4", 10 + i)
    args = ["extract", str(tmp_path / "v"), "--quiet", "--views", "random:2,uniform:1x1", "--chunk-videos", "2"]
    assert run([*args, "--out", str(tmp_path / "whole")], capsys)[0] == 0
    real_put, writes = local._put, []

    def filling_disk(path, value, exclusive=False):
        if "/views/" in str(path) and "/c/" in str(path):  # a chunk of features, boxes or done flags
            writes.append(path)
        if len(writes) > 4:  # the disk fills after the first chunk of videos
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_put(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", filling_disk)
    code, err = run([*args, "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "No space left on device" in err
    monkeypatch.setattr(local, "_put", real_put)
    partial = FeatureStore.open(tmp_path / "s")
    assert verify_store(partial) == [] and not partial.view("uniform1x1").done().all()
    assert run([*args, "--out", str(tmp_path / "s")], capsys)[0] == 0  # the rerun resumes
    a, b = FeatureStore.open(tmp_path / "whole"), FeatureStore.open(tmp_path / "s")
    for view in ("random2", "uniform1x1"):
        np.testing.assert_array_equal(a.view(view).read(np.arange(6)).features, b.view(view).read(np.arange(6)).features)
    assert verify_store(b) == []


@pytest.mark.slow
def test_a_read_only_store_and_a_failed_export_are_one_line(tmp_path, capsys, monkeypatch):
    import zarr.storage._local as local

    from vssl.features_store import hdf5

    write_video(tmp_path / "v" / "a" / "0.mp4", 10)
    args = ["extract", str(tmp_path / "v"), "--out", str(tmp_path / "s"), "--quiet"]
    assert run(args, capsys)[0] == 0
    real_put = local._put

    def read_only(path, value, exclusive=False):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(local, "_put", read_only)
    code, err = run([*args, "--views", "random:2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Read-only file system" in err
    monkeypatch.setattr(local, "_put", real_put)
    assert verify_store(FeatureStore.open(tmp_path / "s")) == []

    def full_disk(node, out):  # the HDF5 file exists, then the disk fills
        raise OSError("[Errno 28] No space left on device")

    monkeypatch.setattr(hdf5, "_copy_to_h5", full_disk)
    code, err = run(["store", "export", str(tmp_path / "s"), str(tmp_path / "s.h5")], capsys)
    assert code == 2 and "No space left" in err and not (tmp_path / "s.h5").exists()


@pytest.mark.slow
def test_a_run_killed_between_the_rows_and_the_video_table_redoes_those_videos(tmp_path, capsys, monkeypatch):
    """The store used to write a chunk's view rows and their done flags before the video table: a kill
    in between left videos done in every view but pending in the table, and a rerun skipped them forever.
    Now the done flags come last (a kill at the table leaves them unset), and a store left by the old
    order (flags set, table pending) is still redone: disagreement means not done."""
    for i in range(4):
        write_video(tmp_path / "v" / "a" / f"{i}.mp4", 10 + i)
    args = ["extract", str(tmp_path / "v"), "--quiet", "--views", "uniform:1x1", "--chunk-videos", "2"]
    assert run([*args, "--out", str(tmp_path / "whole")], capsys)[0] == 0

    def killed_at_the_table(self, idx, updates):
        raise KeyboardInterrupt  # SIGTERM from a launcher, at the worst moment

    with monkeypatch.context() as m:
        m.setattr(FeatureStore, "_record_videos", killed_at_the_table)
        assert run([*args, "--out", str(tmp_path / "s")], capsys)[0] == 130
    cut = FeatureStore.open(tmp_path / "s", "r+")
    assert not cut.view("uniform1x1").done().any() and (cut.video_status() == 0).all()
    cut.view("uniform1x1").mark(np.arange(2))  # what the old order left: done flags, no table entry
    assert not cut.usable("uniform1x1").any()  # not trained on
    assert run([*args, "--out", str(tmp_path / "s")], capsys)[0] == 0
    a, b = FeatureStore.open(tmp_path / "whole"), FeatureStore.open(tmp_path / "s")
    np.testing.assert_array_equal(a.video_status(), b.video_status())
    np.testing.assert_array_equal(a.num_frames(), b.num_frames())
    np.testing.assert_array_equal(a.view("uniform1x1").read(np.arange(4)).features,
                                  b.view("uniform1x1").read(np.arange(4)).features)
