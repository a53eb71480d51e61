"""`vssl store info` on a store with an unreadable chunk file: the summary of everything readable, and one
line per damaged file naming it, its videos and the repair (before, it ended in "unexpected ValueError ...
cannot reshape" or a JSONDecodeError)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vssl.cli import main as cli_main
from vssl.features_store.synthetic import make_synthetic_store


def info(capsys, *args) -> tuple[int, str]:
    """`vssl store info` in this process: (exit code, stdout)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        cli_main(["store", "info", *map(str, args)])
    return ended.value.code, capsys.readouterr().out


def _fixed(path: Path) -> Path:
    rng = np.random.default_rng(0)
    make_synthetic_store(path, rng.normal(size=(6, 3, 4)).astype(np.float32), [0, 1] * 3, ["train"] * 6,
                         chunk_videos=2)
    return path


def _ragged(path: Path) -> Path:
    rng = np.random.default_rng(0)
    make_synthetic_store(path, [rng.normal(size=(k, 4)).astype(np.float32) for k in (1, 2, 3, 1, 2, 3)],
                         [0, 1] * 3, ["train"] * 6, view="dense", chunk_videos=2)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("make, damaged, group", [
    (_fixed, "views/random16/status/c/1", "views/random16/status"),
    (_fixed, "videos/status/c/1", "videos/status"),
    (_ragged, "views/dense/chunks/1/zarr.json", "views/dense/chunks/1"),
])
def test_info_names_an_unreadable_chunk_in_one_line_and_summarises_the_rest(tmp_path, capsys, make, damaged, group):
    store = make(tmp_path / "s")
    (store / damaged).write_bytes((store / damaged).read_bytes()[:1])  # cut short

    code, shown = info(capsys, store)
    assert code == 0
    lines = [line for line in shown.splitlines() if damaged in line]
    assert len(lines) == 1, shown
    assert f"{group}: chunk file {damaged} is unreadable" in lines[0]
    assert "videos 2-3" in lines[0] and "vssl store verify --repair" in lines[0]

    summary = json.loads(info(capsys, store, "--json")[1])
    assert len(summary["unreadable"]) == 1 and damaged in summary["unreadable"][0]
    assert summary["num_videos"] == 6
    counted = summary["videos"] if group == "videos/status" else next(iter(summary["groups"].values()))
    assert counted["done"] == 4  # the two videos of the damaged chunk are not counted done


def test_info_of_a_sound_store_lists_nothing_unreadable(tmp_path, capsys):
    summary = json.loads(info(capsys, _fixed(tmp_path / "s"), "--json")[1])
    assert summary["unreadable"] == [] and summary["groups"]["views/random16"]["done"] == 6
