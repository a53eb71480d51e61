"""Gallery vectors, faiss indexes beside a store and ``vssl index``.

Vectors are checked against the rule written out in numpy (float64, video by video); indexes
against exact search.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.probe_helpers import VIEW, run_cli, tiny_store_and_run
from tests.search.test_exact import numpy_ranking
from vssl.errors import VsslError
from vssl.features_store import FeatureStore
from vssl.features_store.schema import BackboneSpec, VideoEntry
from vssl.features_store.synthetic import make_synthetic_store, uniform_boxes
from vssl.search.exact import exact_search
from vssl.search.index import (GallerySpec, build_index, index_dir, index_kind, matching_index, search_index,
                               write_store_index)
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


@pytest.fixture(scope="module")
def scale_store(tmp_path_factory):
    """A tiny labelled store and a SCALE run trained on it (shared: training takes seconds)."""
    return tiny_store_and_run(tmp_path_factory.mktemp("scale"))


def test_scale_gallery_is_the_mean_of_normalised_clip_set(scale_store):
    store_path, run = scale_store
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


def test_a_flat_index_ranks_as_numpy_ties_included():
    x = clustered(600, 16, 12)
    x[300:400] = x[:100]                             # duplicates: equal similarities at every cut-off
    index = build_index(x, "flat")
    assert index_kind(index) == "flat"
    for k in (1, 7, 50, 10_000):
        sims, rows = search_index(index, x[::13], k)
        ref_sims, ref_rows = numpy_ranking(x, x[::13], k)
        np.testing.assert_array_equal(rows, ref_rows)
        np.testing.assert_allclose(sims, ref_sims, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_exact_neighbours(kind):
    both = clustered(10_200, 32, 100)
    x, queries = both[:10_000], both[10_000:]                     # queries from the same clusters
    x[9_000:9_020] = queries[:20]                                 # found twice: a tie at similarity 1
    x[100:120] = queries[:20]
    index = build_index(x, kind)
    assert index_kind(index) == kind
    sims, rows = search_index(index, queries, 10)
    _, ref = exact_search(x, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, ref)])
    assert recall >= 0.95, recall
    assert (np.diff(sims, axis=1) <= 0).all()                     # best first
    np.testing.assert_allclose(sims, np.take_along_axis(queries @ x.T, rows, 1), atol=1e-5)
    np.testing.assert_array_equal(rows[:20, :2], np.stack([np.arange(100, 120), np.arange(9_000, 9_020)], 1))


# ---------------------------------------------------------------- an index beside a store


def stored_clips(path, row: int) -> np.ndarray:
    got = FeatureStore.open(path).view("dense").read(np.array([row]))
    return got.features[0, :got.counts[0]]


def test_an_index_records_what_it_holds_and_answers_as_the_gallery(ragged_store):
    path, feats = ragged_store
    store = FeatureStore.open(path)
    spec = GallerySpec("dense", clips=True)
    assert matching_index(store, spec) is None                   # none built: exact search over the gallery
    write_store_index(store, spec, "hnsw")
    folder = index_dir(path, spec)
    assert folder.parent.name == "s.indexes" and folder.parent.parent == path.parent   # beside the store
    record = json.loads((folder / "record.json").read_text())
    usable = [i for i in range(12) if i != 4]
    assert (record["store_id"], record["view"], record["features"], record["clips"], record["kind"]) == \
        (store.store_id, "dense", "backbone", True, "hnsw")
    assert record["params"] == {"M": 32, "efConstruction": 80, "efSearch": 128}
    assert record["count"] == sum(len(feats[i]) for i in usable) and record["videos"] == len(usable)
    assert record["vssl_version"] and len(record["fingerprint"]) == 64 and record["checkpoint_sha256"] is None
    loaded = matching_index(FeatureStore.open(path), spec)
    gallery = clip_gallery(store, "dense")
    np.testing.assert_array_equal(loaded.rows, gallery.rows)
    np.testing.assert_array_equal(loaded.clips, gallery.clips)
    np.testing.assert_array_equal(loaded.starts, gallery.starts)
    query = clip_vectors(stored_clips(path, 7))
    _, positions = loaded.search(query, 5)
    np.testing.assert_array_equal(positions, exact_search(gallery.vectors, query, 5)[1])


def test_a_flat_index_searches_exactly_the_gallery(ragged_store):
    path, _ = ragged_store
    store = FeatureStore.open(path)
    write_store_index(store, GallerySpec("dense"), "flat")
    loaded = matching_index(store, GallerySpec("dense"))
    gallery = video_gallery(store, "dense")
    got = loaded.search(gallery.vectors, 11)
    ref = exact_search(gallery.vectors, gallery.vectors, 11)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[0], ref[0])
    assert matching_index(store, GallerySpec("dense", clips=True)) is None   # another gallery: not this index


def rewrite_video(path, row: int, features: np.ndarray, error: str | None = None) -> None:
    """Extract store row ``row`` again with ``features`` (``error``: it fails this time)."""
    store = FeatureStore.open(path, mode="r+")
    boxes = uniform_boxes(1, len(features))
    store.write_videos([row], {"dense": ([features], [boxes[0]])}, num_frames=[64], fps=[25.0], errors=[error])


@pytest.mark.parametrize("change", ["video added", "video redone", "video failed", "store remade"])
def test_a_stale_index_is_refused_until_vssl_index_rebuilds_it(ragged_store, change):
    path, feats = ragged_store
    spec = GallerySpec("dense")
    write_store_index(FeatureStore.open(path), spec, "ivf")
    assert matching_index(FeatureStore.open(path), spec) is not None   # reading the store changes nothing
    if change == "video added":                      # the failed row 4 extracted after all
        rewrite_video(path, 4, feats[4])
    elif change == "video redone":                   # the same rows usable, one with new features
        rewrite_video(path, 7, feats[7][::-1].copy())
    elif change == "video failed":
        rewrite_video(path, 7, feats[7], error="broken")
    else:
        import shutil
        shutil.rmtree(path)
        make_synthetic_store(path, feats, [i % 2 for i in range(12)], ["train"] * 8 + ["test"] * 4,
                             view="dense", chunk_videos=4, dtype="float32")
        failed_video(path, 4)
    why = "built for another store" if change == "store remade" else "usable videos of view 'dense' or their files"
    with pytest.raises(VsslError, match=rf"is stale: .*{why}.*; rebuild it with `vssl index .* --view dense --kind ivf`"):
        matching_index(FeatureStore.open(path), spec)
    write_store_index(FeatureStore.open(path), spec, "ivf")
    rebuilt = matching_index(FeatureStore.open(path), spec)
    np.testing.assert_array_equal(rebuilt.rows, video_gallery(FeatureStore.open(path), "dense").rows)


def test_an_index_of_another_checkpoint_of_the_run_is_refused(scale_store):
    store_path, run = scale_store
    spec = GallerySpec(VIEW, scale_run=run)
    built = write_store_index(FeatureStore.open(store_path), spec, "flat", quiet=True)
    assert built.record["features"] == "scale" and built.record["checkpoint_sha256"]
    loaded = matching_index(FeatureStore.open(store_path), spec)
    gallery = video_gallery(FeatureStore.open(store_path), VIEW, scale_run=run, quiet=True)
    np.testing.assert_array_equal(loaded.search(gallery.vectors[:3], 4)[1],
                                  exact_search(gallery.vectors, gallery.vectors[:3], 4)[1])
    record_file = built.path / "record.json"          # as if the run had been trained again since
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "checkpoint_sha256": "0" * 64}))
    with pytest.raises(VsslError, match=f"another checkpoint.*--scale {run}"):
        matching_index(FeatureStore.open(store_path), spec)


# ---------------------------------------------------------------- vssl index


def test_cli_builds_an_index_and_reports_it(ragged_store, vssl_cli):
    path, _ = ragged_store
    done = vssl_cli("index", path, "--view", "dense", "--kind", "ivf", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["kind"], summary["count"], summary["clips"], summary["features"]) == ("ivf", 11, False, "backbone")
    assert summary["path"] == str(index_dir(path, GallerySpec("dense")))
    assert matching_index(FeatureStore.open(path), GallerySpec("dense")).kind == "ivf"


def test_cli_summary_line_of_a_clip_index(ragged_store, capsys):
    path, _ = ragged_store
    code, stdout, _ = run_cli(capsys, "index", path, "--view", "dense", "--clips")
    assert code == 0
    assert stdout.startswith("indexed 28 clips of 11 videos of view 'dense' (backbone features) as flat: ")
    assert matching_index(FeatureStore.open(path), GallerySpec("dense", clips=True)).kind == "flat"


@pytest.mark.parametrize("args, words", [
    (["--view", "nope"], "no view 'nope'"),
    (["--view", "dense", "--kind", "annoy"], "--kind 'annoy': choose one of flat, ivf, hnsw"),
    (["--view", "dense", "--features", "scale"], "--features scale needs the run: give --scale RUN"),
])
def test_cli_mistakes_are_one_line(ragged_store, capsys, args, words):
    path, _ = ragged_store
    code, _, stderr = run_cli(capsys, "index", path, *args)
    assert code == 2 and words in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (path.parent / "s.indexes").exists()


def test_a_video_redone_in_a_fixed_view_makes_its_index_stale(tmp_path):
    feats = np.random.default_rng(5).standard_normal((8, 3, 8)).astype(np.float32)
    make_synthetic_store(tmp_path / "f", feats, [0] * 8, ["train"] * 8, view="v", chunk_videos=4)
    write_store_index(FeatureStore.open(tmp_path / "f"), GallerySpec("v"), "flat")
    store = FeatureStore.open(tmp_path / "f", mode="r+")      # rows rewritten in place, same videos usable
    store.write_videos([2], {"v": (feats[2:3] * 2, uniform_boxes(1, 3))}, num_frames=[64], fps=[25.0], errors=[None])
    with pytest.raises(VsslError, match="or their files changed"):
        matching_index(FeatureStore.open(tmp_path / "f"), GallerySpec("v"))
