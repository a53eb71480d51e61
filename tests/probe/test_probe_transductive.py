"""A run pretrained on the test videos is transductive wherever its store now lives: moved,
copied or made again from the same videos (the videos decide, not the store's path); older runs
without the record fall back to their splits and say so when that rests on an assumption."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vssl.features_store.synthetic import make_synthetic_store

from tests.probe_helpers import VIEW, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_RUN = ["--view", VIEW, "--width", "16", "--layers", "1", "--heads", "2", "--pred-hidden", "32",
            "--target-hidden", "32", "--proj-dim", "8", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
            "--precision", "fp32", "--quiet"]


def _make_store(path):
    """Three classes, 36 train and 12 test videos of 4 clips; the same videos every call."""
    rng = np.random.default_rng(0)
    y = np.arange(48) % 3
    x = (3 * rng.normal(size=(3, 8))[y][:, None] + rng.normal(size=(48, 4, 8))).astype(np.float32)
    make_synthetic_store(path, x, y, ["train"] * 36 + ["test"] * 12, view=VIEW, chunk_videos=16)
    return path


def _relocate(store, how, dest):
    """The store's videos at ``dest``: the directory moved, copied, or a store made anew from them."""
    if how == "moved":
        shutil.move(store, dest)
    elif how == "copied":
        shutil.copytree(store, dest)
    else:
        _make_store(dest)
    return dest


def _probe(capsys, store, run, tmp_path):
    report = tmp_path / "report.json"
    code, _, err = run_cli(capsys, "probe", store, "--view", VIEW, "--scale", run, "--knn", "--quiet",
                           "--report", report)
    assert code == 0, err
    rows = {r["features"]: r["transductive"] for r in json.loads(report.read_text())["results"]}
    said = [line for line in err.splitlines() if line.startswith(("warning: SCALE", "note:"))]
    return rows, said


@pytest.mark.slow
@pytest.mark.parametrize("how", ["moved", "copied", "remade"])
@pytest.mark.parametrize("split, expected", [("all", True), ("train", False)])
def test_the_videos_decide_wherever_the_store_is(tmp_path, capsys, how, split, expected):
    store, run = _make_store(tmp_path / "first" / "store"), tmp_path / "run"
    code, _, err = run_cli(capsys, "aggregate", store, "--out", run, "--split", split, *TINY_RUN)
    assert code == 0, err
    probed = _relocate(store, how, tmp_path / "elsewhere")
    rows, said = _probe(capsys, probed, run, tmp_path)
    assert rows == {"backbone": False, "scale": expected}
    if expected:
        assert len(said) == 1 and "12 of the 12 test videos" in said[0] and "'test'" in said[0], said
        assert str(run) in said[0]
    else:
        assert said == []


def _as_older_run(run):
    """``run`` as vssl wrote it before runs recorded their videos (and the store's creation id)."""
    path = run / "checkpoint.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("trained_on_videos", "store_id"):
        state["meta"].pop(key, None)
    torch.save(state, path)


@pytest.mark.slow
@pytest.mark.parametrize("split, expected", [("all", True), ("train", False)])
def test_an_older_run_whose_store_is_gone_is_judged_by_its_splits_and_says_so(tmp_path, capsys, split, expected):
    store, run = _make_store(tmp_path / "first" / "store"), tmp_path / "run"
    assert run_cli(capsys, "aggregate", store, "--out", run, "--split", split, *TINY_RUN)[0] == 0
    _as_older_run(run)
    moved = _relocate(store, "moved", tmp_path / "elsewhere")
    rows, said = _probe(capsys, moved, run, tmp_path)
    assert rows["scale"] is expected
    assert len(said) == 1 and "predates" in said[0] and "assumed" in said[0], said     # never silent: unsure
    assert said[0].startswith("warning:" if expected else "note:")


@pytest.mark.slow
def test_an_older_run_whose_store_still_exists_is_read_there(tmp_path, capsys):
    store, run = _make_store(tmp_path / "first" / "store"), tmp_path / "run"
    assert run_cli(capsys, "aggregate", store, "--out", run, "--split", "all", *TINY_RUN)[0] == 0
    _as_older_run(run)
    rows, said = _probe(capsys, _relocate(store, "copied", tmp_path / "copy"), run, tmp_path)
    assert rows["scale"] is True and len(said) == 1 and str(store) in said[0] and "predates" not in said[0]
