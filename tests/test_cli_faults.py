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
    rerun = run_vssl(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{16 - done} done, 0 failed, {done} already done" in rerun.stdout  # resumed where it stopped
    finished = FeatureStore.open(store)
    assert verify_store(finished) == [] and (finished.video_status() == STATUS_DONE).all()


def test_ctrl_c_while_starting_is_one_line_too(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "vssl", "backbones"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    time.sleep(1.0)  # importing torch takes longer; a quick machine may already run the command: same line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and len(err.strip().splitlines()) == 1 and err.startswith("interrupted:"), err
