"""k-NN probe: DINO's weighted vote against an independent numpy brute force and scikit-learn."""

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from vssl.probe.knn import KnnConfig, knn_scores, prepare, search


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _dino_reference(train_clips, train_labels, test_clips, num_classes, k, t):
    """DINO's rule written out directly: cosine top-k, votes exp(sim/T) per neighbour class."""
    tr = _unit(_unit(train_clips.astype(np.float64)).mean(1))
    te = _unit(_unit(test_clips.astype(np.float64)).mean(1))
    sims = te @ tr.T
    nn_idx = np.argsort(-sims, axis=1)[:, :k]
    scores = np.zeros((len(te), num_classes))
    for i in range(len(te)):
        for j in nn_idx[i]:
            scores[i, train_labels[j]] += np.exp(sims[i, j] / t)
    return scores, nn_idx, tr, te


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(3)
    c, d = 7, 24
    centers = rng.normal(size=(c, d))
    y_tr, y_te = rng.integers(0, c, 400), rng.integers(0, c, 90)
    tr = centers[y_tr][:, None] + 1.5 * rng.normal(size=(400, 5, d))
    te = centers[y_te][:, None] + 1.5 * rng.normal(size=(90, 5, d))
    return tr.astype(np.float32), y_tr, te.astype(np.float32), y_te, c


@pytest.mark.parametrize("backend,precision", [("faiss", "fp32"), ("torch", "fp32"), ("torch", "bf16")])
def test_votes_equal_brute_force_dino_rule(clips, backend, precision):
    tr_x, y_tr, te_x, _, c = clips
    ref_scores, ref_idx, _, _ = _dino_reference(tr_x, y_tr, te_x, c, k=20, t=0.07)
    tr, te = prepare(tr_x, te_x, center=False)
    cfg = KnnConfig(backend=backend, precision=precision, device="cpu", query_block=32)
    scores = knn_scores(tr, y_tr, te, c, cfg)
    _, idx = search(tr, te, cfg)
    np.testing.assert_array_equal(np.sort(idx, 1), np.sort(ref_idx, 1))
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4)
    np.testing.assert_array_equal(scores.argmax(1), ref_scores.argmax(1))


def test_neighbours_equal_scikit_learn(clips):
    tr_x, _, te_x, _, _ = clips
    _, _, tr, te = _dino_reference(tr_x, np.zeros(len(tr_x), int), te_x, 1, 20, 0.07)
    sk = NearestNeighbors(n_neighbors=20, algorithm="brute", metric="cosine").fit(tr)
    sk_dist, sk_idx = sk.kneighbors(te)
    sims, idx = search(tr.astype(np.float32), te.astype(np.float32), KnnConfig(device="cpu"))
    np.testing.assert_array_equal(idx, sk_idx)
    np.testing.assert_allclose(sims, 1 - sk_dist, atol=1e-5)


def test_bf16_shortlist_stays_exact_on_near_duplicates():
    """Many training vectors closer together than bf16 can tell apart: re-ranking must fix the order."""
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(1, 64)))
    tr = _unit(base + 2e-2 * rng.normal(size=(3000, 64))).astype(np.float32)
    te = _unit(base + 2e-2 * rng.normal(size=(20, 64))).astype(np.float32)
    ref = np.argsort(-(te.astype(np.float64) @ tr.T.astype(np.float64)), axis=1)[:, :20]
    _, idx = search(tr, te, KnnConfig(backend="torch", precision="bf16", device="cpu"))
    np.testing.assert_array_equal(np.sort(idx, 1), np.sort(ref, 1))


def test_centering_uses_the_training_mean_for_both_splits():
    rng = np.random.default_rng(1)
    tr_x, te_x = rng.normal(size=(50, 3, 8)) + 5, rng.normal(size=(20, 3, 8)) + 9
    tr, te = prepare(tr_x, te_x, center=True)
    mu = _unit(_unit(tr_x).mean(1)).mean(0)
    np.testing.assert_allclose(te, _unit(_unit(_unit(te_x).mean(1)) - mu), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(tr, axis=1), 1, atol=1e-6)


def test_fewer_training_videos_than_k():
    tr = _unit(np.eye(3, 4)).astype(np.float32)
    scores = knn_scores(tr, np.array([0, 1, 1]), tr[:1], 2, KnnConfig(device="cpu"))
    w = np.exp(np.array([1.0, 0.0, 0.0]) / 0.07)
    np.testing.assert_allclose(scores[0], [w[0], w[1] + w[2]], rtol=1e-5)


@pytest.mark.parametrize("kind", ["multi", "regression"])
def test_multi_label_and_regression_votes_are_weighted_fractions_and_means(kind):
    """Multi-hot labels: class c's score is the exp(s/T)-weighted fraction of the k neighbours that
    have c; a numeric target: the weighted mean of the neighbours' values ([n_test, 1])."""
    rng = np.random.default_rng(5)
    train, test = _unit(rng.normal(size=(30, 8))), _unit(rng.normal(size=(6, 8)))
    labels = ((rng.random((30, 4)) < 0.4).astype(np.float32) if kind == "multi"
              else rng.normal(2000, 10, size=30).astype(np.float32))
    cfg = KnnConfig(k=5, temperature=0.1, backend="torch")
    got = knn_scores(train, labels, test, 4, cfg)
    sims = test.astype(np.float64) @ train.T.astype(np.float64)
    want = []
    for q in range(len(test)):
        top = np.argsort(-sims[q])[:5]
        w = np.exp(sims[q, top] / 0.1)
        want.append((w[:, None] * labels[top].reshape(5, -1)).sum(0) / w.sum())
    assert got.shape == ((6, 4) if kind == "multi" else (6, 1))
    np.testing.assert_allclose(got, np.array(want), rtol=1e-5)


def test_per_video_vectors_are_l2_normalized_as_they_are():
    """Already one vector per video ([n, D]: k-NN-only loads): only the final l2, no mean over anything."""
    from vssl.probe.knn import video_embeddings

    x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    np.testing.assert_allclose(video_embeddings(x), _unit(x), rtol=1e-6)


def test_knn_k_gives_one_row_per_k_each_named_and_under_the_requests_one_rule():
    """--knn-k 5,1: a row per k, in the order given, named k5 and k1, each otherwise the user's config
    (temperature kept) and every one under the rule the request resolves (released with a SCALE run)."""
    from pathlib import Path

    from vssl.probe import ProbeRequest
    from vssl.probe.knn import knn_rows

    base = KnnConfig(k=20, temperature=0.5)
    rows = knn_rows(base, ProbeRequest(store=Path("s"), view="v", knn_ks=(5, 1), scale_run=Path("run")))
    assert [(c.k, c.temperature, c.rule, name) for c, name in rows] == [(5, 0.5, "released", "k5"),
                                                                       (1, 0.5, "released", "k1")]
    (only, name), = knn_rows(base, ProbeRequest(store=Path("s"), view="v"))
    assert (only.k, only.rule, name) == (20, "dino", None)
