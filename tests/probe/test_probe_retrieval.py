"""`vssl probe --retrieval`: test videos query the training videos; R@k and mAP against an independent
numpy ranking (a stable argsort, ties included), multi-label, unmatched queries, the CLI, seeds,
SCALE rows and token views."""

import json

import numpy as np
import pytest

from vssl.features_store import FeatureStore, VideoEntry
from vssl.features_store.synthetic import make_synthetic_store, uniform_boxes
from vssl.probe.knn import KnnConfig
from vssl.probe.retrieval import RetrievalConfig
from vssl.probe.run import ProbeRequest, run_probes
from vssl.search.exact import exact_search

from tests.probe_helpers import VIEW, probe_warnings, run_cli, tiny_store_and_run

pytestmark = pytest.mark.usefixtures("one_thread")

N_TRAIN, N_TEST, K, D, C = 30, 14, 3, 6, 3


def l2(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _tied_clips(seed=0):
    """Clips of N_TRAIN + N_TEST videos of C classes in which exact ties decide ranks: training
    videos 1, 3, 5... repeat the previous one under another class (equal similarity to every query),
    and test videos 0-3 repeat training videos (similarity 1 to two gallery videos of two classes)."""
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_TEST
    y = rng.integers(0, C, n)
    x = (1.2 * rng.normal(size=(C, D))[y][:, None] + rng.normal(size=(n, K, D))).astype(np.float32)
    for j in range(1, 12, 2):
        x[j], y[j] = x[j - 1], (y[j - 1] + 1) % C
    for q, j in zip(range(4), (0, 2, 4, 6)):
        x[N_TRAIN + q], y[N_TRAIN + q] = x[j], y[j + 1]      # matches j and j + 1, of j + 1's class
    return x, y


def _store(path, x, y=None, videos=None, classes=None):
    splits = ["train"] * N_TRAIN + ["test"] * (len(x) - N_TRAIN)
    make_synthetic_store(path, x, np.zeros(len(x), int) if y is None else y, splits, view=VIEW, dtype="float32",
                         videos=videos, classes=classes, chunk_videos=16)
    return path


def _reference(x, relevant, ks, rule="dino"):
    """Retrieval written out in numpy: the rule's vectors (dino: mean of l2-normalised clips, l2;
    released: raw mean centred by the training mean, l2), cosine similarity, a stable argsort of the
    negated similarities (equal ones keep gallery order); per query the first relevant rank and
    AP = mean precision at each relevant rank."""
    x = x.astype(np.float64)
    if rule == "dino":
        v = l2(l2(x).mean(axis=1))
    else:
        v = x.mean(axis=1)
        v = l2(v - v[:N_TRAIN].mean(axis=0))
    tr, te = v[:N_TRAIN], v[N_TRAIN:]
    order = np.argsort(-(te @ tr.T), axis=1, kind="stable")
    recall = {k: [] for k in ks}
    aps, unmatched = [], 0
    for q in range(len(te)):
        rel = relevant[q][order[q]]
        if not rel.any():
            unmatched += 1
            continue
        for k in ks:
            recall[k].append(rel[:k].any())
        ranks = np.flatnonzero(rel) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return ({k: 100 * np.mean(h) for k, h in recall.items()}, 100 * np.mean(aps), order, unmatched)


def _request(store, **kw):
    return ProbeRequest(store=store, view=VIEW, quiet=True,
                        retrieval=RetrievalConfig(ks=(1, 2, 5, 10), device="cpu"), **kw)


def test_rows_equal_an_independent_numpy_ranking_ties_included(tmp_path):
    x, y = _tied_clips()
    report = run_probes(_request(_store(tmp_path / "s", x, y)))
    (row,) = report.retrieval
    assert report.results == []                                  # no class row computed or scored
    recall, m, order, unmatched = _reference(x, y[N_TRAIN:, None] == y[None, :N_TRAIN], (1, 2, 5, 10))
    assert unmatched == 0 and row.n_queries == N_TEST and row.n_gallery == N_TRAIN
    for k in (1, 2, 5, 10):
        assert row.recall[k] == pytest.approx(recall[k])
    assert row.mAP == pytest.approx(m)
    # the ties decide: a tied pair's first (earlier) video is of the other class
    assert recall[1] < 100
    np.testing.assert_array_equal(row.neighbours, order[:, :10])     # store rows: training rows are 0..29
    np.testing.assert_array_equal(report.test_indices, np.arange(N_TRAIN, N_TRAIN + N_TEST))
    assert row.ci["R@1"]["low"] <= row.recall[1] <= row.ci["R@1"]["high"]


def test_neighbours_are_exact_searchs(tmp_path):
    """The same vectors through vssl.search.exact give the same neighbours, tie for tie."""
    x, y = _tied_clips(1)
    report = run_probes(_request(_store(tmp_path / "s", x, y)))
    v = l2(l2(x).mean(axis=1)).astype(np.float32)
    _, rows = exact_search(v[:N_TRAIN], v[N_TRAIN:], 10, device="cpu")
    np.testing.assert_array_equal(report.retrieval[0].neighbours, rows)


def test_multi_label_a_shared_label_counts_and_an_unmatched_query_is_left_out(tmp_path):
    rng = np.random.default_rng(2)
    n = N_TRAIN + N_TEST
    hot = rng.random((n, 4)) < 0.4
    hot[:N_TRAIN, 3] = False                                   # class 3: no training video
    hot[~hot.any(axis=1), 0] = True
    hot[N_TRAIN] = [False, False, False, True]                 # a test video of class 3 alone: no match
    x = (hot @ (1.5 * rng.normal(size=(4, D))))[:, None] + rng.normal(size=(n, K, D))
    x = x.astype(np.float32)
    videos = [VideoEntry(f"v{i}.mp4", int(np.flatnonzero(hot[i])[0]), "train" if i < N_TRAIN else "test",
                         tuple(int(c) for c in np.flatnonzero(hot[i]))) for i in range(n)]
    store = _store(tmp_path / "s", x, videos=videos, classes=["a", "b", "c", "d"])
    with probe_warnings() as records:
        report = run_probes(_request(store))
    (row,) = report.retrieval
    shared = (hot[N_TRAIN:].astype(int) @ hot[:N_TRAIN].T.astype(int)) > 0
    recall, m, order, unmatched = _reference(x, shared, (1, 2, 5, 10))
    assert unmatched == 1 and row.no_relevant == 1 and row.n_queries == N_TEST - 1
    for k in (1, 2, 5, 10):
        assert row.recall[k] == pytest.approx(recall[k])
    assert row.mAP == pytest.approx(m)
    assert row.neighbours.shape == (N_TEST, 10)                     # the unmatched query keeps its neighbours
    np.testing.assert_array_equal(row.neighbours, order[:, :10])
    warnings = [r for r in records if "no training video of their class" in r.getMessage()]
    assert len(warnings) == 1


def test_cli_reports_retrieval_apart_from_the_class_rows(tmp_path, capsys):
    x, y = _tied_clips(3)
    store = _store(tmp_path / "s", x, y)
    code, out, err = run_cli(capsys, "probe", store, "--knn", "--retrieval", "--retrieval-k", "1,5", "--device", "cpu",
                             "--quiet", "--report", tmp_path / "r.json", "--predictions", tmp_path / "p.npz")
    assert code == 0, err
    assert "R@1" in out and "R@5" in out and "knn (dino)" in out and "retrieval (dino)" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [r["probe"] for r in doc["results"]] == ["knn"]       # the class rows' consumers see class rows only
    (row,) = doc["retrieval"]
    recall, m, order, _ = _reference(x, y[N_TRAIN:, None] == y[None, :N_TRAIN], (1, 5))
    assert row["recall"]["R@1"] == pytest.approx(recall[1]) and row["recall"]["R@5"] == pytest.approx(recall[5])
    assert row["mAP"] == pytest.approx(m) and row["ks"] == [1, 5] and row["params"]["rule"] == "dino"
    assert row["ci"]["mAP"]["method"] == "bootstrap" and row["no_relevant"] == 0
    with np.load(tmp_path / "p.npz") as p:
        np.testing.assert_array_equal(p["retrieval/backbone/neighbours"], order[:, :5])
        np.testing.assert_array_equal(p["rows"], np.arange(N_TRAIN, N_TRAIN + N_TEST))
        assert "knn/backbone/scores" in p.files


def test_a_table_sets_its_own_rule_beside_knns(tmp_path, capsys):
    """``[probe.retrieval] rule = "released"`` beside a dino k-NN row: each row ranks its own rule's
    vectors (the splits are then read clip by clip, not reduced to one rule's vector)."""
    x, y = _tied_clips(5)
    store = _store(tmp_path / "s", x, y)
    config = tmp_path / "p.toml"
    config.write_text('[probe.retrieval]\nrule = "released"\nks = [1, 3]\n')
    code, out, err = run_cli(capsys, "probe", store, "--knn", "--config", config, "--device", "cpu", "--quiet", "--json",
                             "--predictions", tmp_path / "both.npz")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["results"][0]["params"]["rule"] == "dino"
    run_cli(capsys, "probe", store, "--knn", "--device", "cpu", "--quiet", "--predictions", tmp_path / "knn.npz")
    with np.load(tmp_path / "both.npz") as both, np.load(tmp_path / "knn.npz") as alone:
        np.testing.assert_allclose(both["knn/backbone/scores"], alone["knn/backbone/scores"], rtol=1e-6)
    (row,) = doc["retrieval"]
    assert (row["params"]["rule"], row["params"]["center"], row["ks"]) == ("released", True, [1, 3])
    recall, m, _, _ = _reference(x, y[N_TRAIN:, None] == y[None, :N_TRAIN], (1, 3), rule="released")
    assert row["recall"]["R@1"] == pytest.approx(recall[1]) and row["recall"]["R@3"] == pytest.approx(recall[3])
    assert row["mAP"] == pytest.approx(m)


def test_a_regression_target_is_one_line(tmp_path, capsys):
    x, y = _tied_clips()
    videos = [VideoEntry(f"v{i}.mp4", int(y[i]), "train" if i < N_TRAIN else "test", (), (("year", float(i)),))
              for i in range(len(x))]
    store = _store(tmp_path / "s", x, videos=videos, classes=["a", "b", "c"])
    code, out, err = run_cli(capsys, "probe", store, "--retrieval", "--target", "year", "--device", "cpu")
    assert code == 2 and "--retrieval" in err and "--target year" in err
    assert len(err.strip().splitlines()) == 1


def test_seeds_compute_it_once(tmp_path, monkeypatch):
    import vssl.probe.retrieval as retrieval

    calls = []
    rank = retrieval.rank_gallery
    monkeypatch.setattr(retrieval, "rank_gallery", lambda *a, **kw: calls.append(1) or rank(*a, **kw))
    x, y = _tied_clips()
    report = run_probes(_request(_store(tmp_path / "s", x, y), seeds=3))
    assert len(calls) == 1 and report.retrieval[0].params["seeds"] == [0, 1, 2]


def test_scale_rows_clip_set_and_the_set_token(tmp_path):
    store, run = tiny_store_and_run(tmp_path)
    report = run_probes(ProbeRequest(store=store, view=VIEW, scale_run=run, quiet=True,
                                     retrieval=RetrievalConfig(ks=(1, 5), device="cpu")))
    assert [(r.name, r.features, r.params["features"]) for r in report.retrieval] == [
        ("retrieval", "backbone", "clip_set"), ("retrieval", "scale", "clip_set"), ("retrieval_set", "scale", "set")]
    assert {r.params["rule"] for r in report.retrieval} == {"released"}      # a SCALE run: the paper's k-NN rule
    fs = FeatureStore.open(store)
    train, test = fs.split_indices("train"), fs.split_indices("test")
    group = report.retrieval[2].params["aggregates"]
    token = fs.row_group(group).read("set_token", np.arange(fs.num_videos)).astype(np.float64)
    clips = fs.view(VIEW).read_features(np.arange(fs.num_videos)).astype(np.float64)
    labels = fs.labels()
    relevant = labels[test][:, None] == labels[train][None, :]
    for row, vectors in ((report.retrieval[1], np.concatenate([clips.mean(axis=1), token], axis=1)),
                         (report.retrieval[2], token)):
        mu = vectors[train].mean(axis=0)                          # released: centred by the training mean
        tr, te = l2(vectors[train] - mu), l2(vectors[test] - mu)
        order = np.argsort(-(te @ tr.T), axis=1, kind="stable")
        hit1 = relevant[np.arange(len(test)), order[:, 0]]
        ranks = [np.flatnonzero(relevant[q][order[q]]) + 1 for q in range(len(test))]
        ap = [np.mean(np.arange(1, len(r) + 1) / r) for r in ranks]
        assert row.recall[1] == pytest.approx(100 * hit1.mean())
        assert row.mAP == pytest.approx(100 * np.mean(ap))
        np.testing.assert_array_equal(row.neighbours, train[order[:, :5]])
    # the best R@1 row against each other, paired on the same queries' hits at 1
    best = max(report.retrieval, key=lambda r: (r.recall[1], r.mAP))
    compared = report.to_json()["retrieval_comparisons"]
    assert len(compared) == 2 and {c["metric"] for c in compared} == {"R@1"}
    for c in compared:
        other = next(r for r in report.retrieval if f"{r.name} ({r.features})" == c["b"])
        assert c["a"] == f"{best.name} ({best.features})" and c["n"] == len(test)
        assert c["diff"] == pytest.approx(best.recall[1] - other.recall[1])


def test_a_token_view_is_ranked_by_its_clips_mean_tokens(tmp_path):
    """Each clip of a token view averaged over its tokens is the pooled view: the same rows."""
    x, y = _tied_clips(4)
    tokens = x[:, :, None, :] + np.random.default_rng(0).normal(size=(len(x), K, 4, D)).astype(np.float32)
    tokens -= tokens.mean(axis=2, keepdims=True) - x[:, :, None, :]      # their mean is exactly x
    store = make_synthetic_store(tmp_path / "s", tokens.mean(axis=2), y, ["train"] * N_TRAIN + ["test"] * N_TEST,
                                 view=VIEW, dtype="float32", chunk_videos=16)
    name = f"{VIEW}.tokens1x2x2"
    store.create_view(name, num_clips=K, spec={"sampler": "synthetic", "clips": K}, dtype="float32",
                      clip_shape=(4, D))
    for start, stop in store.chunk_ranges():
        idx = np.arange(start, stop)
        store.write_videos(idx, {name: (tokens[start:stop], uniform_boxes(len(idx), K))}, num_frames=[64] * len(idx),
                           fps=[25.0] * len(idx), errors=[None] * len(idx))
    pooled = run_probes(_request(tmp_path / "s")).retrieval[0]
    token = run_probes(ProbeRequest(store=tmp_path / "s", view=name, quiet=True,
                                    retrieval=RetrievalConfig(ks=(1, 2, 5, 10), device="cpu"))).retrieval[0]
    np.testing.assert_array_equal(token.neighbours, pooled.neighbours)
    assert token.recall == pytest.approx(pooled.recall) and token.mAP == pytest.approx(pooled.mAP)



def test_low_shot_ranks_the_subset_drawn_with_the_seed(tmp_path):
    """Under --low-shot the gallery is the training subset of --seed (the k-NN row's, for one seed)."""
    from vssl.probe.lowshot import balanced_fraction

    x, y = _tied_clips(6)
    report = run_probes(_request(_store(tmp_path / "s", x, y), knn=KnnConfig(device="cpu"), low_shot=0.5, seed=3))
    (row,) = report.retrieval
    pick = balanced_fraction(y[:N_TRAIN], 0.5, 3)               # training rows are store rows 0..29
    assert row.n_gallery == len(pick) == report.results[0].n_train < N_TRAIN and row.params["low_shot"] == 0.5
    v = l2(l2(x.astype(np.float64)).mean(axis=1))
    order = pick[np.argsort(-(v[N_TRAIN:] @ v[pick].T), axis=1, kind="stable")]
    np.testing.assert_array_equal(row.neighbours, order[:, :10])
    hit1 = y[order[:, 0]] == y[N_TRAIN:]
    assert row.recall[1] == pytest.approx(100 * hit1[row.scored].mean())


def test_a_ranking_held_in_small_blocks_is_the_same(tmp_path, monkeypatch):
    """A large gallery ranks fewer queries at once (the block's memory is bounded), the rows unchanged."""
    from vssl.probe import retrieval

    x, y = _tied_clips()
    store = _store(tmp_path / "s", x, y)
    whole = run_probes(_request(store)).retrieval[0]
    monkeypatch.setattr(retrieval, "RANK_BYTES", retrieval.RANK_BYTES_PER_SCORE * N_TRAIN * 3)   # 3 queries a block
    assert retrieval.ranking_block(1024, N_TRAIN) == 3
    small = run_probes(_request(store)).retrieval[0]
    np.testing.assert_array_equal(small.neighbours, whole.neighbours)
    assert small.recall == whole.recall and small.mAP == whole.mAP


def test_retrieval_k_alone_asks_for_retrieval_rows(tmp_path, capsys):
    x, y = _tied_clips()
    code, out, err = run_cli(capsys, "probe", _store(tmp_path / "s", x, y), "--retrieval-k", "1,2", "--device", "cpu",
                             "--quiet", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["results"] == [] and doc["retrieval"][0]["ks"] == [1, 2]


def test_a_cut_off_covering_the_gallery_is_marked(tmp_path, capsys):
    x, y = _tied_clips()
    code, out, err = run_cli(capsys, "probe", _store(tmp_path / "s", x, y), "--retrieval-k", f"1,{N_TRAIN}",
                             "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "100.00*" in out and "covers the whole gallery" in " ".join(out.split())
