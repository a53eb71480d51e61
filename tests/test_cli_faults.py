"""What a user sees when a command is interrupted or fails unexpectedly: one line that says what
stopped (and which file it was working on), how to go on, and the exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_vssl
from tests.videos import write_video
from vssl.cli import main
from vssl.features_store import STATUS_DONE, FeatureStore, verify_store

pytestmark = pytest.mark.usefixtures("one_thread")

INTERRUPTED = ("interrupted: `vssl extract` stopped (Ctrl-C); finished work is kept: re-run the same command "
               "to resume")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _videos_done(store) -> int:
    """Videos the running extraction has finished so far (0 while the store does not exist yet)."""
    if not FeatureStore.exists(store):
        return 0
    return int((FeatureStore.open(store).video_status() == STATUS_DONE).sum())


@pytest.mark.slow
def test_ctrl_c_during_extraction_is_one_line_exit_130_and_the_rerun_resumes(tmp_path):
    for i in range(16):
        write_video(tmp_path / "v" / "a" / f"{i}.mp4", 12)
    store = tmp_path / "s"
    args = ["extract", str(tmp_path / "v"), "--out", str(store), "--quiet", "--views", "uniform:2x1",
            "--backbone", "tests.slow_backbone:slow_tiny", "--batch-size", "2", "--chunk-videos", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "vssl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
    deadline = time.monotonic() + 120
    while _videos_done(store) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the first chunk is written: the run is under way
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines() == [INTERRUPTED], err
    done = _videos_done(store)
    assert 0 < done < 16  # stopped mid-run, the chunks written kept
    assert FeatureStore.open(store).usable("uniform2x1").sum() == done  # the chunk being written was finished
    rerun = run_vssl(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{16 - done} done, 0 failed, {done} already done" in rerun.stdout  # resumed where it stopped
    finished = FeatureStore.open(store)
    assert verify_store(finished) == [] and (finished.video_status() == STATUS_DONE).all()


class _InterruptedImport:
    """A module finder that raises KeyboardInterrupt on importing ``vssl.cli``: Ctrl-C while torch loads."""

    def find_spec(self, name, path=None, target=None):
        if name == "vssl.cli":
            raise KeyboardInterrupt
        return None


def test_ctrl_c_while_starting_is_one_line_too(capsys, monkeypatch):
    """Importing the command line takes seconds (torch); a Ctrl-C then was a traceback from an import."""
    from vssl.__main__ import run

    monkeypatch.delitem(sys.modules, "vssl.cli")
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport(), *sys.meta_path])
    with pytest.raises(SystemExit) as done:
        run()
    err = capsys.readouterr().err
    assert done.value.code == 130 and err == "interrupted: vssl stopped while starting (Ctrl-C); nothing was written\n"


# ---------------------------------------------------------------- unexpected errors name their file


def run(args: list[str], capsys) -> tuple[int, str]:
    """The CLI in this process (so a failure can be injected); exit code and stderr."""
    with pytest.raises(SystemExit) as done:
        main(args)
    return done.value.code or 0, capsys.readouterr().err


@pytest.fixture
def videos(tmp_path, monkeypatch):
    monkeypatch.setenv("VSSL_LOG_DIR", str(tmp_path / "logs"))
    for i in range(3):
        write_video(tmp_path / "v" / "a" / f"{i}.mp4", 10)
    return tmp_path / "v"


def extract_args(videos, out) -> list[str]:
    return ["extract", str(videos), "--out", str(out), "--quiet", "--views", "uniform:2x1", "--chunk-videos", "2",
            "--frames", "4", "--size", "32"]


def test_an_unexpected_error_decoding_a_video_names_the_video(videos, tmp_path, capsys, monkeypatch):
    import vssl.extract.clips as clips

    real = clips.sample_clips

    def broken_for_one(spec, num_frames, height, width, video_key, *args):
        if video_key == "a/1.mp4":
            raise RuntimeError("injected sampler bug")
        return real(spec, num_frames, height, width, video_key, *args)

    monkeypatch.setattr(clips, "sample_clips", broken_for_one)
    code, err = run(extract_args(videos, tmp_path / "s"), capsys)
    assert code == 0  # the video fails alone
    (line,) = [line for line in err.splitlines() if line.startswith("failed:")]
    assert "RuntimeError: injected sampler bug" in line and str(videos / "a" / "1.mp4") in line


def test_an_unexpected_error_embedding_names_the_videos_of_the_batch(videos, tmp_path, capsys, monkeypatch):
    from vssl.extract.backbones.tiny import TinyVideoNet

    def broken(self, clips):
        raise RuntimeError("injected backbone bug")

    monkeypatch.setattr(TinyVideoNet, "forward_features", broken)
    code, err = run([*extract_args(videos, tmp_path / "s"), "--batch-size", "4"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "unexpected RuntimeError in `vssl extract`: injected backbone bug" in err
    assert f"while processing clips of {videos / 'a' / '0.mp4'}, {videos / 'a' / '1.mp4'}" in err


def test_an_unexpected_error_loading_a_checkpoint_names_the_checkpoint(videos, tmp_path, capsys, monkeypatch):
    import torch

    from vssl.extract.backbones.tiny import TinyVideoNet

    checkpoint = tmp_path / "tiny.pth"
    torch.save(TinyVideoNet().state_dict(), checkpoint)

    def broken(self, state_dict, strict=True, assign=False):
        raise RuntimeError("injected loading bug")

    monkeypatch.setattr(TinyVideoNet, "load_state_dict", broken)
    code, err = run([*extract_args(videos, tmp_path / "s"), "--checkpoint", str(checkpoint)], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "injected loading bug" in err and f"while processing checkpoint {checkpoint}" in err


def test_an_unexpected_error_reading_a_store_names_the_chunk_file(videos, tmp_path, capsys):
    assert run(extract_args(videos, tmp_path / "s"), capsys)[0] == 0
    features = tmp_path / "s" / "views" / "uniform2x1" / "features"
    chunk = sorted(p for p in features.rglob("*") if p.is_file() and p.name != "zarr.json")[0]
    chunk.write_bytes(chunk.read_bytes()[:100])  # truncated (a disk fault, a bad copy)
    code, err = run(["store", "export", str(tmp_path / "s"), str(tmp_path / "npy"), "--format", "npy",
                     "--view", "uniform2x1"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "unexpected ValueError" in err
    assert f"while processing store chunk {chunk}" in err


def test_an_error_line_prints_brackets_as_written(tmp_path, capsys):
    """Error text is not rich markup: a path like ``take[two]`` or a hint like ``vssl[extra]`` keeps its brackets."""
    missing = tmp_path / "take[two]"
    with pytest.raises(SystemExit) as exit_:
        main(["store", "info", str(missing)])
    assert exit_.value.code == 2
    assert "take[two]" in capsys.readouterr().err
