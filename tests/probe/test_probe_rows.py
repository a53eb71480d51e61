"""The probe rows as SCALE §4.1 defines them, each checked against an independent computation
(numpy on the stored arrays), never against vssl's own probe functions:

- SCALE k-NN: per video mean_i [C_i ⊕ SET], centred by the training mean, l2, DINO's vote;
- SCALE_linear, Transformer and SCALE_ft heads see [C_i ⊕ SET] per clip;
- Transformer and SCALE_ft: one config, one architecture, only the initialisation differs;
- the MLP baseline has the released layout (2 x 2048 ReLU, 512; head on [x ⊕ MLP(x)]).
"""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
import pytest
import torch

from vssl.features_store import FeatureStore
from vssl.probe import FinetuneConfig, KnnConfig, LinearConfig, ProbeRequest, TransformerConfig, run_probes
from vssl.probe.data import SplitData
from vssl.probe.mlp import MlpConfig, mlp_head
from vssl.probe.sources import ScaleSource
from vssl.probe.transformer import SetClassifier, clip_statistics, train_finetune, train_transformer

from tests.probe_helpers import VIEW, dino_knn as _dino_knn, l2 as _l2, tiny_store_and_run

FIT = dict(epochs=1, batch_size=8, device="cpu", precision="fp32", lrs=(0.01,), weight_decays=(1e-4,),
           min_steps=0, holdout_min=0)
N_TRAIN = 36

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_store_and_run(tmp_path_factory.mktemp("rows"), seed=2)


def _stored(store_path, run):
    """Clips C [n, K, D], SET [n, H], refined clips Ĉ [n, K, H] and labels, read from the store."""
    store = FeatureStore.open(store_path)
    idx = np.arange(store.num_videos)
    group = f"aggregates/{run.name}/{VIEW}"
    rows = store.row_group(group)
    return (store.view(VIEW).read_features(idx).astype(np.float64), rows.read("set_token", idx).astype(np.float64),
            rows.read("clips", idx).astype(np.float64), store.labels().astype(np.int64))


@pytest.mark.slow
def test_scale_knn_is_the_centred_mean_of_clip_and_set(tiny):
    store, run = tiny
    report = run_probes(ProbeRequest(store=store, view=VIEW, knn=KnnConfig(device="cpu"), scale_run=run, quiet=True))
    row = {(r.probe, r.features): r for r in report.results}[("knn", "scale")]
    c, s, _, y = _stored(store, run)
    video = np.concatenate([c.mean(axis=1), s], axis=1)               # mean over clips of [C_i ⊕ SET]
    mu = video[:N_TRAIN].mean(axis=0)                                   # the TRAINING split's mean
    votes = _dino_knn(_l2(video[:N_TRAIN] - mu), y[:N_TRAIN], _l2(video[N_TRAIN:] - mu), 3)
    pred = votes.argmax(axis=1)
    confusion = np.zeros((3, 3), dtype=np.int64)
    np.add.at(confusion, (y[N_TRAIN:], pred), 1)
    np.testing.assert_array_equal(row.confusion, confusion)
    assert row.top1 == pytest.approx((pred == y[N_TRAIN:]).mean() * 100)
    # the votes themselves, not only their argmax: a test split centred by its own mean (the released
    # eval.py's rule) moves every similarity but can leave a tiny set's predictions as they were
    np.testing.assert_allclose(row.scores[0], votes, rtol=1e-4)
    assert row.params["center"] is True and row.params["features"] == "clip_set"

    # the named variant: the SET token alone (uncentred: vssl's earlier row)
    report = run_probes(ProbeRequest(store=store, view=VIEW, knn=KnnConfig(device="cpu", features="set", center=False),
                                     scale_run=run, quiet=True))
    row = report.results[-1]
    votes = _dino_knn(_l2(s[:N_TRAIN]), y[:N_TRAIN], _l2(s[N_TRAIN:]), 3)
    assert row.top1 == pytest.approx((votes.argmax(axis=1) == y[N_TRAIN:]).mean() * 100)
    np.testing.assert_allclose(row.scores[0], votes, rtol=1e-4)          # center=False is obeyed
    assert row.params["representation"].startswith("SET")


class _Capture:
    """Inputs of every forward call of modules of one class, while active (a global hook)."""

    def __init__(self, kind: type):
        self.kind, self.inputs = kind, []

    def __enter__(self):
        def hook(module, args, _out):
            if type(module) is self.kind:
                self.inputs.append(args[0].detach().double().numpy())
        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _rows_of(matrix, candidates, atol):
    """Whether every row of ``matrix`` is (within ``atol``) one of ``candidates``' rows."""
    dist = np.abs(matrix[:, None, :] - candidates[None]).max(axis=-1)
    return bool((dist.min(axis=1) <= atol).all())


@pytest.mark.slow
@pytest.mark.parametrize("refined", [False, True])
def test_scale_linear_head_sees_clip_and_set(tiny, refined):
    from vssl.probe.lbfgs import SolvedLinear

    store, run = tiny
    with _Capture(SolvedLinear) as seen:
        report = run_probes(ProbeRequest(store=store, view=VIEW, linear=LinearConfig(**FIT, append_refined=refined),
                                         scale_run=run, quiet=True))
    row = report.results[-1]
    assert (row.probe, row.params["append_refined"]) == ("scale_linear", refined)
    c, s, c_hat, _ = _stored(store, run)
    k = c.shape[1]
    parts = [c] + ([c_hat] if refined else []) + [np.repeat(s[:, None], k, axis=1)]
    by_hand = np.concatenate(parts, axis=-1).reshape(-1, parts[0].shape[-1] + sum(p.shape[-1] for p in parts[1:]))
    scale_inputs = [x for x in seen.inputs if x.shape[-1] == by_hand.shape[-1]]
    assert scale_inputs, "the SCALE_linear head was never called"
    for x in scale_inputs:                       # SET is stored as float16 next to float16 clips: 1e-3
        assert _rows_of(x.reshape(-1, x.shape[-1]), by_hand, atol=2e-3 * max(1.0, np.abs(by_hand).max()))


def _head_inputs(fit_fn, c, boxes, y, standardize):
    """Run one training epoch of a set probe, capturing its head's inputs and the SET tokens."""
    heads, sets = [], []

    def on_head(module, args, _out):
        heads.append(args[0].detach().double().numpy())

    def on_norm(module, _args, out):                # the encoder's final LayerNorm: row 0 is SET
        sets.append(out[:, 0].detach().double().numpy())

    orig = SetClassifier.__init__

    def init(self, *a, **kw):
        orig(self, *a, **kw)
        self.head.register_forward_hook(on_head)
        self.encoder.norm.register_forward_hook(on_norm)

    SetClassifier.__init__ = init
    try:
        result, _ = fit_fn(c, boxes, y, standardize)
    finally:
        SetClassifier.__init__ = orig
    return result, heads, sets


@pytest.mark.parametrize("standardize", [False, True])
def test_transformer_and_finetune_heads_see_clip_and_set(tiny, standardize):
    from vssl.aggregate import load_run

    store_path, run = tiny
    store = FeatureStore.open(store_path)
    idx = np.arange(N_TRAIN)
    c = store.view(VIEW).read_features(idx).astype(np.float32)
    boxes = store.view(VIEW).read_boxes(idx).astype(np.float32)
    y = store.labels()[idx]
    model, run_cfg, _ = load_run(run)
    cfg = TransformerConfig(**{**FIT, "holdout": 0.0}, width=16, layers=1, heads=2, standardize=standardize)
    x = c.astype(np.float64)
    if standardize:                               # per-dim mean/std of the training clips, by hand
        flat = x.reshape(-1, x.shape[-1])
        x = (x - flat.mean(axis=0)) / flat.std(axis=0)
    fits = {
        "transformer": lambda *a: train_transformer(a[0], a[1], a[2], idx, 3, dataclasses.replace(cfg)),
        "scale_ft": lambda *a: train_finetune(model, run_cfg.width, a[0], a[1], a[2], idx, 3,
                                              FinetuneConfig(**dataclasses.asdict(cfg))),
    }
    shapes = {}
    for name, fn in fits.items():
        result, heads, sets = _head_inputs(lambda *a: fn(*a), c, boxes, y, standardize)
        assert heads and len(heads) == len(sets)
        for h, s in zip(heads, sets):
            assert h.shape[1:] == (c.shape[1], c.shape[2] + 16)          # [B, K, D + H]: one row per clip
            np.testing.assert_allclose(h[..., c.shape[2]:], np.repeat(s[:, None], c.shape[1], axis=1), atol=1e-6)
            assert _rows_of(h[..., :c.shape[2]].reshape(-1, c.shape[2]), x.reshape(-1, c.shape[2]), atol=1e-4)
        shapes[name] = [(n, tuple(p.shape)) for n, p in result.model.heads[0].named_parameters()]
    assert shapes["transformer"] == shapes["scale_ft"]          # the same architecture and head


def test_transformer_and_finetune_share_one_config_and_architecture(tiny):
    store, run = tiny
    assert dataclasses.asdict(FinetuneConfig()) == dataclasses.asdict(TransformerConfig())
    from vssl.probe.config import ProbeConfig

    req = ProbeConfig(transformer=True, finetune=True, lr=(0.01,), epochs=2).request(store)
    assert dataclasses.asdict(req.transformer) == dataclasses.asdict(req.finetune)
    cfg = dict(**FIT, holdout=0.0)
    report = run_probes(ProbeRequest(store=store, view=VIEW, transformer=TransformerConfig(**cfg),
                                     finetune=FinetuneConfig(**cfg), scale_run=run, quiet=True))
    rows = {r.probe: r.params for r in report.results}
    drop = ("selected", "run", "aggregates")
    same = {k: v for k, v in rows["transformer"].items() if k not in drop}
    assert same == {k: v for k, v in rows["scale_ft"].items() if k not in drop}
    assert (same["width"], same["layers"], same["heads"]) == (16, 1, 2)       # the run's, not the default 256
    assert same["input"] == "[standardized C_i, SET] per clip"


def test_finetune_starts_as_the_pretrained_encoder(tiny):
    """Standardized inputs with the folded projection give the pretrained encoder's own output."""
    from vssl.aggregate import load_run

    store_path, run = tiny
    store = FeatureStore.open(store_path)
    idx = np.arange(8)
    c = torch.from_numpy(store.view(VIEW).read_features(idx).astype(np.float32))
    boxes = torch.from_numpy(store.view(VIEW).read_boxes(idx).astype(np.float32))
    model, _, _ = load_run(run)
    import copy

    clf = SetClassifier(copy.deepcopy(model), c.shape[-1], 3, clip_statistics(c.numpy(), idx), fold=True)
    clf.eval()
    with torch.no_grad():
        want = model.eval().encode(c, boxes)[1]
        got = clf.encoder.encode((c - clf.in_mean) / clf.in_std, boxes)[1]
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)


def test_mlp_is_the_released_layout():
    d, classes = 12, 5
    head = mlp_head(d, classes, MlpConfig())
    linears = [(m.in_features, m.out_features) for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [(d, 2048), (2048, 2048), (2048, 512), (d + 512, classes)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in head.modules()) == 2
    small = mlp_head(d, classes, MlpConfig(hidden=7, out_dim=3))
    x = np.random.default_rng(0).normal(size=(6, d))
    w = [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
         for m in small.modules() if isinstance(m, torch.nn.Linear)]
    h = np.maximum(x @ w[0][0].T + w[0][1], 0)
    h = np.maximum(h @ w[1][0].T + w[1][1], 0)
    h = h @ w[2][0].T + w[2][1]
    logits = np.concatenate([x, h], axis=1) @ w[3][0].T + w[3][1]           # linear head on [x ⊕ MLP(x)]
    with torch.no_grad():
        got = small.double()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, logits, atol=1e-10)


def _with_meta(run, dest, **meta):
    """A copy of ``run`` whose checkpoint meta has ``meta`` written in (as a newer stage two would)."""
    import shutil

    from vssl.aggregate.checkpoint import checkpoint_path

    shutil.copytree(run, dest)
    state = torch.load(checkpoint_path(dest), map_location="cpu", weights_only=True)
    state["meta"] = {**state.get("meta", {}), **meta}
    torch.save(state, checkpoint_path(dest))
    return dest


def _transductive(report):
    return {(r.probe, r.features): r.to_json()["transductive"] for r in report.results}


@pytest.mark.slow
@pytest.mark.parametrize("meta, expected", [
    ({"trained_on_splits": ["test", "train"]}, True),
    ({"trained_on_splits": ["train"]}, False),
    ({"split": "all"}, True),                  # an older run without the record: all videos of the store
    ({"split": "auto"}, False),                # 'auto' on a store with a train split is 'train'
])
def test_transductive_runs_are_said_once_and_marked_on_their_rows(tiny, tmp_path, capsys, meta, expected):
    """Runs recorded before the videos' keys: their splits in their store decide."""
    store, run = tiny
    meta = {"trained_on_videos": None, "store_id": None, **meta}
    if "trained_on_splits" not in meta:
        meta = {**meta, "trained_on_splits": None}
    marked = _with_meta(run, tmp_path / f"run_{tmp_path.name}", **meta)     # its own export
    capsys.readouterr()
    report = run_probes(ProbeRequest(store=store, view=VIEW, knn=KnnConfig(device="cpu"), scale_run=marked,
                                     quiet=True))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("warning: SCALE", "note:"))]
    assert _transductive(report) == {("knn", "backbone"): False, ("knn", "scale"): expected}
    assert len(lines) == (1 if expected else 0), lines
    if expected:
        assert "'test'" in lines[0] and str(marked) in lines[0]


def test_inferred_splits_follow_the_store():
    from vssl.probe.transductive import trained_on_splits

    assert trained_on_splits({"split": "auto"}, ["a", "b"]) == (["a", "b"], False)      # no train split: all
    assert trained_on_splits({"split": "train"}, ["train", "test"]) == (["train"], False)
    assert trained_on_splits({"trained_on_splits": ["x"], "split": "all"}, ["x", "y"]) == (["x"], True)


class _EchoScale:
    """A SCALE stand-in whose clip inputs are the split's video indices: a mix-up shows directly."""

    def clip_inputs(self, split, refined):
        return split.indices.copy()


def _split(indices):
    indices = np.asarray(indices)
    return SplitData("train", indices, np.zeros(len(indices), np.int64), np.zeros((len(indices), 1, 1)), None)


@pytest.mark.slow
def test_scale_clip_inputs_follow_the_split_not_a_reused_object_id():
    """Each seed's low-shot subset is a new split of the same size; a freed one's id is reused."""
    source = ScaleSource(_EchoScale())
    for seed in range(6):
        subset = np.sort(np.random.default_rng(seed).choice(100, size=10, replace=False))
        got, _ = source.clips(_split(subset))
        np.testing.assert_array_equal(got, subset)
        gc.collect()
