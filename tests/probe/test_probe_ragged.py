"""Probes on a ragged view (a variable number of clips per video), against numpy on the stored clips.

Video-level rows average over each video's *real* clips only: k-NN embeds the mean of its
l2-normalized clips (SCALE k-NN: the mean of [C_i ⊕ SET], centred by the training mean), per-clip
heads average their softmax over its real clips, set probes see its real clips under a padding
mask. A ragged view whose videos all have K clips gives the fixed view's rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vssl.aggregate import ScaleConfig, ScaleModel, export, train
from vssl.features_store import FeatureStore
from vssl.features_store.ragged import RaggedClips
from vssl.features_store.synthetic import make_synthetic_store
from vssl.probe import KnnConfig, LinearConfig, ProbeRequest, TransformerConfig, run_probes
from vssl.probe.data import load_split
from vssl.probe.inputs import ClipInputs, SetInputs
from vssl.probe.knn import prepare
from vssl.probe.mlp import MlpConfig
from vssl.probe.scale import ScaleFeatures
from vssl.probe.sources import BackboneSource, ProbeData, ScaleSource
from vssl.probe.transformer import SetClassifier, SetGrid, clip_statistics

pytestmark = pytest.mark.usefixtures("one_thread")

N, N_TRAIN, D = 30, 21, 6
FIT = dict(epochs=2, batch_size=8, device="cpu", precision="fp32", lrs=(0.01,), weight_decays=(1e-4,),
           min_steps=0, holdout_min=0)


def _clips(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(N) % 3
    counts = rng.integers(1, 9, size=N)
    centres = 2 * rng.normal(size=(3, D))
    return [(centres[y[i]] + rng.normal(size=(counts[i], D))).astype(np.float32) for i in range(N)], y


@pytest.fixture(scope="module")
def ragged(tmp_path_factory):
    """A ragged store (1..8 clips per video, float32) and a SCALE run trained on it, exported."""
    root = tmp_path_factory.mktemp("probe_ragged")
    feats, y = _clips()
    make_synthetic_store(root / "s", feats, y, ["train"] * N_TRAIN + ["test"] * (N - N_TRAIN), view="d",
                         classes=["a", "b", "c"], chunk_videos=8, dtype="float32")
    cfg = ScaleConfig(width=16, layers=1, heads=2, pred_hidden=16, target_hidden=16, proj_dim=8, epochs=1,
                      batch_size=8, device="cpu", precision="fp32", seed=0, set_size=2)
    train(root / "s", "d", root / "run", cfg, quiet=True)
    export(root / "s", root / "run", "d", quiet=True)
    return root, feats, y


def _l2(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _data(root, boxes=False, video_level=False):
    store = FeatureStore.open(root / "s")
    train_split = load_split(store, "d", "train", boxes=boxes, video_level=video_level)
    test_split = load_split(store, "d", "test", "--test-split", boxes=boxes, video_level=video_level)
    return store, ProbeData(train_split, test_split, ["a", "b", "c"])


@pytest.mark.slow
def test_splits_hold_every_real_clip_and_nothing_else(ragged):
    root, feats, _ = ragged
    _, data = _data(root, boxes=True)
    clips = data.train.features
    assert isinstance(clips, RaggedClips) and isinstance(data.train.boxes, RaggedClips)
    np.testing.assert_array_equal(clips.counts, [len(f) for f in feats[:N_TRAIN]])
    np.testing.assert_array_equal(clips.flat, np.concatenate(feats[:N_TRAIN]))
    sub = data.train.subset(np.array([4, 1]))                # low-shot subsets keep each video's clips
    np.testing.assert_array_equal(sub.features.flat, np.concatenate([feats[4], feats[1]]))


@pytest.mark.slow
@pytest.mark.parametrize("video_level", [False, True])
def test_backbone_knn_embeds_the_mean_of_each_videos_real_clips(ragged, video_level):
    root, feats, _ = ragged
    _, data = _data(root, video_level=video_level)
    tr, te, _ = BackboneSource().knn_embeddings(data, KnnConfig(device="cpu"))
    by_hand = np.stack([_l2(_l2(f.astype(np.float64)).mean(axis=0)) for f in feats])
    np.testing.assert_allclose(tr, by_hand[:N_TRAIN], atol=1e-6)
    np.testing.assert_allclose(te, by_hand[N_TRAIN:], atol=1e-6)


def test_scale_knn_and_clip_inputs_use_each_videos_real_clips_and_its_set_token(ragged):
    root, feats, _ = ragged
    store, data = _data(root)
    scale = ScaleFeatures.open(store, root / "run", "d", np.arange(N), quiet=True)
    source = ScaleSource(scale)
    tokens = store.row_group("aggregates/run/d").read("set_token", np.arange(N)).astype(np.float64)
    video = np.concatenate([np.stack([f.astype(np.float64).mean(axis=0) for f in feats]), tokens], axis=1)
    mu = video[:N_TRAIN].mean(axis=0)
    tr, te, _ = source.knn_embeddings(data, KnnConfig(device="cpu"))
    np.testing.assert_allclose(tr, _l2(video[:N_TRAIN] - mu), atol=1e-5)
    np.testing.assert_allclose(te, _l2(video[N_TRAIN:] - mu), atol=1e-5)
    # SCALE_linear's inputs: [C_i ⊕ SET] per real clip, [C_i ⊕ Ĉ_i ⊕ SET] with append_refined
    refined = store.ragged_group("aggregates/run/d.clips").read(np.arange(N))
    for append in (False, True):
        x, _ = source.clips(data.test, LinearConfig(append_refined=append))
        by_hand = np.concatenate([
            np.concatenate([feats[v]] + ([refined.features[v, :len(feats[v])]] if append else [])
                           + [np.repeat(tokens[v][None], len(feats[v]), 0)], axis=1)
            for v in range(N_TRAIN, N)])
        assert isinstance(x, RaggedClips)
        np.testing.assert_allclose(x.flat, by_hand, atol=1e-6)


def test_clip_heads_average_softmax_over_real_clips_and_train_on_each_clip_once(ragged):
    root, feats, y = ragged
    _, data = _data(root)
    torch.manual_seed(0)
    head = nn.Linear(D, 3)
    scores = ClipInputs(data.test.features, data.test.labels).predict(head, np.arange(N - N_TRAIN),
                                                                       torch.device("cpu"))
    w, b = head.weight.detach().double().numpy(), head.bias.detach().double().numpy()
    for j, v in enumerate(range(N_TRAIN, N)):
        logits = feats[v].astype(np.float64) @ w.T + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        np.testing.assert_allclose(scores[j], (p / p.sum(1, keepdims=True)).mean(0), atol=1e-6)
    inputs = ClipInputs(data.train.features, data.train.labels)
    want = sorted((c.tobytes(), int(y[v])) for v in range(N_TRAIN) for c in feats[v])
    assert inputs.num_samples(np.arange(N_TRAIN)) == len(want)
    bs = 7 if len(want) % 7 != 1 else 6              # no last batch of one (dropped for batch norm)
    seen = sorted((x.numpy().tobytes(), int(t)) for (xs,), ys in
                  inputs.batches(np.arange(N_TRAIN), bs, torch.Generator().manual_seed(0), torch.device("cpu"))
                  for x, t in zip(xs, ys))
    assert seen == want                               # every real clip once, with its video's label


def test_set_probes_score_each_video_alone_over_its_real_clips(ragged):
    root, feats, y = ragged
    _, data = _data(root, boxes=True)
    torch.manual_seed(0)
    cfg = ScaleConfig(width=16, layers=1, heads=2, dropout=0.0)
    stats = clip_statistics(data.train.features, np.arange(N_TRAIN))
    np.testing.assert_allclose(stats[0].numpy(), np.concatenate(feats[:N_TRAIN]).astype(np.float64).mean(0),
                               atol=1e-6)
    grid = SetGrid([SetClassifier(ScaleModel(cfg, D), D, 3, stats)]).eval()
    inputs = SetInputs(data.test.features, data.test.boxes, data.test.labels, per_clip=True, eval_block=3)
    scores = inputs.predict(grid, np.arange(N - N_TRAIN), torch.device("cpu"))
    for j in range(N - N_TRAIN):                    # each video alone, unpadded, no mask
        f = torch.from_numpy(data.test.features[[j]].flat)[None]
        b = torch.from_numpy(data.test.boxes[[j]].flat)[None]
        with torch.no_grad():
            probs = grid(f, b)[:, 0].softmax(-1).double().numpy()      # [k, C]
        np.testing.assert_allclose(scores[j, 0], probs.mean(0), atol=1e-5)
    # training: one sample per real clip with its video's label (padding is no sample)
    train_inputs = SetInputs(data.train.features, data.train.boxes, data.train.labels, per_clip=True)
    for xs, ys in train_inputs.batches(np.arange(N_TRAIN), 5, torch.Generator().manual_seed(0), torch.device("cpu")):
        out = grid(*xs)
        assert out.shape[0] == len(ys) == int(xs[2].sum())


@pytest.mark.slow
def test_a_ragged_view_of_k_clips_everywhere_probes_as_the_fixed_view(tmp_path):
    rng = np.random.default_rng(3)
    y = np.arange(N) % 3
    x = (2 * rng.normal(size=(3, D))[y][:, None] + rng.normal(size=(N, 4, D))).astype(np.float32)
    splits = ["train"] * N_TRAIN + ["test"] * (N - N_TRAIN)
    make_synthetic_store(tmp_path / "f", x, y, splits, view="v", classes=["a", "b", "c"], chunk_videos=8)
    make_synthetic_store(tmp_path / "r", list(x), y, splits, view="v", classes=["a", "b", "c"], chunk_videos=8)
    reports = [run_probes(ProbeRequest(store=tmp_path / s, view="v", knn=KnnConfig(device="cpu"),
                                       linear=LinearConfig(**FIT), mlp=MlpConfig(**FIT, hidden=8, out_dim=4),
                                       transformer=TransformerConfig(**FIT, width=16, layers=1), quiet=True))
               for s in ("f", "r")]
    for a, b in zip(*(r.results for r in reports)):
        assert (a.probe, a.features) == (b.probe, b.features)
        if a.probe == "transformer":                 # the same model, a padding mask of all-real clips
            assert abs(a.top1 - b.top1) <= 100 / (N - N_TRAIN) + 1e-9
            continue
        np.testing.assert_array_equal(a.confusion, b.confusion, err_msg=a.probe)
        np.testing.assert_array_equal(a.correct, b.correct, err_msg=a.probe)


def test_prepare_centres_ragged_scale_inputs_by_the_training_mean():
    """The SCALE k-NN input of a ragged view is per video (already reduced): prepare only centres and l2s."""
    tr, te = np.array([[1.0, 0.0], [3.0, 2.0]]), np.array([[2.0, 3.0]])
    a, b = prepare(tr, te, center=True, normalize_clips=False)
    np.testing.assert_allclose(b, _l2(te - tr.mean(0)))


class _SetMean(nn.Module):
    """A set model without parameters: per video the mean of its real clips' features and boxes."""

    def forward(self, features, boxes, valid=None):
        weight = torch.ones(features.shape[:2]) if valid is None else valid.float()
        mean = lambda x: (x * weight[..., None]).sum(1) / weight.sum(1, keepdim=True)   # noqa: E731
        return torch.cat([mean(features), mean(boxes)], dim=-1)[:, None]            # [B, 1, D + 7]


def test_a_fixed_split_is_the_ragged_one_with_constant_counts():
    """One code path: a fixed split's array and the same clips as RaggedClips batch and score alike."""
    rng = np.random.default_rng(0)
    x, boxes, y = rng.normal(size=(7, 4, 5)).astype(np.float32), rng.random((7, 4, 7)).astype(np.float32), \
        np.arange(7) % 3
    ragged = RaggedClips.from_counts(x.reshape(-1, 5), [4] * 7)
    cpu, head = torch.device("cpu"), nn.Linear(5, 3)
    fixed_in, ragged_in = ClipInputs(x, y), ClipInputs(ragged, y)
    for a, b in zip(fixed_in.batches(np.arange(7), 5, torch.Generator().manual_seed(1), cpu),
                    ragged_in.batches(np.arange(7), 5, torch.Generator().manual_seed(1), cpu)):
        assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[1], b[1])
    model = nn.Sequential(head, nn.Unflatten(1, (1, 3)))
    want = torch.softmax(head(torch.from_numpy(x)), -1).mean(1).detach().numpy()            # [7, 3]
    for inputs in (fixed_in, ragged_in):
        np.testing.assert_allclose(inputs.predict(model, np.arange(7), cpu)[:, 0], want, rtol=1e-5, atol=1e-6)
    sets = [SetInputs(f, b, y, eval_block=3) for f, b in
            ((x, boxes), (ragged, RaggedClips.from_counts(boxes.reshape(-1, 7), [4] * 7)))]
    mean = np.concatenate([x.mean(1), boxes.mean(1)], axis=-1).astype(np.float64)
    want = np.exp(mean) / np.exp(mean).sum(-1, keepdims=True)                          # the softmax of classes
    for inputs in sets:
        np.testing.assert_allclose(inputs.predict(_SetMean(), np.arange(7), cpu)[:, 0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_split_reads_the_same_from_either_layout_of_the_same_clips(tmp_path):
    """One reading path: a ragged view whose videos all have K clips reads as the fixed view's
    ``[n, K, D]`` clips and boxes; clips varying per video stay ragged."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 3, D)).astype(np.float32), np.arange(12) % 3
    make_synthetic_store(tmp_path / "fixed", x, y, ["train"] * 12, view="v", dtype="float32", chunk_videos=4)
    make_synthetic_store(tmp_path / "ragged", list(x), y, ["train"] * 12, view="v", dtype="float32", chunk_videos=4)
    fixed, ragged = (load_split(FeatureStore.open(tmp_path / name), "v", "train", boxes=True)
                     for name in ("fixed", "ragged"))
    for split in (fixed, ragged):
        assert isinstance(split.features, np.ndarray) and split.features.shape == (12, 3, D)
        np.testing.assert_array_equal(split.features, x)
    np.testing.assert_array_equal(fixed.boxes, ragged.boxes)
    clips = RaggedClips.from_counts(x.reshape(-1, D)[:-1], [3] * 11 + [2])
    assert clips.dense() is clips and RaggedClips.from_fixed(x).dense().shape == x.shape
