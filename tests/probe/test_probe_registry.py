"""The probe registry: every registered probe runs, each row is what its probe functions give,
an unknown name is one clear error, and the probe settings build the runner's request."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vssl.errors import VsslError
from vssl.features_store import FeatureStore
from vssl.probe import (PROBES, AttentiveConfig, FinetuneConfig, KnnConfig, LinearConfig, MlpConfig, Probe,
                        ProbeRequest, TransformerConfig, get_probe, run_probes)
from vssl.probe.config import ProbeConfig
from vssl.probe.attentive import train_attentive
from vssl.probe.data import load_split
from vssl.probe.inputs import ClipInputs
from vssl.probe.linear import train_linear
from vssl.probe.metrics import row_metrics
from vssl.probe.retrieval import RetrievalConfig
from vssl.probe.registry import run_knn
from vssl.probe.scale import ScaleFeatures
from vssl.probe.train import TrainConfig, probe_precision
from vssl.probe.transformer import train_finetune, train_transformer

from tests.probe_helpers import CLASSES, VIEW, dino_knn, l2, tiny_store_and_run

CPU = torch.device("cpu")
FIT = dict(epochs=2, batch_size=16, device="cpu", precision="fp32", lrs=(0.01,), weight_decays=(1e-4,),
           min_steps=0, holdout_min=0)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_store_and_run(tmp_path_factory.mktemp("registry"), seed=1)


@pytest.fixture(scope="module")
def report(tiny):
    store, run = tiny
    return run_probes(ProbeRequest(
        store=store, view=VIEW, knn=KnnConfig(device="cpu"), linear=LinearConfig(**FIT), mlp=MlpConfig(**FIT),
        transformer=TransformerConfig(**{**FIT, "batch_size": 8}, width=16),
        finetune=FinetuneConfig(**{**FIT, "batch_size": 8}), attentive=AttentiveConfig(**FIT, depth=1),
        retrieval=RetrievalConfig(device="cpu"), scale_run=run, quiet=True))


def _rows(report):
    return {(r.probe, r.features): r for r in report.results}


@pytest.mark.slow
def test_every_registered_probe_gives_one_row_per_source(report):
    expected = [(p.name, s) for s in ("backbone", "scale") for p in PROBES if s in p.sources and not p.ranks]
    assert [(r.probe, r.features) for r in report.results] == expected
    assert expected == [("knn", "backbone"), ("linear", "backbone"), ("mlp", "backbone"),
                        ("transformer", "backbone"), ("attentive", "backbone"), ("knn", "scale"),
                        ("scale_linear", "scale"), ("mlp", "scale"), ("scale_ft", "scale"),
                        ("attentive", "scale")]      # the report's order before the registry, then attentive
    ranked = [(p.name, s) for s in ("backbone", "scale") for p in PROBES if s in p.sources and p.ranks]
    assert [(r.probe, r.features) for r in report.retrieval] == ranked == [
        ("retrieval", "backbone"), ("retrieval", "scale"), ("retrieval_set", "scale")]   # kept apart from class rows
    for r in report.results:
        assert r.n_train == 36 and r.n_test == 12 and set(r.per_class) == set(CLASSES)
        assert r.params["seed"] == 0 and "low_shot" in r.params
        assert ("run" in r.params) == (r.features == "scale")


def _same_row(row, scores, labels):
    fields = row_metrics(scores, labels, CLASSES)
    assert (row.top1, row.top5, row.per_class) == (fields["top1"], fields["top5"], fields["per_class"])
    assert np.array_equal(row.confusion, fields["confusion"])


@pytest.mark.slow
def test_rows_equal_the_probe_functions(tiny, report):
    """Each row is exactly what the probe's own functions give (the runner adds nothing)."""
    store_path, run = tiny
    store = FeatureStore.open(store_path)
    tr = load_split(store, VIEW, "train", boxes=True)
    te = load_split(store, VIEW, "test", "--test-split", boxes=True)
    rows, c = _rows(report), len(CLASSES)
    scale = ScaleFeatures.open(store, run, VIEW, np.concatenate([tr.indices, te.indices]), quiet=True)

    # k-NN recomputed in numpy from the stored arrays (never with vssl's k-NN functions): the
    # backbone: DINO's uncentred l2 of the mean of l2 clips; SCALE: mean [C_i, SET], train-centred
    clips = [np.asarray(split.features, np.float64) for split in (tr, te)]
    backbone = [l2(l2(x.reshape(-1, x.shape[-1])).reshape(x.shape).mean(axis=1)) for x in clips]
    group = store.row_group(scale.group_path)
    sets = [np.concatenate([x.mean(axis=1), group.read("set_token", split.indices).astype(np.float64)], axis=1)
            for x, split in zip(clips, (tr, te))]
    mu = sets[0].mean(axis=0)
    for features, (train_x, test_x) in (("backbone", backbone), ("scale", [l2(v - mu) for v in sets])):
        _same_row(rows[("knn", features)], dino_knn(train_x, tr.labels, test_x, c), te.labels)

    def clip_scores(train_x, test_x):
        fit, _ = train_linear(train_x, tr.labels, np.arange(len(tr.labels)), c, LinearConfig(**FIT))
        return ClipInputs(test_x, te.labels).predict(fit.model, np.arange(len(te.labels)), CPU)

    _same_row(rows[("linear", "backbone")], clip_scores(tr.features, te.features)[:, 0], te.labels)
    _same_row(rows[("scale_linear", "scale")], clip_scores(scale.clip_inputs(tr), scale.clip_inputs(te))[:, 0],
              te.labels)

    def set_scores(fit, inputs):
        test = inputs.like(te.features, te.boxes, te.labels)
        return test.predict(fit.model, np.arange(len(te.labels)), CPU)[:, 0]

    # with a SCALE run, the transformer row takes the run's architecture (width 16, 1 layer, 2 heads)
    t_cfg = TransformerConfig(**{**FIT, "batch_size": 8}, width=16, layers=1, heads=2)
    fit, inputs = train_transformer(tr.features, tr.boxes, tr.labels, np.arange(len(tr.labels)), c, t_cfg)
    _same_row(rows[("transformer", "backbone")], set_scores(fit, inputs), te.labels)
    fit, inputs = train_finetune(scale.model, scale.width, tr.features, tr.boxes, tr.labels,
                                 np.arange(len(tr.labels)), c, FinetuneConfig(**{**FIT, "batch_size": 8}))
    _same_row(rows[("scale_ft", "scale")], set_scores(fit, inputs), te.labels)

    # the attentive probe: over the backbone's clips, and over SCALE's refined clips Ĉ_i
    for features, train_x, test_x in (("backbone", tr.features, te.features),
                                      ("scale", scale.refined_clips(tr.indices), scale.refined_clips(te.indices))):
        fit, inputs = train_attentive(train_x, tr.labels, np.arange(len(tr.labels)), c, AttentiveConfig(**FIT, depth=1))
        test = inputs.like(test_x, te.labels, te.crops)
        _same_row(rows[("attentive", features)], test.predict(fit.model, np.arange(len(te.labels)), CPU)[:, 0],
                  te.labels)


def test_unknown_probe_name_is_one_clear_error():
    assert get_probe("scale_linear").sources == ("scale",)
    with pytest.raises(VsslError, match="unknown probe 'svm'.*knn, linear, scale_linear"):
        get_probe("svm")


def test_an_entry_is_checked_when_declared():
    with pytest.raises(ValueError, match="unknown needs"):
        Probe("x", "knn", ("backbone",), KnnConfig, run_knn, frozenset({"labels"}))
    with pytest.raises(ValueError, match="'scale' source only"):
        Probe("x", "knn", ("backbone", "scale"), KnnConfig, run_knn, frozenset({"set_token"}))


def test_settings_build_the_request():
    default = ProbeConfig().request("s")
    assert default.knn == KnnConfig() and default.linear == LinearConfig() and default.mlp is None
    req = ProbeConfig(mlp=True, lr=(0.1, 0.2), epochs=3, batchnorm=True, seed=5, scale="r").request("s")
    assert req.knn is None and req.linear is None and str(req.scale_run) == "r"
    assert req.mlp == MlpConfig(lrs=(0.1, 0.2), epochs=3, batchnorm=True, seed=5)
    with pytest.raises(VsslError, match="--k"):
        ProbeConfig(k=0)


def test_probe_precision_is_the_toolkits_without_fp16(monkeypatch):
    import vssl.probe.train as train_module

    with pytest.raises(VsslError, match="--precision"):
        TrainConfig(precision="fp16").validate()
    assert probe_precision("fp32", CPU) == "fp32"
    monkeypatch.setattr(train_module, "resolve_precision", lambda p, d: "fp16")   # auto on a GPU without bf16
    assert probe_precision("auto", CPU) == "fp32"
