"""The ragged row layout: a variable number of clips per video behind the same View interface."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from vssl.features_store import (BackboneSpec, FeatureStore, VideoEntry, export_hdf5, import_hdf5,
                                 store_summary, verify_store)
from vssl.features_store.rows import RowGroup

D = 5
BACKBONE = BackboneSpec(name="tiny", embed_dim=D, frames=8, stride=2, size=64,
                        mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))


def clips_of(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Video i has (i % 5) + 1 clips; values identify (video, clip) so misplacement shows."""
    k = i % 5 + 1
    feats = (i * 100 + np.arange(k)[:, None] + np.arange(D)[None, :] / 10).astype(np.float32)
    t0 = np.arange(k, dtype=np.float32) / (k + 1)
    boxes = np.stack([t0, 0 * t0, 0 * t0, t0 + 1 / (k + 1), 0 * t0 + 1, 0 * t0 + 1, 0 * t0], axis=1)
    return feats, boxes.astype(np.float32)


def new_store(path, n: int = 12, chunk: int = 4) -> FeatureStore:
    videos = [VideoEntry(f"v/{i}.mp4", label=i % 2, split="train") for i in range(n)]
    store = FeatureStore.create(path, BACKBONE, videos, classes=["a", "b"], chunk_videos=chunk)
    store.create_view("dense", num_clips=None, spec={"sampler": "test-dense"}, dtype="float32")
    return store


def write_chunk(store: FeatureStore, start: int, stop: int, failed: tuple[int, ...] = ()) -> None:
    idx = list(range(start, stop))
    pairs = [clips_of(i) for i in idx]
    store.write_videos(idx, {"dense": ([f for f, _ in pairs], [b for _, b in pairs])}, num_frames=[30] * len(idx),
                       fps=[25.0] * len(idx), errors=["broken" if i in failed else None for i in idx])


def test_round_trip_padded_counts_mask_and_flat(tmp_path):
    store = new_store(tmp_path / "s")
    for start, stop in store.chunk_ranges():
        write_chunk(store, start, stop, failed=(6,))
    view = FeatureStore.open(tmp_path / "s").view("dense")
    assert view.layout == "ragged" and view.num_clips is None and view.dim == D
    order = np.array([7, 0, 11, 6, 3, 7])
    rows = view.read(order)
    expected_counts = [0 if i == 6 else i % 5 + 1 for i in order]
    assert rows.counts.tolist() == expected_counts
    assert rows.features.shape == (6, max(expected_counts), D)
    for j, i in enumerate(order):
        k = expected_counts[j]
        if k:
            np.testing.assert_array_equal(rows.features[j, :k], clips_of(i)[0])
            np.testing.assert_array_equal(rows.boxes[j, :k], clips_of(i)[1])
        assert not rows.features[j, k:].any() and not rows.boxes[j, k:].any()  # padding is zeros
        assert rows.mask[j].tolist() == [c < k for c in range(rows.features.shape[1])]
    f, b, offsets = rows.flat()
    assert offsets.tolist() == np.concatenate(([0], np.cumsum(expected_counts))).tolist()
    np.testing.assert_array_equal(f[offsets[2]:offsets[3]], clips_of(11)[0])
    feats, boxes = view.read([3], pad_to=9)  # unpacks like the fixed layout; padded to a width asked for
    assert feats.shape == (1, 9, D) and boxes.shape == (1, 9, 7)
    with pytest.raises(ValueError, match="pad_to"):
        view.read([4], pad_to=2)
    assert view.done()[6] == False and view.done().sum() == 11  # noqa: E712 - the failed video stays pending
    assert store.usable("dense").sum() == 11
    assert verify_store(FeatureStore.open(tmp_path / "s")) == []


def test_rewriting_part_of_a_chunk_keeps_the_others_and_drops_the_old_generation(tmp_path):
    store = new_store(tmp_path / "s")
    write_chunk(store, 0, 4, failed=(2,))
    view = store.view("dense")
    chunk_dir = tmp_path / "s" / "views" / "dense" / "chunks" / "0"
    first = {p.name for p in chunk_dir.iterdir() if p.is_dir()}
    f, b = clips_of(2)
    store.write_videos([2], {"dense": ([f], [b])}, num_frames=[30], fps=[25.0], errors=[None])  # --retry-failed
    assert view.done()[:4].all()
    for i in range(4):
        np.testing.assert_array_equal(view.read([i]).features[0, :i % 5 + 1], clips_of(i)[0])
    generations = {p.name for p in chunk_dir.iterdir() if p.is_dir()}
    assert len(generations) == 1 and generations.isdisjoint(first)


@pytest.mark.slow
def test_a_write_killed_before_or_after_the_switch_leaves_a_consistent_store(tmp_path, monkeypatch):
    store = new_store(tmp_path / "s")
    write_chunk(store, 0, 4)
    before = store.view("dense").read(np.arange(4))

    # killed after the new rows are written, before the chunk's counts switch to them
    import zarr.core.attributes as attributes

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(attributes.Attributes, "update", die)
        with pytest.raises(KeyboardInterrupt):
            store.write_videos([1], {"dense": ([np.ones((7, D))], [clips_of(0)[1].repeat(7, 0)[:7]])},
                               num_frames=[30], fps=[25.0], errors=[None])
    again = FeatureStore.open(tmp_path / "s", "r+")
    after = again.view("dense").read(np.arange(4))
    np.testing.assert_array_equal(after.features, before.features)
    assert after.counts.tolist() == before.counts.tolist() and verify_store(again) == []

    # killed after the switch, before the done flags: the rows are new, the video is not done yet
    write_chunk(again, 4, 8)
    with monkeypatch.context() as m:
        m.setattr(RowGroup, "write", die)
        with pytest.raises(KeyboardInterrupt):
            write_chunk(again, 8, 12)
    last = FeatureStore.open(tmp_path / "s", "r+")
    assert not last.view("dense").done()[8:].any() and last.view("dense").done()[:8].all()
    assert verify_store(last) == []
    write_chunk(last, 8, 12)  # the resumed run
    assert verify_store(last) == [] and last.view("dense").done().all()


@pytest.mark.slow
def test_verify_finds_missing_rows_empty_videos_and_nan(tmp_path):
    store = new_store(tmp_path / "s")
    write_chunk(store, 0, 4)
    bad = clips_of(5)[0].copy()
    bad[0, 0] = np.nan
    store.write_videos([5], {"dense": ([bad], [clips_of(5)[1]])}, num_frames=[30], fps=[25.0], errors=[None])
    store.write_videos([9], {"dense": ([np.zeros((0, D))], [np.zeros((0, 7))])}, num_frames=[30], fps=[25.0],
                       errors=[None])
    problems = verify_store(store)
    assert any("NaN/inf in done rows [5]" in p for p in problems)
    assert any("done videos without clips [9]" in p for p in problems)
    chunk_dir = tmp_path / "s" / "views" / "dense" / "chunks" / "0"
    gen = next(p for p in chunk_dir.iterdir() if p.is_dir())
    import shutil

    shutil.rmtree(gen / "features")
    assert any("never written" in p for p in verify_store(FeatureStore.open(tmp_path / "s")))


@pytest.mark.slow
def test_info_and_hdf5_round_trip(tmp_path):
    store = new_store(tmp_path / "s", n=8, chunk=4)
    for start, stop in store.chunk_ranges():
        write_chunk(store, start, stop, failed=(1,))
    info = store_summary(store)["groups"]["views/dense"]
    assert info["layout"] == "ragged" and info["num_clips"] is None
    assert info["clips"] == sum(i % 5 + 1 for i in range(8) if i != 1) and info["done"] == 7
    export_hdf5(store, tmp_path / "s.h5")
    back = import_hdf5(tmp_path / "s.h5", tmp_path / "t")
    a, b = store.view("dense").read(np.arange(8)), back.view("dense").read(np.arange(8))
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert verify_store(back) == [] and back.view("dense").layout == "ragged"


def test_fixed_views_written_before_layouts_existed_still_open_as_fixed(tmp_path):
    store = new_store(tmp_path / "s")
    store.create_view("old", num_clips=3, spec={"sampler": "uniform"})
    group = zarr.open_group(str(tmp_path / "s" / "views" / "old"), mode="r")
    assert "layout" not in group.attrs  # what every store of vssl 0.1 holds
    view = FeatureStore.open(tmp_path / "s").view("old")
    assert view.layout == "fixed" and view.counts([0, 1]).tolist() == [3, 3]
    rows = view.read([0, 1])
    assert rows.mask.all() and rows.features.shape == (2, 3, D)
    with pytest.raises(Exception, match="exists with K=variable"):
        store.create_view("dense", num_clips=4, spec={"sampler": "test-dense"}, dtype="float32")


@pytest.mark.slow
def test_the_stages_read_a_ragged_view_from_the_command_line(tmp_path, capsys):
    """Stage two trains on it, exports it, and the probes read it; only --train-view stays fixed-K."""
    from vssl.cli import main

    store = new_store(tmp_path / "s")
    for start, stop in store.chunk_ranges():
        write_chunk(store, start, stop)
    run = tmp_path / "run"
    tiny = ["--width", "16", "--heads", "2", "--layers", "1", "--pred-hidden", "16", "--target-hidden", "16",
            "--proj-dim", "8", "--epochs", "1", "--batch-size", "4", "--set-size", "2", "--device", "cpu", "--precision", "fp32"]
    for args in (["aggregate", "--view", "dense", "--out", str(run), *tiny],
                 ["aggregate", "--view", "dense", "--from", str(run), "--export"],
                 ["probe", "--view", "dense", "--train-split", "train", "--test-split", "train", "--knn",
                  "--device", "cpu", "--scale", str(run)]):
        with pytest.raises(SystemExit) as done:
            main([args[0], str(tmp_path / "s"), *args[1:], "--quiet"])
        assert done.value.code in (0, None), capsys.readouterr().err
    assert FeatureStore.open(tmp_path / "s").row_group("aggregates/run/dense").done().all()
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["probe", str(tmp_path / "s"), "--view", "dense", "--train-split", "train", "--test-split", "train",
              "--linear", "--train-view", "dense", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and "variable number of clips" in err and len(err.splitlines()) == 1


def test_a_read_racing_a_writer_reads_again_instead_of_returning_zeros(tmp_path, monkeypatch):
    store = new_store(tmp_path / "s")
    write_chunk(store, 0, 4)
    reader = FeatureStore.open(tmp_path / "s").view("dense")
    writer = store.view("dense")
    original, calls = type(reader)._read_once, []

    def racing(self, idx, pad_to):  # the first read happens while another process switches chunk 0
        rows = original(self, idx, pad_to)
        if self is reader:
            calls.append(1)
            if len(calls) == 1:
                writer.write_clips([1], [np.full((2, D), 7.0, np.float32)], [clips_of(1)[1][:1].repeat(2, 0)])
        return rows

    monkeypatch.setattr(type(reader), "_read_once", racing)
    rows = reader.read([1])
    assert len(calls) == 2 and rows.counts.tolist() == [2] and (rows.features[0] == 7).all()
