"""Gallery vectors, faiss indexes beside a store and ``vssl index``.

Vectors are checked against the rule written out in numpy (float64, video by video); indexes
against exact search.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.probe_helpers import VIEW, tiny_store_and_run
from vssl.errors import VsslError
from vssl.features_store import FeatureStore
from vssl.features_store.schema import BackboneSpec, VideoEntry
from vssl.features_store.synthetic import make_synthetic_store, uniform_boxes
from vssl.search.exact import exact_search
from vssl.search.index import build_index, index_kind, search_index
from vssl.search.vectors import clip_gallery, clip_vectors, query_vector, video_gallery


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference_video_vector(clips: np.ndarray, set_token: np.ndarray | None = None) -> np.ndarray:
    """mean of the l2-normalised clips (each [C_i ⊕ SET] with a token), l2-normalised, in float64."""
    clips = clips.astype(np.float64).reshape(len(clips), -1, clips.shape[-1]).mean(axis=1)
    if set_token is not None:
        clips = np.concatenate([clips, np.repeat(set_token[None].astype(np.float64), len(clips), 0)], axis=1)
    return l2(l2(clips).mean(axis=0))


def failed_video(path, row: int) -> None:
    """Make store row ``row`` a failed video (not usable), as a broken decode leaves it."""
    store = FeatureStore.open(path, mode="r+")
    view = store.view(store.view_names()[0])
    got = view.read(np.array([row]))
    store.write_videos([row], {view.name: (got.features, got.boxes)}, num_frames=[64], fps=[25.0],
                       errors=["broken"])


@pytest.fixture
def ragged_store(tmp_path):
    """12 videos of 1..5 clips (8-d), row 4 failed: a ragged view with an unusable video."""
    rng = np.random.default_rng(3)
    feats = [rng.standard_normal((1 + i % 5, 8)).astype(np.float32) for i in range(12)]
    make_synthetic_store(tmp_path / "s", feats, [i % 2 for i in range(12)], ["train"] * 8 + ["test"] * 4,
                         view="dense", chunk_videos=4, dtype="float32")
    failed_video(tmp_path / "s", 4)
    return tmp_path / "s", feats


def test_video_gallery_is_the_dino_rule_over_usable_videos(ragged_store):
    path, feats = ragged_store
    gallery = video_gallery(FeatureStore.open(path), "dense")
    usable = [i for i in range(12) if i != 4]
    np.testing.assert_array_equal(gallery.rows, usable)
    assert gallery.vectors.dtype == np.float32 and gallery.clips is None and gallery.features == "backbone"
    ref = np.stack([reference_video_vector(feats[i]) for i in usable])
    np.testing.assert_allclose(gallery.vectors, ref, atol=1e-6)


def test_clip_gallery_holds_each_clip_with_its_start_second(ragged_store):
    path, feats = ragged_store
    gallery = clip_gallery(FeatureStore.open(path), "dense")
    usable = [i for i in range(12) if i != 4]
    np.testing.assert_array_equal(gallery.rows, np.repeat(usable, [len(feats[i]) for i in usable]))
    np.testing.assert_array_equal(gallery.clips, np.concatenate([np.arange(len(feats[i])) for i in usable]))
    np.testing.assert_allclose(gallery.vectors, l2(np.concatenate([feats[i] for i in usable]).astype(np.float64)),
                               atol=1e-6)
    # uniform boxes: clip j of k starts at j / k of the video; 64 frames at 25 fps last 2.56 s
    starts = np.concatenate([np.arange(len(feats[i])) / len(feats[i]) * 64 / 25 for i in usable])
    np.testing.assert_allclose(gallery.starts, starts, rtol=1e-6)


def test_a_store_videos_query_vector_is_its_gallery_row_bit_for_bit(ragged_store):
    path, _ = ragged_store
    store = FeatureStore.open(path)
    gallery, clips = video_gallery(store, "dense"), clip_gallery(store, "dense")
    view = store.view("dense")
    for pos, row in enumerate(gallery.rows):
        got = view.read(np.array([row]))
        stored = got.features[0, :got.counts[0]]
        assert np.array_equal(query_vector(stored), gallery.vectors[pos])
        assert np.array_equal(clip_vectors(stored), clips.vectors[clips.rows == row])


def test_token_view_clips_are_the_mean_of_their_tokens(tmp_path):
    rng = np.random.default_rng(4)
    tokens = rng.standard_normal((6, 3, 4, 8)).astype(np.float32)   # 6 videos, 3 clips, 4 tokens of 8-d
    backbone = BackboneSpec(name="synthetic", embed_dim=8, frames=16, stride=4, size=224, mean=(0.5,) * 3,
                            std=(0.5,) * 3, family="synthetic")
    store = FeatureStore.create(tmp_path / "t", backbone, [VideoEntry(f"v{i}.mp4", 0, "train") for i in range(6)],
                                ["a"])
    store.create_view("tok", 3, {"sampler": "synthetic"}, dtype="float32", clip_shape=(4, 8))
    store.write_videos(np.arange(6), {"tok": (tokens, uniform_boxes(6, 3))}, num_frames=[64] * 6, fps=[25.0] * 6,
                       errors=[None] * 6)
    gallery = video_gallery(FeatureStore.open(tmp_path / "t"), "tok")
    np.testing.assert_allclose(gallery.vectors, np.stack([reference_video_vector(t) for t in tokens]), atol=1e-6)
    assert np.array_equal(query_vector(tokens[2]), gallery.vectors[2])


def test_scale_gallery_is_the_mean_of_normalised_clip_set(tmp_path):
    store_path, run = tiny_store_and_run(tmp_path)
    store = FeatureStore.open(store_path)
    gallery = video_gallery(store, VIEW, scale_run=run, quiet=True)
    store = FeatureStore.open(store_path)            # the export added rows
    from vssl.probe.scale import ScaleFeatures

    scale = ScaleFeatures.open(store, run, VIEW, gallery.rows, quiet=True)
    tokens = scale.set_token(gallery.rows)
    clips = store.view(VIEW).read(gallery.rows).features
    ref = np.stack([reference_video_vector(c, t) for c, t in zip(clips, tokens)])
    np.testing.assert_allclose(gallery.vectors, ref, atol=1e-6)
    assert gallery.features == "scale" and gallery.checkpoint_sha256 == scale.meta["checkpoint_sha256"]
    assert np.array_equal(query_vector(clips[5], tokens[5]), gallery.vectors[5])
    per_clip = clip_gallery(store, VIEW, scale_run=run, quiet=True)
    joined = np.concatenate([clips[5].astype(np.float64), np.repeat(tokens[5:6].astype(np.float64), 4, 0)], 1)
    np.testing.assert_allclose(per_clip.vectors[per_clip.rows == 5], l2(joined), atol=1e-6)
    assert np.array_equal(clip_vectors(clips[5], tokens[5]), per_clip.vectors[per_clip.rows == 5])


def test_a_view_without_usable_videos_is_one_clear_error(tmp_path):
    make_synthetic_store(tmp_path / "s", np.ones((2, 2, 8), np.float32), [0, 0], ["train"] * 2, view="v")
    failed_video(tmp_path / "s", 0)
    failed_video(tmp_path / "s", 1)
    with pytest.raises(VsslError, match="no usable videos"):
        video_gallery(FeatureStore.open(tmp_path / "s"), "v")


# ---------------------------------------------------------------- faiss indexes


def clustered(n: int, d: int, centres: int, seed: int = 0) -> np.ndarray:
    """l2-normalised points around ``centres`` unit Gaussian centres, noise as large as a centre."""
    rng = np.random.default_rng(seed)
    c = l2(rng.standard_normal((centres, d)))
    x = c[rng.integers(0, centres, n)] + rng.standard_normal((n, d)) / np.sqrt(d)
    return l2(x).astype(np.float32)


def test_flat_index_answers_exactly_as_exact_search_ties_included():
    x = clustered(600, 16, 12)
    x[300:400] = x[:100]                             # duplicates: equal similarities at every cut-off
    index = build_index(x, "flat")
    assert index_kind(index) == "flat"
    for k in (1, 7, 50, 10_000):
        sims, rows = search_index(index, x[::13], k)
        ref_sims, ref_rows = exact_search(x, x[::13], k)
        np.testing.assert_array_equal(rows, ref_rows)
        np.testing.assert_array_equal(sims, ref_sims)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_exact_neighbours(kind):
    both = clustered(20_200, 32, 200)
    x, queries = both[:20_000], both[20_000:]                     # queries from the same clusters
    index = build_index(x, kind)
    assert index_kind(index) == kind
    sims, rows = search_index(index, queries, 10)
    _, ref = exact_search(x, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, ref)])
    assert recall >= 0.95, recall
    assert (np.diff(sims, axis=1) <= 0).all()                     # best first
    np.testing.assert_allclose(sims, np.take_along_axis(queries @ x.T, rows, 1), atol=1e-5)
