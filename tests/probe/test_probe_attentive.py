"""`vssl probe --attentive`: V-JEPA 2's attentive probe on cached token views and plain views.

The probe wins where only attention can (the class is the content of the one marked token among
tokens whose mean is the same for every video); a video's views (crops) are scored apart and
their softmaxes averaged; ragged videos are padded and masked; training reads --train-view; the
held-out selection never sees the test split; a released probe (--attentive-from) is evaluated
as it is. References: hand-assembled inputs through the released model, numpy formulas.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from vssl.features_store.synthetic import make_synthetic_store, uniform_boxes
from vssl.probe.attentive import TokenInputs, heads_for, sincos_positions
from vssl.probe.attentive_pooler import AttentiveClassifier

from tests.probe_helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

POOLED, TOKENS = "uniform2x1", "uniform2x1.tokens1x2x2"
N_TRAIN, N_TEST, C, D = 80, 40, 4, 16
FIT = ["--device", "cpu", "--precision", "fp32", "--quiet", "--holdout-min", "0"]


def _write_view(store, name, x, spec, clip_shape=None):
    """Add view ``name`` holding ``x`` [n, K, ...] for every video of ``store``."""
    k = x.shape[1]
    store.create_view(name, num_clips=k, spec=spec, dtype="float32", clip_shape=clip_shape)
    boxes = uniform_boxes(len(x), k)
    for start, stop in store.chunk_ranges():
        idx = np.arange(start, stop)
        store.write_videos(idx, {name: (x[start:stop], boxes[start:stop])}, num_frames=[64] * len(idx),
                           fps=[25.0] * len(idx), errors=[None] * len(idx))


def _marked_tokens(path, seed=0, shuffle_test=False):
    """Each clip holds C tokens: every class's vector once, in random order, the true class's token
    marked in dimension 0. The mean of a clip's tokens is the same for every video (the pooled view
    says nothing); attending to the marked token reads the class."""
    rng = np.random.default_rng(seed)
    n, k = N_TRAIN + N_TEST, 2
    y = np.arange(n) % C
    vectors = 2 * rng.normal(size=(C, D))
    vectors[:, 0] = 0
    x = np.zeros((n, k, C, D))
    for i in range(n):
        for j in range(k):
            order = rng.permutation(C)
            x[i, j] = vectors[order]
            x[i, j, np.flatnonzero(order == y[i])[0], 0] = 3.0
    x = (x + 0.1 * rng.normal(size=x.shape)).astype(np.float32)
    if shuffle_test:
        y = y.copy()
        y[N_TRAIN:] = np.random.default_rng(1).permutation(y[N_TRAIN:])
    store = make_synthetic_store(path, x.mean(axis=2), y, ["train"] * N_TRAIN + ["test"] * N_TEST, view=POOLED,
                                 chunk_videos=60, dtype="float32")
    _write_view(store, TOKENS, x, {"sampler": "synthetic", "clips": k}, clip_shape=(C, D))
    return path


def _rows(report):
    return {r["probe"]: r for r in json.loads(report.read_text())["results"]}


@pytest.mark.slow
def test_attentive_reads_the_marked_token_where_a_pooled_linear_probe_cannot(tmp_path, capsys):
    store = _marked_tokens(tmp_path / "s")
    config = tmp_path / "probe.toml"
    config.write_text("[probe.attentive]\ndepth = 2\n")
    code, _, err = run_cli(capsys, "probe", store, "--view", TOKENS, "--attentive", "--config", config, "--lr", "3e-3",
                           "--weight-decay", "0.01", "--weight-decay", "0.1", "--epochs", "10", "--min-steps", "100",
                           "--seeds", "2", *FIT, "--report", tmp_path / "a.json")
    assert code == 0, err
    attentive = _rows(tmp_path / "a.json")["attentive"]
    code, _, err = run_cli(capsys, "probe", store, "--view", POOLED, "--linear", *FIT, "--report", tmp_path / "l.json")
    assert code == 0, err
    linear = _rows(tmp_path / "l.json")["linear"]
    assert attentive["top1"] >= 75 and linear["top1"] <= 45, (attentive["top1"], linear["top1"])
    params = attentive["params"]
    assert attentive["features"] == "backbone" and params["depth"] == 2 and params["heads_used"] == 16
    chosen = params["selected"]
    assert chosen["lr"] == 3e-3 and chosen["weight_decay"] in (0.01, 0.1) and chosen["held_out"] > 0
    assert params["head"].startswith(f"lr {chosen['lr']:g}, wd {chosen['weight_decay']:g}")
    assert params["sample"].startswith(f"{C} token(s) per clip")
    assert len(attentive["seeds"]["top1"]) == 2 and len(params["selected_per_seed"]) == 2 and attentive["ci"]


def test_the_defaults_are_the_released_grid_and_schedule():
    from vssl.probe import AttentiveConfig

    cfg = AttentiveConfig()
    assert cfg.lrs == (5e-3, 3e-3, 1e-3, 3e-4, 1e-4) and cfg.weight_decays == (0.01, 0.1, 0.4, 0.8)
    assert len(cfg.grid()) == 20 and cfg.epochs == 20 and cfg.warmup == 0.0 and cfg.optimizer == "adamw"
    assert (cfg.depth, cfg.num_heads, cfg.use_pos_embed) == (4, 16, False)


def test_heads_divide_the_width():
    assert [heads_for(16, w) for w in (768, 1024, 12, 20, 7)] == [16, 16, 12, 10, 7]


def test_temporal_position_is_mae_sincos_of_the_clip_added_to_each_of_its_tokens():
    dim, n = 8, 3
    omega = 1.0 / 10000 ** (np.arange(dim // 2) / (dim / 2.0))          # MAE get_1d_sincos_pos_embed
    angle = np.arange(n)[:, None] * omega[None]
    np.testing.assert_allclose(sincos_positions(n, dim).numpy(), np.concatenate([np.sin(angle), np.cos(angle)], 1),
                               atol=1e-6)
    x = np.random.default_rng(0).normal(size=(2, n, 2, dim)).astype(np.float32)      # [videos, clips, tokens, D]
    gen, cpu = torch.Generator().manual_seed(0), torch.device("cpu")
    plain = next(TokenInputs(x, np.array([0, 1])).batches(np.arange(2), 8, gen, cpu))[0][0]
    placed = next(TokenInputs(x, np.array([0, 1]), pos_embed=True).batches(np.arange(2), 8,
                                                                           torch.Generator().manual_seed(0), cpu))[0][0]
    expected = np.repeat(np.concatenate([np.sin(angle), np.cos(angle)], 1), 2, axis=0)     # clip l's, per token
    np.testing.assert_allclose((placed - plain).numpy(), np.broadcast_to(expected, placed.shape), atol=1e-5)


def _released(path, width, classes, seed=0):
    """A vjepa2-style probe checkpoint of one random classifier (DDP's ``module.`` prefix, a list of
    heads, as eval.py saves it) and the classifier."""
    torch.manual_seed(seed)
    model = AttentiveClassifier(width, classes, num_heads=16, depth=2).eval()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"classifiers": [state], "epoch": 1}, path)
    return model


def test_released_probe_scores_each_crop_of_a_video_and_averages_their_softmax(tmp_path, capsys):
    """uniform:2x3 with 2 tokens a clip: crop s of a video is its clips s and 3 + s (time-major),
    their tokens concatenated in time order; a video's score is the mean of its 3 crops' softmax."""
    rng = np.random.default_rng(0)
    n, view = 12, "uniform2x3.tokens1x1x2"
    x = rng.normal(size=(n, 6, 2, D)).astype(np.float32)
    y = np.arange(n) % 3
    store = make_synthetic_store(tmp_path / "s", x.mean(axis=2), y, ["train"] * 6 + ["test"] * 6, view="uniform2x3",
                                 dtype="float32")
    spec = {"sampler": "uniform", "frames": 16, "stride": 4, "size": 224, "temporal": 2, "spatial": 3}
    _write_view(store, view, x, spec, clip_shape=(2, D))
    model = _released(tmp_path / "probe.pt", D, 3)
    code, _, err = run_cli(capsys, "probe", tmp_path / "s", "--view", view, "--attentive-from", tmp_path / "probe.pt",
                           *FIT, "--report", tmp_path / "r.json", "--predictions", tmp_path / "p.npz")
    assert code == 0, err
    with torch.no_grad():
        expected = np.stack([np.mean([model(torch.from_numpy(x[v, [s, 3 + s]].reshape(1, 4, D))).softmax(-1)[0].numpy()
                                      for s in range(3)], axis=0) for v in range(6, n)])
    np.testing.assert_allclose(np.load(tmp_path / "p.npz")["attentive/backbone/scores"], expected, atol=1e-5)
    row = _rows(tmp_path / "r.json")["attentive"]
    assert row["params"]["trained"] is False and row["params"]["selected"] is None
    assert "released probe" in row["params"]["head"] and "3 crops averaged" in row["params"]["sample"]


@pytest.mark.slow
@pytest.mark.parametrize("named", [False, True])
def test_a_transformers_checkpoint_gives_its_own_logits_on_the_cached_tokens(tmp_path, capsys, named):
    """A saved transformers VJEPA2ForVideoClassification (tiny, random weights, 4 heads) evaluated by
    --attentive-from: each video's score is the mean over its crops of softmax(classifier(pooler(tokens)))
    computed by transformers on the same concatenated tokens; where the checkpoint names its classes
    (``id2label``, here in another order than the store's), each store class reads its named output."""
    transformers = pytest.importorskip("transformers")
    from tests.backbone_helpers import randomize_

    config = transformers.VJEPA2Config(hidden_size=D, num_hidden_layers=1, num_attention_heads=4, crop_size=32,
                                       frames_per_clip=2, patch_size=16, tubelet_size=2, pred_hidden_size=16,
                                       pred_num_hidden_layers=1, pred_num_attention_heads=2, num_pooler_layers=3,
                                       num_labels=3)
    order = [2, 0, 1] if named else [0, 1, 2]          # the checkpoint's output of each store class
    if named:
        stored = ["class0", "class1", "class2"]            # make_synthetic_store's class names
        config.id2label = {order[c]: name for c, name in enumerate(stored)}
        config.label2id = {name: i for i, name in config.id2label.items()}
    config._attn_implementation = "eager"
    hf = randomize_(transformers.VJEPA2ForVideoClassification(config), seed=4).eval()
    hf.save_pretrained(tmp_path / "hf")
    rng = np.random.default_rng(2)
    n, view = 8, "uniform2x3.tokens1x1x2"
    x = rng.normal(size=(n, 6, 2, D)).astype(np.float32)
    store = make_synthetic_store(tmp_path / "s", x.mean(axis=2), np.arange(n) % 3, ["train"] * 2 + ["test"] * 6,
                                 view="uniform2x3", dtype="float32")
    spec = {"sampler": "uniform", "frames": 16, "stride": 4, "size": 224, "temporal": 2, "spatial": 3}
    _write_view(store, view, x, spec, clip_shape=(2, D))
    code, _, err = run_cli(capsys, "probe", tmp_path / "s", "--view", view, "--attentive-from", tmp_path / "hf",
                           *FIT, "--predictions", tmp_path / "p.npz")
    assert code == 0, err
    with torch.no_grad():
        crops = [hf.classifier(hf.pooler(torch.from_numpy(x[2:, [s, 3 + s]].reshape(6, 4, D)))).softmax(-1)
                 for s in range(3)]
    np.testing.assert_allclose(np.load(tmp_path / "p.npz")["attentive/backbone/scores"],
                               torch.stack(crops).mean(0).numpy()[:, order], atol=1e-5)
    if named:  # a store whose classes the checkpoint does not name: one line
        hf.config.id2label = {0: "a", 1: "b", 2: "c"}
        hf.save_pretrained(tmp_path / "hf")
        capsys.readouterr()
        code, _, err = run_cli(capsys, "probe", tmp_path / "s", "--view", view, "--attentive-from", tmp_path / "hf",
                               *FIT)
        assert code == 2 and "id2label" in err and len(err.strip().splitlines()) == 1, err


def test_released_probe_on_a_ragged_plain_view_equals_each_video_alone(tmp_path, capsys):
    """A plain view's clips are the tokens; videos of different lengths are padded in a batch and
    the padding masked: each video's score equals the model on that video alone."""
    rng = np.random.default_rng(1)
    counts = [3, 7, 1, 5, 2, 9, 4, 6]
    clips = [rng.normal(size=(k, D)).astype(np.float32) for k in counts]
    y = np.arange(len(counts)) % 2
    make_synthetic_store(tmp_path / "s", clips, y, ["train"] * 2 + ["test"] * 6, view="dense", dtype="float32")
    model = _released(tmp_path / "probe.pt", D, 2, seed=3)
    code, _, err = run_cli(capsys, "probe", tmp_path / "s", "--view", "dense", "--attentive-from",
                           tmp_path / "probe.pt", *FIT, "--predictions", tmp_path / "p.npz")
    assert code == 0, err
    with torch.no_grad():
        expected = np.concatenate([model(torch.from_numpy(c[None])).softmax(-1).numpy() for c in clips[2:]])
    np.testing.assert_allclose(np.load(tmp_path / "p.npz")["attentive/backbone/scores"], expected, atol=1e-5)


def test_mistakes_are_one_line(tmp_path, capsys):
    store = make_synthetic_store(tmp_path / "s", np.zeros((4, 2, C, D), np.float32).mean(axis=2), np.arange(4) % 2,
                                 ["train", "train", "test", "test"], view=POOLED)
    _write_view(store, TOKENS, np.zeros((4, 2, C, D), np.float32), {"sampler": "synthetic", "clips": 2}, (C, D))
    code, _, err = run_cli(capsys, "probe", tmp_path / "s", "--view", POOLED, "--attentive-from", tmp_path / "no.pt",
                           *FIT)
    assert code == 2 and "--attentive-from" in err and "no such file" in err
    code, _, err = run_cli(capsys, "probe", tmp_path / "s", "--view", POOLED, "--attentive-from", tmp_path / "no.pt",
                           "--scale", tmp_path / "run", *FIT)
    assert code == 2 and "no SCALE row" in err and "without --scale" in err
    code, _, err = run_cli(capsys, "probe", tmp_path / "s", "--view", TOKENS, "--attentive", "--train-view", POOLED,
                           "--train-clips", "1", *FIT)
    assert code == 2 and f"--train-view {POOLED} holds clips of shape ({D},)" in err and f"({C}, {D})" in err
    code, _, err = run_cli(capsys, "probe", tmp_path / "s", "--view", TOKENS, "--attentive", "--linear", *FIT)
    assert code == 2 and f"holds {C} tokens per clip" in err and f"'{POOLED}'" in err and "--attentive" in err


def test_selection_never_reads_the_test_split(tmp_path, capsys):
    """The same grid point, epoch and held-out score whether or not the test labels are shuffled."""
    chosen = []
    for name, shuffle in (("a", False), ("b", True)):
        store = _marked_tokens(tmp_path / name, seed=2, shuffle_test=shuffle)
        code, _, err = run_cli(capsys, "probe", store, "--view", TOKENS, "--attentive", "--lr", "1e-3", "--lr", "1e-2",
                               "--weight-decay", "0.01", "--epochs", "3", "--min-steps", "0", "--batch-size", "16",
                               *FIT, "--report", tmp_path / f"{name}.json")
        assert code == 0, err
        chosen.append(_rows(tmp_path / f"{name}.json")["attentive"]["params"]["selected"])
    assert chosen[0] == chosen[1] and chosen[0]["held_out"] > 0


def test_a_probe_flag_keeps_its_table(tmp_path):
    """``--attentive`` (or ``--knn``) with a ``[probe.attentive]`` table in --config: the flag enables
    the probe and the table still sets it (the flag once replaced the table of its name)."""
    from vssl.probe.config import ProbeConfig

    config = tmp_path / "probe.toml"
    config.write_text("[probe.attentive]\ndepth = 2\nuse-pos-embed = true\n\n[probe.knn]\nk = 3\n")
    cfg = ProbeConfig.load(config, {"attentive": True, "knn": True, "lr": (3e-3,)})
    attentive = cfg.config_for("attentive")
    assert (attentive.depth, attentive.use_pos_embed, attentive.lrs) == (2, True, (3e-3,))
    assert cfg.config_for("knn").k == 3 and set(cfg.enabled()) == {"knn", "attentive"}


@pytest.mark.slow
def test_it_trains_on_the_train_view(tmp_path, capsys):
    """Training videos show their class in --train-view but the next class's in --view (test videos
    their own): fit on --view the probe learns the shifted map (near 0%), on --train-view the right one."""
    rng = np.random.default_rng(0)
    n, d = N_TRAIN + N_TEST, 8
    y = np.arange(n) % C
    means = 4 * rng.normal(size=(C, d))
    shown = np.where(np.arange(n) < N_TRAIN, (y + 1) % C, y)
    x_eval = (rng.normal(size=(n, 3, d)) + means[shown][:, None]).astype(np.float32)
    store = make_synthetic_store(tmp_path / "s", x_eval, y, ["train"] * N_TRAIN + ["test"] * N_TEST, view="uniform3x1",
                                 dtype="float32")
    _write_view(store, "random16", (rng.normal(size=(n, 16, d)) + means[y][:, None]).astype(np.float32),
                {"sampler": "synthetic", "clips": 16})
    tops = {}
    for name, extra in (("plain", []), ("viewed", ["--train-view", "random16"])):
        code, _, err = run_cli(capsys, "probe", tmp_path / "s", "--view", "uniform3x1", "--attentive", "--lr", "1e-2",
                               "--weight-decay", "0.01", "--epochs", "4", "--min-steps", "80", *FIT, *extra,
                               "--report", tmp_path / f"{name}.json")
        assert code == 0, err
        tops[name] = _rows(tmp_path / f"{name}.json")["attentive"]
    assert tops["plain"]["top1"] < 15 and tops["viewed"]["top1"] > 85, (tops["plain"]["top1"], tops["viewed"]["top1"])
    assert tops["viewed"]["params"]["train_view"] == "random16" and tops["viewed"]["params"]["train_clips"] == 8
    assert "training: 8 random clips of random16" in tops["viewed"]["params"]["sample"]


@pytest.mark.slow
def test_the_temporal_position_tells_the_order_of_the_clips(tmp_path, capsys):
    """The class is which of a video's two clips is marked: the same set of clips either way, so the
    probe is at chance without a position and learns it with ``use_pos_embed``."""
    rng = np.random.default_rng(0)
    n, d = N_TRAIN + N_TEST, 8
    y = np.arange(n) % 2
    x = 0.1 * rng.normal(size=(n, 2, d))
    x[np.arange(n), y, 0] += 3.0
    make_synthetic_store(tmp_path / "s", x.astype(np.float32), y, ["train"] * N_TRAIN + ["test"] * N_TEST,
                         view="uniform2x1", dtype="float32")
    tops = {}
    for flag in ("false", "true"):
        config = tmp_path / f"{flag}.toml"
        config.write_text(f"[probe.attentive]\ndepth = 1\nuse-pos-embed = {flag}\n")
        code, _, err = run_cli(capsys, "probe", tmp_path / "s", "--view", "uniform2x1", "--config", config, "--lr",
                               "1e-2", "--weight-decay", "0.01", "--epochs", "4", "--min-steps", "60", *FIT,
                               "--report", tmp_path / f"{flag}.json")
        assert code == 0, err
        tops[flag] = _rows(tmp_path / f"{flag}.json")["attentive"]["top1"]
    assert tops["false"] <= 65 and tops["true"] >= 90, tops


def test_a_step_in_micro_batches_is_the_whole_batch_step(monkeypatch):
    """Long samples are trained in parts of at most ``step_tokens`` tokens, their gradients accumulated:
    the trained heads equal those trained on whole batches (only the memory of a step changes)."""
    from vssl.probe.attentive import AttentiveConfig, train_attentive

    seen = []
    forward = AttentiveClassifier.forward
    monkeypatch.setattr(AttentiveClassifier, "forward",
                        lambda self, x, *a, **k: seen.append(x.shape[0] * x.shape[1]) or forward(self, x, *a, **k))

    rng = np.random.default_rng(0)
    labels = np.arange(24) % 3
    tokens = rng.normal(size=(24, 2, 4, 8)).astype(np.float32)       # [videos, clips, tokens, D]
    tokens[np.arange(24), 0, 0] += 3 * np.eye(8, dtype=np.float32)[labels]
    cfg = AttentiveConfig(lrs=(1e-3,), weight_decays=(0.01,), epochs=2, batch_size=8, min_steps=0, holdout=0.0,
                          depth=2, num_heads=2, device="cpu", precision="fp32")
    whole, _ = train_attentive(tokens, labels, np.arange(24), 3, cfg)
    assert max(seen) == 8 * 8                                           # 8 samples of 2 clips x 4 tokens
    seen.clear()
    parts, _ = train_attentive(tokens, labels, np.arange(24), 3, dataclasses.replace(cfg, step_tokens=16))
    assert max(seen) == 16                                              # 2 samples a part
    for a, b in zip(whole.model.state_dict().values(), parts.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _placed_tokens(path, seed=0):
    """Each clip is a 1x2x2 token grid: the same object vector in one cell, background in the others; the
    class is the cell. A clip's tokens, as a set, are the same for every class: only their place tells."""
    rng = np.random.default_rng(seed)
    n, k, cells = N_TRAIN + N_TEST, 2, 4
    y = np.arange(n) % C
    thing = 2 * rng.normal(size=D)
    x = 0.3 * rng.normal(size=(n, k, cells, D))
    x[np.arange(n), :, y] += thing
    store = make_synthetic_store(path, x.mean(axis=2).astype(np.float32), y, ["train"] * N_TRAIN + ["test"] * N_TEST,
                                 view=POOLED, chunk_videos=60, dtype="float32")
    store.create_view(TOKENS, num_clips=k, spec={"sampler": "synthetic", "clips": k}, dtype="float32",
                      clip_shape=(cells, D), record={"tokens": "1x2x2", "token_grid": [1, 2, 2]})
    boxes = uniform_boxes(n, k)
    for start, stop in store.chunk_ranges():
        idx = np.arange(start, stop)
        store.write_videos(idx, {TOKENS: (x[start:stop].astype(np.float32), boxes[start:stop])},
                           num_frames=[64] * len(idx), fps=[25.0] * len(idx), errors=[None] * len(idx))
    return path


@pytest.mark.slow
def test_token_positions_tell_the_probe_where_a_token_lies(tmp_path, capsys):
    """A conv net's tokens do not carry their place: the released probe, blind to it, is at chance where the
    class is a place; ``token_positions`` adds each token's cell on the recorded grid, and it reads it."""
    store = _placed_tokens(tmp_path / "s")
    top1 = {}
    for positions in ("false", "true"):
        config = tmp_path / f"{positions}.toml"
        config.write_text(f"[probe.attentive]\ndepth = 2\ntoken_positions = {positions}\n")
        code, _, err = run_cli(capsys, "probe", store, "--view", TOKENS, "--attentive", "--config", config,
                               "--lr", "3e-3", "--weight-decay", "0.01", "--epochs", "10", "--min-steps", "100",
                               *FIT, "--report", tmp_path / f"{positions}.json")
        assert code == 0, err
        top1[positions] = _rows(tmp_path / f"{positions}.json")["attentive"]["top1"]
    assert top1["false"] <= 45 and top1["true"] >= 75, top1
    config = tmp_path / "pooled.toml"
    config.write_text("[probe.attentive]\ntoken_positions = true\n")
    code, _, err = run_cli(capsys, "probe", store, "--view", POOLED, "--attentive", "--config", config, *FIT)
    assert code == 2 and "token_positions" in err and len(err.strip().splitlines()) == 1


def _add_token_view(store_path, name, grid, sampler, k=4):
    from vssl.features_store import FeatureStore

    store = FeatureStore.open(store_path, "r+")
    n, cells = store.num_videos, int(np.prod(grid))
    store.create_view(name, num_clips=k, spec={"sampler": sampler, "clips": k}, dtype="float32",
                      clip_shape=(cells, D), record={"token_grid": list(grid)})
    x = np.random.default_rng(0).normal(size=(n, k, cells, D)).astype(np.float32)
    boxes = uniform_boxes(n, k)
    for start, stop in store.chunk_ranges():
        idx = np.arange(start, stop)
        store.write_videos(idx, {name: (x[start:stop], boxes[start:stop])}, num_frames=[64] * len(idx),
                           fps=[25.0] * len(idx), errors=[None] * len(idx))


def test_a_train_view_must_match_the_grid_and_the_time_order_it_is_read_by(tmp_path, capsys):
    """A training view of as many tokens on another grid would give its tokens the probed grid's places; a random
    view's clips, stored in the order drawn, would give use_pos_embed places that are not time: both refused."""
    store = _placed_tokens(tmp_path / "s")
    _add_token_view(store, "random4.tokens1x4x1", (1, 4, 1), "random")
    _add_token_view(store, "random4.tokens1x2x2", (1, 2, 2), "random")
    code, _, err = run_cli(capsys, "probe", store, "--view", TOKENS, "--attentive", "--train-view",
                           "random4.tokens1x4x1", "--train-clips", "2", *FIT)
    assert code == 2 and "grid" in err and len(err.strip().splitlines()) == 1, err
    config = tmp_path / "pos.toml"
    config.write_text("[probe.attentive]\nuse_pos_embed = true\n")
    code, _, err = run_cli(capsys, "probe", store, "--view", TOKENS, "--attentive", "--config", config,
                           "--train-view", "random4.tokens1x2x2", "--train-clips", "2", *FIT)
    assert code == 2 and "use_pos_embed" in err and len(err.strip().splitlines()) == 1, err
