"""`vssl probe` on multi-label and regression data, with seeds, a k-NN k grid and --predictions:
manifest -> store -> report, every reported number recomputed with scikit-learn from the saved
scores; older stores still open; test labels take no part in any trained probe's selection."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from vssl.extract.inputs import read_manifest
from vssl.features_store import FeatureStore
from vssl.features_store.store import VIDEO_COLUMNS
from vssl.features_store.synthetic import make_synthetic_store

from tests.probe_helpers import run_cli as _run

VIEW = "uniform5x3"
N_TRAIN, N_TEST, K, D = 120, 60, 4, 10
NAMES = ["cook", "eat", "read", "sit"]
FAST = ["--epochs", "6", "--batch-size", "64", "--lr", "0.01", "--weight-decay", "0.0001", "--quiet",
        "--device", "cpu", "--precision", "fp32", "--min-steps", "0", "--holdout-min", "0"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _dataset(root, seed=0, shuffle_test=False, single=False, noise=0.5):
    """A manifest (multi-label ``a;b`` classes, or the first of them with ``single``, and a numeric
    ``year`` column) and its store."""
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_TEST
    hot = rng.random((n, len(NAMES))) < 0.35
    hot[~hot.any(axis=1), 0] = True
    if single:
        hot = np.eye(len(NAMES), dtype=bool)[hot.argmax(axis=1)]
    year = np.round(1990 + 20 * rng.random(n), 1)
    directions = 2.5 * rng.normal(size=(len(NAMES), D))
    slope = rng.normal(size=D)
    base = hot @ directions + np.outer((year - 2000) / 10, slope)
    x = (base[:, None] + noise * rng.normal(size=(n, K, D))).astype(np.float32)
    labels, years = hot.copy(), year.copy()
    if shuffle_test:                                  # the test split's targets permuted among its videos
        perm = N_TRAIN + rng.permutation(N_TEST)
        labels[N_TRAIN:], years[N_TRAIN:] = hot[perm], year[perm]
    lines = ["path,label,split,year"]
    for i in range(n):
        classes = ";".join(NAMES[c] for c in np.flatnonzero(labels[i]))
        lines.append(f"v{i:04d}.mp4,{classes},{'train' if i < N_TRAIN else 'test'},{years[i]}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    inputs = read_manifest(root / "m.csv")
    make_synthetic_store(root / "store", x, [v.label for v in inputs.videos], [v.split for v in inputs.videos],
                         view=VIEW, classes=inputs.classes, chunk_videos=64, videos=inputs.videos)
    return root / "store", labels.astype(np.uint8), years


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("targets"))


def test_manifest_labels_become_multi_hot_and_targets_and_old_stores_still_open(data, tmp_path):
    store_path, hot, year = data
    store = FeatureStore.open(store_path)
    assert store.classes == NAMES
    np.testing.assert_array_equal(store.multi_hot(), hot)
    np.testing.assert_allclose(store.targets("year"), year)
    assert store.target_names() == ["year"]
    # a single-label store is laid out as before: no new arrays, and it reads as single-label
    (tmp_path / "old.csv").write_text("a.mp4,run,train\nb.mp4,jump,test\n")
    old = read_manifest(tmp_path / "old.csv")
    x = np.zeros((2, 1, 4), np.float32)
    make_synthetic_store(tmp_path / "old", x, [v.label for v in old.videos], ["train", "test"], classes=old.classes,
                         videos=old.videos)
    opened = FeatureStore.open(tmp_path / "old")
    assert set(opened.root["videos"].array_keys()) == set(VIDEO_COLUMNS)
    assert opened.multi_hot() is None and opened.target_names() == [] and opened.labels().tolist() == [1, 0]


def test_bad_target_and_column_are_one_clear_error(data, tmp_path, capsys):
    code, _, err = _run(capsys, "probe", data[0], "--view", VIEW, "--knn", "--target", "likes")
    assert code == 2 and "no target 'likes'" in err and "year" in err
    code, _, err = _run(capsys, "probe", data[0], "--view", VIEW, "--knn", "--quiet", "--confusion", tmp_path / "c.png")
    assert code == 2 and "--confusion draws single-label classes" in err
    (tmp_path / "m.csv").write_text("path,label,split,year\na.mp4,x,train,old\n")
    code, _, err = _run(capsys, "extract", tmp_path / "m.csv", "--out", tmp_path / "s", "--backbone", "tiny")
    assert code == 2 and "'old' is not a number" in err


@pytest.mark.slow
def test_multi_label_rows_report_map_and_per_class_ap(data, tmp_path, capsys):
    store, _, _ = data
    report, npz = tmp_path / "r.json", tmp_path / "p.npz"
    code, out, err = _run(capsys, "probe", store, "--view", VIEW, "--knn", "--linear", "--mlp", "--attentive", *FAST,
                          "--report", report, "--predictions", npz)
    assert code == 0, err
    assert "mAP" in out
    saved = np.load(npz)
    y = saved["labels"]
    assert y.shape == (N_TEST, len(NAMES))
    for r in json.loads(report.read_text())["results"]:
        assert r["task"] == "multi" and r["top1"] is None and r["top5"] is None
        scores = saved[f"{r['probe']}/{r['features']}/scores"]
        assert r["mAP"] == pytest.approx(100 * skm.average_precision_score(y, scores, average="macro"))
        assert list(r["per_class_ap"].values()) == pytest.approx(
            list(100 * skm.average_precision_score(y, scores, average=None)))
        assert r["mAP"] > 80, (r["probe"], r["mAP"])               # the classes are easy to separate
        assert r["ci"]["metric"] == "mAP" and r["ci"]["low"] <= r["mAP"] <= r["ci"]["high"]
    comparisons = json.loads(report.read_text())["comparisons"]
    assert len(comparisons) == 3 and all(c["metric"] == "mAP" and c["method"] == "bootstrap paired"
                                         for c in comparisons)


@pytest.mark.slow
def test_regression_rows_report_mse_and_r2(data, tmp_path, capsys):
    store, _, year = data
    report, npz = tmp_path / "r.json", tmp_path / "p.npz"
    code, out, err = _run(capsys, "probe", store, "--view", VIEW, "--target", "year", "--knn", "--linear", "--mlp",
                          "--attentive", *FAST, "--report", report, "--predictions", npz)
    assert code == 0, err
    assert "MSE" in out and "R²" in out
    saved = np.load(npz)
    np.testing.assert_allclose(saved["labels"], year[N_TRAIN:])
    for r in json.loads(report.read_text())["results"]:
        pred = saved[f"{r['probe']}/{r['features']}/scores"]
        assert pred.shape == (N_TEST, 1) and r["task"] == "regression"
        assert r["mse"] == pytest.approx(skm.mean_squared_error(year[N_TRAIN:], pred[:, 0]))
        assert r["r2"] == pytest.approx(skm.r2_score(year[N_TRAIN:], pred[:, 0]))
        assert r["ci"]["metric"] == "mse"
    rows = {r["probe"]: r for r in json.loads(report.read_text())["results"]}
    assert rows["linear"]["r2"] > 0.5, rows["linear"]["r2"]       # a linear function of the features


@pytest.mark.slow
def test_seeds_and_knn_grid(data, tmp_path, capsys):
    store = data[0]
    report, npz = tmp_path / "r.json", tmp_path / "p.npz"
    # a trained (minibatch) head: its seed changes the model, not only the held-out split of a solved head
    code, out, err = _run(capsys, "probe", store, "--view", VIEW, "--knn", "--knn-k", "5,10", "--linear", *FAST,
                          "--solver", "minibatch", "--seeds", "3", "--low-shot", "0.5", "--report", report,
                          "--predictions", npz)
    assert code == 0, err
    doc = json.loads(report.read_text())
    assert doc["seeds"] == [0, 1, 2] and "3 seeds" in out and "±" in out
    rows = {(r["probe"], r["variant"]): r for r in doc["results"]}
    assert set(rows) == {("knn", "k5"), ("knn", "k10"), ("linear", None)}
    assert rows[("knn", "k5")]["params"]["k"] == 5 and rows[("knn", "k10")]["params"]["k"] == 10
    saved = np.load(npz)
    y = saved["labels"]
    for (probe, variant), r in rows.items():
        name = probe if variant is None else f"{probe}_{variant}"
        each = [100 * skm.average_precision_score(y, saved[f"{name}/backbone/seed{s}/scores"]) for s in range(3)]
        assert r["seeds"]["mAP"] == pytest.approx(each)
        assert r["mAP"] == pytest.approx(np.mean(each)) and r["std"]["mAP"] == pytest.approx(np.std(each))
        assert len(set(np.round(each, 6))) == 3             # each seed draws its own low-shot subset
    assert len(rows[("linear", None)]["params"]["selected_per_seed"]) == 3
    # without low-shot k-NN is the same for every seed (computed once); the trained probe is not
    code, _, err = _run(capsys, "probe", store, "--view", VIEW, "--knn", "--linear", *FAST, "--solver", "minibatch",
                        "--seeds", "2", "--report", report)
    rows = {r["probe"]: r for r in json.loads(report.read_text())["results"]}
    assert code == 0 and rows["knn"]["std"]["mAP"] == 0.0 and len(rows["knn"]["seeds"]["mAP"]) == 2
    assert rows["linear"]["seeds"]["mAP"][0] != rows["linear"]["seeds"]["mAP"][1]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["single", "multi", "year"])
def test_test_labels_take_no_part_in_any_trained_probes_selection(tmp_path, kind):
    """Every trained probe (linear, MLP, transformer, attentive; SCALE_linear, SCALE's MLP, SCALE_ft,
    attentive on Ĉ) selects
    the same grid point, epoch and held-out score when the test split's labels are shuffled
    (single-label classes, multi-label classes, or the regression target)."""
    from vssl.aggregate import ScaleConfig, train
    from vssl.probe import (AttentiveConfig, FinetuneConfig, LinearConfig, MlpConfig, ProbeRequest, TransformerConfig,
                            run_probes)

    target = "year" if kind == "year" else None
    stores = [_dataset(tmp_path / name, seed=3, shuffle_test=shuffle, single=kind == "single", noise=4.0)[0]
              for name, shuffle in (("a", False), ("b", True))]
    run = tmp_path / "run"
    train(stores[0], VIEW, run, ScaleConfig(width=16, layers=1, heads=2, pred_hidden=32, target_hidden=32,
                                            proj_dim=8, epochs=1, batch_size=32, device="cpu", precision="fp32",
                                            seed=0), quiet=True)
    grid = dict(lrs=(1e-3, 1e-2), weight_decays=(1e-4,), epochs=3, batch_size=32, device="cpu", precision="fp32",
                min_steps=0, holdout_min=0)
    chosen = []
    for store in stores:
        report = run_probes(ProbeRequest(
            store=store, view=VIEW, linear=LinearConfig(**grid), mlp=MlpConfig(**grid, hidden=32, out_dim=16),
            transformer=TransformerConfig(**grid), finetune=FinetuneConfig(**grid),
            attentive=AttentiveConfig(**grid, depth=1), scale_run=run, target=target, quiet=True))
        chosen.append({(r.probe, r.features): r.params["selected"] for r in report.results})
    assert set(chosen[0]) == {("linear", "backbone"), ("mlp", "backbone"), ("transformer", "backbone"),
                              ("scale_linear", "scale"), ("mlp", "scale"), ("scale_ft", "scale"),
                              ("attentive", "backbone"), ("attentive", "scale")}
    assert chosen[0] == chosen[1]
    assert len({s["val_score"] for s in chosen[0].values()}) > 1        # held-out scores that could differ
    assert {s["val_metric"] for s in chosen[0].values()} == {{"single": "top1", "multi": "mAP", "year": "-mse"}[kind]}


def test_extract_stores_a_multi_label_manifest_with_a_target(tmp_path):
    """`vssl extract` on a manifest with ``a;b`` labels and a numeric column: the store holds the
    multi-hot classes and the target, video for video."""
    from tests.videos import write_video
    from vssl.extract import extract

    for name in ("a", "b", "c"):
        write_video(tmp_path / f"{name}.mp4", 9)
    (tmp_path / "m.csv").write_text("path,label,split,year\na.mp4,eat;cook,train,1999\nb.mp4,sit,train,\n"
                                    "c.mp4,,test,2004.5\n")
    summary = extract(tmp_path / "m.csv", tmp_path / "s", views="uniform:1x1", progress=False)
    store = FeatureStore.open(tmp_path / "s")
    assert summary.done == 3 and store.classes == ["cook", "eat", "sit"]
    assert store.multi_hot().tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 0]]
    np.testing.assert_array_equal(store.targets("year"), [1999.0, np.nan, 2004.5])
    assert store.labels().tolist() == [1, 2, -1]            # the first class listed; -1 unlabelled
