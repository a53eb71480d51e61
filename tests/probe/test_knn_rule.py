"""``--knn-rule``: every k-NN row of a report embeds videos by one rule, and says which.

- ``dino``: mean of the l2-normalized clips, uncentred (DINO's eval_knn);
- ``released``: the raw mean of the clips, centred (released SCALE ``src/eval.py`` ``knn``;
  vssl centres by the training split's mean), on the backbone's clips and on SCALE's [C_i ⊕ SET].

Each row is checked against numpy on the stored arrays and DINO's vote written out by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vssl.features_store import FeatureStore
from vssl.probe import KnnConfig, ProbeRequest, run_probes

from tests.probe_helpers import VIEW, dino_knn, l2, run_cli, tiny_store_and_run

N_TRAIN = 36
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_store_and_run(tmp_path_factory.mktemp("knnrule"), seed=4)


def _clips(store):
    s = FeatureStore.open(store)
    return s.view(VIEW).read_features(np.arange(s.num_videos)).astype(np.float64), s.labels().astype(np.int64)


def _arrays(store, run):
    """Clips, SET tokens and labels; the tokens exist once a probe with ``--scale`` has exported them."""
    clips, labels = _clips(store)
    s = FeatureStore.open(store)
    token = s.row_group(f"aggregates/{run.name}/{VIEW}").read("set_token", np.arange(s.num_videos)).astype(np.float64)
    return clips, token, labels


def _votes(video: np.ndarray, y: np.ndarray, center: bool) -> np.ndarray:
    tr, te = video[:N_TRAIN], video[N_TRAIN:]
    if center:                                      # both splits by the TRAINING mean
        mu = tr.mean(axis=0)
        tr, te = tr - mu, te - mu
    return dino_knn(l2(tr), y[:N_TRAIN], l2(te), 3)


def _predict(video: np.ndarray, y: np.ndarray, center: bool) -> np.ndarray:
    return _votes(video, y, center).argmax(axis=1)


def _released(clips):
    return clips.mean(axis=1)


def _dino(clips):
    return l2(np.stack([l2(c) for c in clips]).mean(axis=1))


def _rows(report):
    return {(r.probe, r.features): r for r in report.results}


def _top1(pred, y):
    return pytest.approx((pred == y[N_TRAIN:]).mean() * 100)


@pytest.mark.slow
def test_with_a_scale_run_both_knn_rows_use_the_released_rule(tiny):
    store, run = tiny
    report = run_probes(ProbeRequest(store=store, view=VIEW, knn=KnnConfig(device="cpu"), scale_run=run, quiet=True))
    rows = _rows(report)
    c, s, y = _arrays(store, run)
    assert {r.params["rule"] for r in rows.values()} == {"released"}
    assert rows[("knn", "backbone")].top1 == _top1(_predict(_released(c), y, center=True), y)
    assert rows[("knn", "backbone")].params["center"] is True
    assert "l2-normalized" not in rows[("knn", "scale")].params["representation"]
    np.testing.assert_allclose(rows[("knn", "backbone")].scores[0], _votes(_released(c), y, center=True), rtol=1e-4)
    clip_set = np.concatenate([c.mean(axis=1), s], axis=1)
    assert rows[("knn", "scale")].top1 == _top1(_predict(clip_set, y, center=True), y)
    np.testing.assert_allclose(rows[("knn", "scale")].scores[0], _votes(clip_set, y, center=True), rtol=1e-4)


def test_the_dino_rule_on_both_sources(tiny):
    store, run = tiny
    report = run_probes(ProbeRequest(store=store, view=VIEW, knn=KnnConfig(device="cpu", rule="dino"), scale_run=run,
                                     quiet=True))
    rows = _rows(report)
    c, s, y = _arrays(store, run)
    assert {r.params["rule"] for r in rows.values()} == {"dino"}
    assert rows[("knn", "backbone")].top1 == _top1(_predict(_dino(c), y, center=False), y)
    np.testing.assert_allclose(rows[("knn", "backbone")].scores[0], _votes(_dino(c), y, center=False), rtol=1e-4)
    per_clip = np.concatenate([c, np.repeat(s[:, None], c.shape[1], axis=1)], axis=-1)   # [C_i ⊕ SET]
    assert rows[("knn", "scale")].top1 == _top1(_predict(_dino(per_clip), y, center=False), y)
    np.testing.assert_allclose(rows[("knn", "scale")].scores[0], _votes(_dino(per_clip), y, center=False),
                               rtol=1e-4)
    assert rows[("knn", "scale")].params["center"] is False
    assert "l2-normalized" in rows[("knn", "scale")].params["representation"]    # the report says what it did


def test_backbone_alone_keeps_dino_and_the_released_rule_is_a_flag(tiny, tmp_path, capsys):
    store, _ = tiny
    c, y = _clips(store)
    code, out, err = run_cli(capsys, "probe", store, "--view", VIEW, "--knn", "--device", "cpu",
                             "--report", tmp_path / "d.json")
    assert code == 0, err
    row = json.loads((tmp_path / "d.json").read_text())["results"][0]
    assert row["params"]["rule"] == "dino" and row["top1"] == _top1(_predict(_dino(c), y, center=False), y)
    assert row["params"]["representation"] == "mean of l2-normalized clip embeddings"
    assert "knn (dino)" in out

    # k-NN alone reads each video's vector while loading (no clips kept): the released one here
    code, out, err = run_cli(capsys, "probe", store, "--view", VIEW, "--knn", "--knn-rule", "released",
                             "--device", "cpu", "--report", tmp_path / "r.json")
    assert code == 0, err
    row = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert row["params"]["rule"] == "released" and row["params"]["center"] is True
    assert row["params"]["representation"] == "mean of clip embeddings"
    assert row["top1"] == _top1(_predict(_released(c), y, center=True), y)
    assert "knn (released)" in out


def test_unknown_rule_is_one_line(tiny, capsys):
    store, _ = tiny
    code, _, err = run_cli(capsys, "probe", store, "--view", VIEW, "--knn", "--knn-rule", "mean", "--device", "cpu")
    assert code == 2 and "knn_rule" in err and "released" in err
