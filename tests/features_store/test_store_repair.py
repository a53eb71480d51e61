"""A chunk file truncated on disk (a full disk, a copy cut short): `vssl store verify` names the file and
its videos (before, it ended in "unexpected ValueError ... cannot reshape"), `--repair` makes those videos
pending, and the same `vssl extract` redoes them, past the finished-chunk markers of the first run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.distributed.test_distributed import assert_same_store
from tests.videos import write_video
from vssl.cli import main as cli_main
from vssl.features_store import FeatureStore

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repair_videos")
    for i, n in enumerate([20, 25, 30, 22, 18]):
        write_video(root / "a" / f"v{i}.mp4", n)
    return root


def cli(capsys, *args) -> tuple[int, str]:
    """Run the command line in this process: (exit code, stdout)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        cli_main([str(a) for a in args])
    return ended.value.code, capsys.readouterr().out


def chunk_1_file(store: Path, layout: str) -> Path:
    """The features file of chunk 1 (videos 2-3) of the fixed or the ragged view, relative to the store
    (zarr v3's chunk keys: ``c/<i>/<j>/...``; a ragged chunk's rows are one chunk of its generation)."""
    if layout == "fixed":
        return Path("views/random3/features/c/1/0/0")
    found, = store.glob("views/dense0.5/chunks/1/*/features/c/0/0")
    return found.relative_to(store)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["fixed", "ragged"])
def test_a_truncated_chunk_is_named_and_repaired_to_the_uninterrupted_rows(tmp_path, videos, capsys, layout):
    out = tmp_path / "s"
    extract = ["extract", videos, "--out", out, "--views", "random:3,dense:0.5", "--chunk-videos", "2",
               "--frames", "4", "--size", "32", "--seed", "3", "--precision", "fp32", "--quiet"]
    assert cli(capsys, *extract)[0] == 0
    shutil.copytree(out, tmp_path / "uninterrupted")
    damaged = chunk_1_file(out, layout)
    (out / damaged).write_bytes((out / damaged).read_bytes()[:50])  # cut short

    code, report = cli(capsys, "store", "verify", out)
    assert code == 1
    assert f"chunk file {damaged} is unreadable (truncated: 50 bytes" in report
    assert "videos 2-3 (a/v2.mp4, a/v3.mp4) lost" in report and "vssl store verify --repair" in report

    code, report = cli(capsys, "store", "verify", out, "--repair")
    assert code == 1 and "videos 2-3 made pending" in report and "incomplete: 2 videos pending" in report
    assert not (out / damaged).exists() and len(list(tmp_path.glob(f"s.unreadable/*/{damaged}"))) == 1  # kept aside

    assert cli(capsys, *extract)[0] == 0  # the same command; the first run's markers do not hide chunk 1
    code, report = cli(capsys, "store", "verify", out)
    assert code == 0 and "consistent and complete" in report
    assert_same_store(out, tmp_path / "uninterrupted")
    st = FeatureStore.open(out)
    assert st.usable("random3").all() and st.usable("dense0.5").all()
    assert np.array_equal(st.view("dense0.5").counts(), FeatureStore.open(tmp_path / "uninterrupted").view(
        "dense0.5").counts())
