"""A clip's feature has a shape: a view may hold ``[T', D]`` (a token grid, say) per clip instead of one
``D``-wide vector, in either layout, and every reader, check and export carries it. A clip of one vector
is ``clip_shape == (D,)``, stored exactly as before clips had a shape."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vssl.errors import StoreError
from vssl.features_store import (BackboneSpec, FeatureStore, FixedView, RaggedView, RowGroup, VideoEntry, View,
                                 export_hdf5, export_npy, import_hdf5, store_summary, verify_store)

D, T = 4, 3  # width of a token, tokens per clip
BACKBONE = BackboneSpec(name="tiny", embed_dim=D, frames=4, stride=2, size=32, mean=(0.5,) * 3, std=(0.2,) * 3)
BOX = np.array([0, 0, 0, 1, 1, 1, 0], np.float32)
COUNTS = [2, 1, 3, 2, 1]


def grid(i: int, k: int) -> np.ndarray:
    """Video i's ``[k, T, D]`` clips: every value distinct, so a misplaced token shows."""
    return (i * 100 + np.arange(k * T * D).reshape(k, T, D)).astype(np.float32)


def make_store(path) -> FeatureStore:
    videos = [VideoEntry(f"a/v{i}.mp4", i % 2, "train") for i in range(len(COUNTS))]
    store = FeatureStore.create(path, BACKBONE, videos, ["x", "y"], chunk_videos=2)
    store.create_view("fixed", 2, {"sampler": "uniform"}, dtype="float32", clip_shape=(T, D))
    store.create_view("ragged", None, {"sampler": "dense", "seconds": 1.0}, dtype="float32", clip_shape=(T, D))
    for start, stop in store.chunk_ranges():
        idx = list(range(start, stop))
        store.write_videos(idx, {"fixed": ([grid(i, 2) for i in idx], [np.tile(BOX, (2, 1))] * len(idx)),
                                 "ragged": ([grid(i, COUNTS[i]) for i in idx],
                                            [np.tile(BOX, (COUNTS[i], 1)) for i in idx])},
                           num_frames=[30] * len(idx), fps=[25.0] * len(idx), errors=[None] * len(idx))
    return store


@pytest.mark.slow
def test_both_layouts_read_back_each_clips_shape(tmp_path):
    store = make_store(tmp_path / "s")
    for name, counts in (("fixed", [2] * 5), ("ragged", COUNTS)):
        view = store.view(name)
        assert view.clip_shape == (T, D) and view.dim == D
        rows = view.read(np.array([3, 0, 2]))
        assert rows.features.shape == (3, max(counts[i] for i in (3, 0, 2)), T, D)
        assert rows.counts.tolist() == [counts[3], counts[0], counts[2]]
        for j, i in enumerate((3, 0, 2)):
            np.testing.assert_array_equal(rows.features[j, :counts[i]], grid(i, counts[i]))
        flat, _, offsets = rows.flat()
        np.testing.assert_array_equal(flat, np.concatenate([grid(i, counts[i]) for i in (3, 0, 2)]))
        assert offsets.tolist() == np.cumsum([0, counts[3], counts[0], counts[2]]).tolist()
    assert verify_store(store) == []
    groups = store_summary(store)["groups"]
    assert groups["views/fixed"]["clip_shape"] == [T, D] and groups["views/ragged"]["clip_shape"] == [T, D]


def test_a_view_of_one_vector_per_clip_is_stored_as_before(tmp_path):
    store = FeatureStore.create(tmp_path / "s", BACKBONE, [VideoEntry("v.mp4", 0, "train")], ["x"])
    fixed = store.create_view("u", 2, {"sampler": "uniform"})
    ragged = store.create_view("d", None, {"sampler": "dense"})
    assert fixed.clip_shape == ragged.clip_shape == (D,) and fixed.dim == ragged.dim == D
    assert store.root["views/u/features"].shape == (1, 2, D)
    assert "clip_shape" not in store.root["views/d"].attrs and store.root["views/d"].attrs["dim"] == D
    rows = store.create_ragged_group("aggregates/run/d", 5)  # a width, as callers have always given it
    assert rows.clip_shape == (5,) and store.ragged_group("aggregates/run/d").dim == 5


def test_a_view_is_one_interface_over_two_layouts(tmp_path):
    store = make_store(tmp_path / "s")
    assert isinstance(store.view("fixed"), FixedView) and isinstance(store.view("ragged"), RaggedView)
    for name in ("fixed", "ragged"):
        assert isinstance(store.view(name), View) and not isinstance(store.view(name), RowGroup)
    with pytest.raises(TypeError):
        View("v", store.root["views/fixed"], store.path, store.chunk_videos)  # an interface, not a layout


@pytest.mark.slow
def test_verify_finds_a_non_finite_token_in_a_ragged_view(tmp_path):
    store = make_store(tmp_path / "s")
    bad = grid(2, COUNTS[2])
    bad[1, 2, 3] = np.nan
    store.write_videos([2], {"ragged": ([bad], [np.tile(BOX, (COUNTS[2], 1))]),
                             "fixed": ([grid(2, 2)], [np.tile(BOX, (2, 1))])},
                       num_frames=[30], fps=[25.0], errors=[None])
    assert verify_store(store) == ["views/ragged/features: NaN/inf in done rows [2]"]


@pytest.mark.slow
def test_requested_shapes_are_checked(tmp_path):
    store = make_store(tmp_path / "s")
    with pytest.raises(StoreError, match=r"width 5 must be the backbone's width 4"):
        store.create_view("wide", 2, {"sampler": "uniform"}, clip_shape=(D + 1,))
    with pytest.raises(StoreError, match=r"exists with K=2, clip shape \(3, 4\).*requested K=2, D=4"):
        store.create_view("fixed", 2, {"sampler": "uniform"}, dtype="float32")
    with pytest.raises(ValueError, match=r"do not match \[k, 3, 4\]"):
        store.write_videos([0], {"ragged": ([np.zeros((2, D), np.float32)], [np.tile(BOX, (2, 1))])},
                           num_frames=[30], fps=[25.0], errors=[None])


@pytest.mark.slow
def test_exports_carry_the_clip_shape(tmp_path):
    store = make_store(tmp_path / "s")
    export_npy(store, tmp_path / "npy", "ragged")
    for i, k in enumerate(COUNTS):
        np.testing.assert_array_equal(np.load(tmp_path / "npy" / "a" / f"v{i}.npy"), grid(i, k))
    export_hdf5(store, tmp_path / "s.h5")
    back = import_hdf5(tmp_path / "s.h5", tmp_path / "back")
    for name in ("fixed", "ragged"):
        assert back.view(name).clip_shape == (T, D)
        a, b = store.view(name).read(np.arange(5)), back.view(name).read(np.arange(5))
        np.testing.assert_array_equal(a.features, b.features)
    assert json.loads(json.dumps(store_summary(back)["groups"]["views/ragged"]["clip_shape"])) == [T, D]


def test_chunks_are_sized_by_bytes(tmp_path):
    """~4 MiB of rows per chunk: K=16 pooled float16 vectors as before (D=768: 24 KiB a video, 128 videos;
    D=8: 256, the most), and a token grid per clip (16 x 1568 x 768 float16, ~37 MiB a video) one video a
    chunk instead of the 16 (~600 MB) the old count-based rule gave."""
    from vssl.features_store import chunk_videos_for, default_chunk_videos, video_bytes

    assert [default_chunk_videos(d) for d in (8, 768, 1024, 2048, 4096)] == [256, 128, 128, 64, 32]
    assert video_bytes(16, (1568, 768)) == 16 * 1568 * 768 * 2
    assert chunk_videos_for(video_bytes(16, (1568, 768))) == 1
    assert chunk_videos_for(video_bytes(16, (8, 768))) == 16 and chunk_videos_for(3 << 20) == 1
    assert chunk_videos_for(1 << 20) == 4  # 4 videos of 1 MiB fill a chunk
    videos = [VideoEntry(f"v{i}.mp4", 0, "train") for i in range(3)]
    grid_store = FeatureStore.create(tmp_path / "g", BACKBONE, videos, ["x"], video_bytes=1 << 20)
    assert grid_store.chunk_videos == 4 and FeatureStore.open(tmp_path / "g").chunk_videos == 4
    assert FeatureStore.create(tmp_path / "d", BACKBONE, videos, ["x"]).chunk_videos == default_chunk_videos(D)


@pytest.mark.slow
def test_info_shows_the_clip_shape(tmp_path, capsys):
    from vssl.cli import main

    make_store(tmp_path / "s")
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        main(["store", "info", str(tmp_path / "s")])
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in capsys.readouterr().out.splitlines()
            if "views/" in line]
    assert ended.value.code == 0 and [row[:3] for row in rows] == [["views/fixed", "2", "3x4"],
                                                                  ["views/ragged", "ragged", "3x4"]], rows


def test_reading_the_clips_of_no_videos_keeps_the_clips_shape(tmp_path):
    """``read_clips`` of an empty selection (an empty split) has the shape of any other read."""
    from vssl.features_store.ragged import read_clips

    store = make_store(tmp_path / "s")
    for name in ("fixed", "ragged"):
        view = store.view(name)
        some, some_boxes = read_clips(view, np.array([1, 0]))
        none, no_boxes = read_clips(view, np.array([], np.int64))
        assert some.flat.shape[1:] == none.flat.shape[1:] == (T, D) and none.flat.dtype == some.flat.dtype
        assert no_boxes.flat.shape == (0, 7) and len(none) == 0 and none.counts.size == 0
