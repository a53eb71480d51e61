"""Export formats are plug-ins: a format is one class on the :class:`Exporter` protocol and one line in
``EXPORTERS``; it reads a view video by video (:meth:`FeatureStore.iter_videos`) and gets the marker and
whole-file writes from :mod:`vssl.features_store.exporting`. A format defined in this test runs end to end
through ``vssl store export``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vssl.cli import main
from vssl.errors import StoreError
from vssl.features_store import FeatureStore
from vssl.features_store.exporters import EXPORTERS
from vssl.features_store.exporting import ExportDirectory, atomic_file
from vssl.features_store.synthetic import make_synthetic_store


class JsonLinesExporter:
    """One ``clips.jsonl`` line per usable video: its path and its features as nested lists."""

    name = "jsonl"
    per_view = True

    def export(self, store: FeatureStore, output: Path, view: str | None) -> str:
        target = ExportDirectory(output, store, str(view), self.name)
        target.claim({})
        lines = [json.dumps({"path": v.path, "features": v.features.astype(float).tolist()})
                 for v in store.iter_videos(str(view))]
        target.write("clips.jsonl", ("\n".join(lines) + "\n").encode())
        return f"wrote {len(lines)} videos"


FEATURES = [np.arange(k * 3, dtype=np.float32).reshape(k, 3) + 10 * i for i, k in enumerate((2, 1, 3, 2))]


def make_store(path: Path) -> FeatureStore:
    store = make_synthetic_store(path, FEATURES, [0, 1, 0, 1], ["train"] * 4, view="dense", dtype="float32",
                                 chunk_videos=2)
    store.write_videos([1], {"dense": ([FEATURES[1]], [np.zeros((1, 7), np.float32)])}, num_frames=[0], fps=[0.0],
                       errors=["unreadable file"])  # a failed video is not exported
    return store


def export(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        main(["store", "export", *map(str, args)])
    return ended.value.code, capsys.readouterr().err


@pytest.mark.slow
def test_a_format_defined_here_exports_through_the_command(tmp_path, capsys, monkeypatch):
    make_store(tmp_path / "s")
    monkeypatch.setitem(EXPORTERS, "jsonl", JsonLinesExporter())
    code, said = export(capsys, tmp_path / "s", tmp_path / "out", "--format", "jsonl", "--view", "dense")
    assert code == 0 and "wrote 3 videos" in said
    lines = [json.loads(line) for line in (tmp_path / "out" / "clips.jsonl").read_text().splitlines()]
    assert [line["path"] for line in lines] == ["video000000.mp4", "video000002.mp4", "video000003.mp4"]
    for line, i in zip(lines, (0, 2, 3)):
        np.testing.assert_array_equal(np.array(line["features"], np.float32), FEATURES[i])
    marker = json.loads((tmp_path / "out" / "vssl-export.json").read_text())
    assert marker["view"] == "dense" and marker["store"] == str((tmp_path / "s").resolve())

    make_synthetic_store(tmp_path / "other", FEATURES, [0, 1, 0, 1], ["train"] * 4, view="dense")
    code, said = export(capsys, tmp_path / "other", tmp_path / "out", "--format", "jsonl", "--view", "dense")
    assert code == 2 and "holds an export of" in said and len(said.strip().splitlines()) == 1
    code, said = export(capsys, tmp_path / "s", tmp_path / "o2", "--format", "jsonl")
    assert code == 2 and "--format jsonl exports one view: add --view NAME" in said
    code, said = export(capsys, tmp_path / "s", tmp_path / "o3", "--format", "parquet")
    assert code == 2 and "choose hdf5 or npy or jsonl" in said


def test_iter_videos_yields_the_usable_videos_one_at_a_time(tmp_path):
    store = make_store(tmp_path / "s")
    seen = list(store.iter_videos("dense"))
    assert [v.index for v in seen] == [0, 2, 3] and [v.features.shape for v in seen] == [(2, 3), (3, 3), (2, 3)]
    for v in seen:
        np.testing.assert_array_equal(v.features, FEATURES[v.index])
        assert v.boxes.shape == (len(v.features), 7)
    with pytest.raises(StoreError, match="no view 'nope'"):
        next(store.iter_videos("nope"))


def test_an_atomic_file_appears_whole_or_not_at_all(tmp_path):
    with atomic_file(tmp_path / "f.bin") as partial:
        partial.write_bytes(b"whole")
        assert not (tmp_path / "f.bin").exists()
    assert (tmp_path / "f.bin").read_bytes() == b"whole"
    with pytest.raises(OSError), atomic_file(tmp_path / "g.bin") as partial:
        partial.write_bytes(b"half")
        raise OSError("No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


@pytest.mark.slow
def test_an_hdf5_export_killed_midway_leaves_no_file(tmp_path, monkeypatch):
    """Before, the file was written under its own name: a kill (not an OSError) left half of it there, and
    the next export refused to overwrite it."""
    from vssl.features_store import export_hdf5, hdf5

    store = make_store(tmp_path / "s")
    copy = hdf5._copy_to_h5

    def killed(node, out):
        copy(node["videos"], out.create_group("videos"))  # part of the file is written
        raise KeyboardInterrupt

    monkeypatch.setattr(hdf5, "_copy_to_h5", killed)
    with pytest.raises(KeyboardInterrupt):
        export_hdf5(store, tmp_path / "s.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    monkeypatch.setattr(hdf5, "_copy_to_h5", copy)
    assert export_hdf5(store, tmp_path / "s.h5").is_file()  # the same command, again
