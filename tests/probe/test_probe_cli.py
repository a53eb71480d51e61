"""`vssl probe` end to end on synthetic stores: report schema, low-shot, SCALE rows, errors."""

import json
import re

import numpy as np
import pytest

from vssl.features_store import BackboneSpec, FeatureStore, VideoEntry
from vssl.features_store.synthetic import make_synthetic_store, uniform_boxes
from vssl.probe.lowshot import balanced_fraction, holdout_split

from tests.probe_helpers import run_cli as _run

jsonschema = pytest.importorskip("jsonschema")

VIEW = "uniform5x3"
N_TRAIN, N_TEST, K, D, C = 150, 60, 4, 12, 3
FAST = ["--epochs", "4", "--batch-size", "64", "--lr", "0.01", "--weight-decay", "0.0001", "--quiet",
        "--min-steps", "0", "--holdout-min", "0"]

# The schema of issue 6, written independently of vssl/probe/report.py.
REPORT_SCHEMA = {
    "type": "object",
    "required": ["store", "view", "results"],
    "properties": {
        "store": {"type": "string"}, "view": {"type": "string"},
        "results": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["probe", "features", "top1", "top5", "balanced_accuracy", "n_train", "n_test", "params",
                         "per_class", "per_class_stats", "confusion", "ci", "seeds", "std"],
            "properties": {
                "probe": {"enum": ["knn", "linear", "mlp", "transformer", "scale_linear", "scale_ft"]},
                "features": {"enum": ["backbone", "scale"]},
                "top1": {"type": "number", "minimum": 0, "maximum": 100},
                "top5": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
                "balanced_accuracy": {"type": "number", "minimum": 0, "maximum": 100},
                "confusion": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
                "ci": {"type": "object", "required": ["metric", "low", "high", "level", "method"]},
                "n_train": {"type": "integer", "minimum": 1}, "n_test": {"type": "integer", "minimum": 1},
                "params": {"type": "object"},
                "per_class": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
            }}},
    },
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(seed=0, n_train=N_TRAIN, n_test=N_TEST):
    rng = np.random.default_rng(seed)
    centers = 3 * rng.normal(size=(C, D))
    y = np.concatenate([np.arange(n_train) % C, rng.integers(0, C, n_test)])
    x = centers[y][:, None] + rng.normal(size=(len(y), K, D))
    return x.astype(np.float32), y, ["train"] * n_train + ["test"] * n_test


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    x, y, splits = _data()
    path = tmp_path_factory.mktemp("probe") / "store"
    make_synthetic_store(path, x, y, splits, view=VIEW, classes=["jump", "run", "swim"], chunk_videos=64)
    return path


@pytest.fixture(scope="module")
def scale_run(store, tmp_path_factory):
    from vssl.aggregate import ScaleConfig, train

    run = tmp_path_factory.mktemp("runs") / "tinyrun"
    cfg = ScaleConfig(width=32, layers=1, heads=2, pred_hidden=64, target_hidden=64, proj_dim=16, epochs=2,
                      batch_size=32, device="cpu", precision="fp32", seed=0)
    train(store, VIEW, run, cfg, quiet=True)
    return run


@pytest.mark.slow
def test_default_probes_report_validates_and_names_the_representation(store, tmp_path, capsys):
    report, png = tmp_path / "r.json", tmp_path / "cm.png"
    code, out, _ = _run(capsys, "probe", store, "--view", VIEW, *FAST, "--report", report, "--confusion", png)
    assert code == 0
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert [(r["probe"], r["features"]) for r in doc["results"]] == [("knn", "backbone"), ("linear", "backbone")]
    for r in doc["results"]:
        assert r["n_train"] == N_TRAIN and r["n_test"] == N_TEST
        assert r["top1"] >= 95.0 and r["top5"] is None        # 3 classes: top-5 cannot miss, not reported
        assert set(r["per_class"]) == {"jump", "run", "swim"}
        assert r["ci"]["low"] <= r["top1"] <= r["ci"]["high"]
        assert r["ci"]["method"] == ("wilson" if r["probe"] == "knn" else "bootstrap")
        assert np.asarray(r["confusion"]).sum() == N_TEST
    assert "clip" in doc["results"][0]["params"]["representation"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "knn" in out and "linear" in out


@pytest.mark.slow
def test_every_number_of_a_row_is_scikit_learns_on_the_saved_scores(store, tmp_path, capsys):
    """--predictions saves each row's test scores; scikit-learn, given those scores and the saved
    labels, gives every number of the report (and the test videos are the store's test split)."""
    from sklearn import metrics as skm

    report, npz = tmp_path / "r.json", tmp_path / "p.npz"
    code, _, err = _run(capsys, "probe", store, "--view", VIEW, "--knn", "--linear", *FAST, "--report", report,
                        "--predictions", npz)
    assert code == 0, err
    saved = np.load(npz)
    y = saved["labels"]
    opened = FeatureStore.open(store)
    assert list(saved["paths"]) == list(opened.paths()[N_TRAIN:]) and np.array_equal(y, opened.labels()[N_TRAIN:])
    for r in json.loads(report.read_text())["results"]:
        scores = saved[f"{r['probe']}/{r['features']}/scores"]
        assert scores.shape == (N_TEST, C)
        pred = scores.argmax(axis=1)
        assert r["top1"] == pytest.approx(100 * skm.accuracy_score(y, pred))
        assert r["balanced_accuracy"] == pytest.approx(100 * skm.balanced_accuracy_score(y, pred))
        assert r["confusion"] == skm.confusion_matrix(y, pred, labels=range(C)).tolist()
        p, rec, _, sup = skm.precision_recall_fscore_support(y, pred, labels=range(C), zero_division=0)
        for i, name in enumerate(["jump", "run", "swim"]):
            stats = r["per_class_stats"][name]
            assert (stats["precision"], stats["recall"], stats["support"]) == \
                (pytest.approx(100 * p[i]), pytest.approx(100 * rec[i]), sup[i])
    # A k-NN-only run reduces clips while reading; with a trained probe it keeps them: same row.
    alone = tmp_path / "alone.json"
    _run(capsys, "probe", store, "--view", VIEW, "--knn", "--quiet", "--report", alone)
    r_alone = json.loads(alone.read_text())["results"][0]
    r_both = json.loads(report.read_text())["results"][0]
    assert (r_both["top1"], r_both["per_class_stats"]) == (r_alone["top1"], r_alone["per_class_stats"])


def _tied_knn_store(path):
    """Seven classes, one training video on each axis e_c; each test video lies exactly between two
    axes, so k-NN (k = 2) gives both classes the same vote and the five others 0: ties at the top
    and across top-5's boundary. Labels put the true class first, second and around the 5th place."""
    eye = np.eye(7, dtype=np.float32)
    pairs = [(0, 1, 0), (2, 5, 5), (3, 6, 4), (3, 6, 1), (0, 4, 4), (1, 2, 2)]     # (axis, axis, label)
    test = np.stack([eye[a] + eye[b] for a, b, _ in pairs])
    x = np.concatenate([eye, test])[:, None].repeat(2, axis=1)
    y = np.concatenate([np.arange(7), [label for *_, label in pairs]])
    make_synthetic_store(path, x, y, ["train"] * 7 + ["test"] * len(pairs), view=VIEW)
    return path


def test_ties_are_scikit_learns_in_the_report_and_the_predictions(tmp_path, capsys):
    """Tied k-NN votes: top-1, top-5, the saved predictions and the confusion matrix are what
    scikit-learn's top_k_accuracy_score and confusion_matrix make of the saved scores."""
    from sklearn import metrics as skm

    from tests.probe.test_probe_metrics import sklearn_predictions

    store = _tied_knn_store(tmp_path / "store")
    report, npz = tmp_path / "r.json", tmp_path / "p.npz"
    code, _, err = _run(capsys, "probe", store, "--view", VIEW, "--knn", "--k", "2", "--quiet", "--report", report,
                        "--predictions", npz)
    assert code == 0, err
    saved = np.load(npz)
    y, scores = saved["labels"], saved["knn/backbone/scores"]
    assert ((scores == scores.max(axis=1, keepdims=True)).sum(axis=1) == 2).all()      # every row tied at the top
    pred = sklearn_predictions(scores)
    r = json.loads(report.read_text())["results"][0]
    assert r["top1"] == pytest.approx(100 * skm.top_k_accuracy_score(y, scores, k=1, labels=range(7)))
    assert r["top5"] == pytest.approx(100 * skm.top_k_accuracy_score(y, scores, k=5, labels=range(7)))
    assert (r["top1"], r["top5"]) == (pytest.approx(100 * 3 / 6), pytest.approx(100 * 5 / 6))   # by hand
    assert saved["knn/backbone/predicted"].tolist() == pred.tolist()
    assert r["confusion"] == skm.confusion_matrix(y, pred, labels=range(7)).tolist()


def test_a_confusion_matrix_counts_each_test_video_once(store, tmp_path, capsys):
    """--seeds 3: k-NN (training-free, one result) has one matrix; the linear probe one per seed,
    each that seed's saved predictions against the labels."""
    from sklearn import metrics as skm

    report, npz = tmp_path / "r.json", tmp_path / "p.npz"
    code, _, err = _run(capsys, "probe", store, "--view", VIEW, "--knn", "--linear", *FAST, "--seeds", "3",
                        "--report", report, "--predictions", npz)
    assert code == 0, err
    saved = np.load(npz)
    y = saved["labels"]
    rows = {r["probe"]: r for r in json.loads(report.read_text())["results"]}
    knn = np.asarray(rows["knn"]["confusion"])
    assert knn.shape == (C, C) and knn.sum() == N_TEST
    assert knn.tolist() == skm.confusion_matrix(y, saved["knn/backbone/predicted"], labels=range(C)).tolist()
    linear = np.asarray(rows["linear"]["confusion"])
    assert linear.shape == (3, C, C)
    for seed in range(3):
        pred = saved[f"linear/backbone/seed{seed}/predicted"]
        assert linear[seed].tolist() == skm.confusion_matrix(y, pred, labels=range(C)).tolist()


def test_low_shot_subsets_are_class_balanced_and_seeded():
    labels = np.repeat(np.arange(4), [40, 20, 10, 3])
    a = balanced_fraction(labels, 0.1, seed=1)
    assert np.bincount(labels[a], minlength=4).tolist() == [4, 2, 1, 1]
    assert np.array_equal(a, balanced_fraction(labels, 0.1, seed=1))
    assert not np.array_equal(a, balanced_fraction(labels, 0.1, seed=2))
    fit, held = holdout_split(labels, 0.25, seed=0)
    assert len(np.intersect1d(fit, held)) == 0 and len(fit) + len(held) == len(labels)
    assert set(labels[fit]) == {0, 1, 2, 3}


def test_low_shot_shrinks_only_the_training_split(store, tmp_path, capsys):
    report = tmp_path / "r.json"
    code, _, _ = _run(capsys, "probe", store, "--view", VIEW, "--knn", "--low-shot", "0.2", "--quiet",
                      "--report", report)
    assert code == 0
    r = json.loads(report.read_text())["results"][0]
    assert r["n_train"] == 30 and r["n_test"] == N_TEST           # 50 per class -> 10 per class


@pytest.mark.slow
def test_test_labels_take_no_part_in_selection(tmp_path, capsys):
    x, y, splits = _data(seed=4)
    y_shuffled = y.copy()
    y_shuffled[N_TRAIN:] = np.random.default_rng(0).permutation(y[N_TRAIN:])
    chosen = []
    for name, labels in (("a", y), ("b", y_shuffled)):
        make_synthetic_store(tmp_path / name, x, labels, splits, view=VIEW)
        report = tmp_path / f"{name}.json"
        _run(capsys, "probe", tmp_path / name, "--view", VIEW, "--linear", "--epochs", "4", "--batch-size", "64",
             "--lr", "0.001", "--lr", "0.01", "--quiet", "--report", report)
        chosen.append(json.loads(report.read_text())["results"][0]["params"]["selected"])
    assert chosen[0] == chosen[1]


@pytest.mark.slow
def test_scale_rows_use_the_exported_aggregates(store, scale_run, tmp_path, capsys):
    report = tmp_path / "r.json"
    code, _, err = _run(capsys, "probe", store, "--view", VIEW, "--knn", "--linear", "--finetune", "--scale",
                        scale_run, *FAST, "--report", report)
    assert code == 0, err
    rows = {(r["probe"], r["features"]): r for r in json.loads(report.read_text())["results"]}
    assert set(rows) == {("knn", "backbone"), ("linear", "backbone"), ("knn", "scale"), ("scale_linear", "scale"),
                         ("scale_ft", "scale")}
    assert "SET" in rows[("knn", "scale")]["params"]["representation"]
    assert all(r["top1"] >= 95.0 for r in rows.values()), {key: r["top1"] for key, r in rows.items()}
    opened = FeatureStore.open(store)
    group = f"aggregates/{scale_run.name}/{VIEW}"
    assert opened.has_row_group(group) and opened.row_group(group).done().all()      # computed on the fly
    # SCALE_kNN really ran on the stored clips and SET tokens (SCALE §4.1): recompute its top-1 from
    # them with numpy: mean over clips of [C_i, SET], centred by the training mean, l2, DINO's vote.
    idx = np.arange(N_TRAIN + N_TEST)
    tokens = opened.row_group(group).read("set_token", idx).astype(np.float64)
    clips = opened.view(VIEW).read_features(idx).astype(np.float64)
    y = opened.labels()
    video = np.concatenate([clips.mean(axis=1), tokens], axis=1)
    video = video - video[:N_TRAIN].mean(axis=0)
    video /= np.linalg.norm(video, axis=1, keepdims=True)
    sims = video[N_TRAIN:] @ video[:N_TRAIN].T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :20]
    votes = np.zeros((N_TEST, C))
    np.add.at(votes, (np.repeat(np.arange(N_TEST), 20), y[:N_TRAIN][top].ravel()),
              np.exp(np.take_along_axis(sims, top, axis=1) / 0.07).ravel())
    assert rows[("knn", "scale")]["top1"] == pytest.approx((votes.argmax(1) == y[N_TRAIN:]).mean() * 100)


def _one_line_error(code, err, *words):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_error_split_without_labels(tmp_path, capsys):
    x, y, splits = _data(n_train=20, n_test=10)
    y[20:] = -1                                                    # the test split is unlabelled
    make_synthetic_store(tmp_path / "s", x, y, splits, view=VIEW, classes=["a", "b", "c"])
    code, _, err = _run(capsys, "probe", tmp_path / "s", "--view", VIEW, "--knn")
    _one_line_error(code, err, "--test-split", "test", "no labelled videos")


def test_error_missing_view_and_not_a_store(store, tmp_path, capsys):
    code, _, err = _run(capsys, "probe", store, "--view", "random16", "--knn")
    _one_line_error(code, err, "random16", VIEW)
    code, _, err = _run(capsys, "probe", tmp_path, "--knn")
    _one_line_error(code, err, "not a vssl feature store")
    code, _, err = _run(capsys, "probe", store, "--view", VIEW, "--knn", "--low-shot", "1.5")
    _one_line_error(code, err, "--low-shot")
    code, _, err = _run(capsys, "probe", store, "--view", VIEW, "--finetune")
    _one_line_error(code, err, "--scale")
    code, _, err = _run(capsys, "probe", store, "--view", VIEW, "--linear", "--precision", "fp16")
    _one_line_error(code, err, "--precision")


def test_error_scale_run_of_another_backbone(scale_run, tmp_path, capsys):
    x, y, splits = _data()
    spec = BackboneSpec(name="videomae-b", embed_dim=D, frames=16, stride=4, size=224, mean=(0.5,) * 3,
                        std=(0.5,) * 3)
    other = FeatureStore.create(tmp_path / "other", spec, [VideoEntry(f"v{i}.mp4", int(y[i]), splits[i])
                                                            for i in range(len(y))], ["jump", "run", "swim"])
    other.create_view(VIEW, num_clips=K, spec={"sampler": "synthetic"})
    for a, b in other.chunk_ranges():
        other.write_videos(np.arange(a, b), {VIEW: (x[a:b], uniform_boxes(b - a, K))}, num_frames=[64] * (b - a),
                           fps=[25.0] * (b - a), errors=[None] * (b - a))
    code, _, err = _run(capsys, "probe", tmp_path / "other", "--view", VIEW, "--knn", "--scale", scale_run)
    _one_line_error(code, err, "synthetic", "videomae-b")
    assert not FeatureStore.open(tmp_path / "other").has_row_group(f"aggregates/{scale_run.name}/{VIEW}")


def _table_rows(capsys, store, config, *flags) -> dict[str, dict]:
    code, out, err = _run(capsys, "probe", store, "--config", config, "--json", "--quiet", "--min-steps", "0",
                          "--holdout-min", "0", *flags)
    assert code == 0, err
    return {r["probe"]: r["params"] for r in json.loads(out)["results"]}


def test_a_probe_table_sets_that_probe_alone(store, tmp_path, capsys):
    """``[probe.knn]`` and ``[probe.linear]`` set their probe only; flat keys of the file and flags
    keep setting every probe that has them; a table wins over the flat keys of the file."""
    config = tmp_path / "probe.toml"
    config.write_text(f'[probe]\nview = "{VIEW}"\nepochs = 4\nbatch-size = 64\n\n[probe.knn]\nk = 3\n'
                      'temperature = 0.5\n\n[probe.linear]\nsolver = "minibatch"\nlrs = [0.02]\nbatch-size = 32\n')
    rows = _table_rows(capsys, store, config, "--weight-decay", "0.0001")
    assert set(rows) == {"knn", "linear"}                     # each table enables its probe
    assert (rows["knn"]["k"], rows["knn"]["temperature"]) == (3, 0.5)
    assert rows["linear"]["lrs"] == [0.02] and rows["linear"]["batch_size"] == 32            # table > flat key
    assert rows["linear"]["epochs"] == 4 and rows["linear"]["weight_decays"] == [0.0001]   # flat key, flag


def test_flags_win_over_the_probe_tables(store, tmp_path, capsys):
    """Flags > file > defaults: a flag sets its field in a ``[probe.NAME]`` table's probe too, even
    a flag that repeats the default (``--k 20``)."""
    config = tmp_path / "probe.toml"
    config.write_text(f'[probe]\nview = "{VIEW}"\n\n[probe.knn]\nk = 3\ntemperature = 0.5\n\n'
                      '[probe.linear]\nsolver = "minibatch"\nlrs = [0.02]\nbatch-size = 32\nepochs = 2\n')
    rows = _table_rows(capsys, store, config, "--k", "20", "--lr", "0.01", "--batch-size", "64", "--epochs", "3")
    assert (rows["knn"]["k"], rows["knn"]["temperature"]) == (20, 0.5)                 # the flag, the table
    assert (rows["linear"]["lrs"], rows["linear"]["batch_size"], rows["linear"]["epochs"]) == ([0.01], 64, 3)


def test_a_probe_table_of_no_probe_or_an_unknown_key_is_one_line(store, tmp_path, capsys):
    config = tmp_path / "probe.toml"
    for text, what in (("[probe.svm]\nk = 3\n", r"table probe.svm names no probe"),
                       ("[probe.knn]\nkk = 3\n", r"table probe.knn has unknown key\(s\) kk")):
        config.write_text(text)
        code, _, err = _run(capsys, "probe", store, "--config", config)
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert re.search(what, err), err


def test_a_probe_table_value_of_the_wrong_type_is_one_line_when_loaded(tmp_path, capsys):
    """Checked when the config is loaded: the error comes before the (here missing) store is opened."""
    config = tmp_path / "probe.toml"
    for text, what in (('[probe.knn]\nk = "three"\n', r"probe\.knn config: k='three' must be an integer"),
                       ('[probe.linear]\nlrs = ["a"]\n',
                        r"probe\.linear config: lrs=\('a',\) must be a list of floats"),
                       ("[probe.mlp]\nbatchnorm = 1\n", r"probe\.mlp config: batchnorm=1 must be true or false")):
        config.write_text(text)
        code, _, err = _run(capsys, "probe", tmp_path / "no-store", "--config", config)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert re.search(what, err), err
