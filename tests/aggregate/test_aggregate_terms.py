"""A stage-two loss term is one module: a term plugged in from outside trains, is recorded, summarised
and exported without any other edit; the former MCM/SET switches still load as weights of 0."""

from __future__ import annotations

import csv

import pytest

from tests.plugins import install_plugin
from vssl.aggregate import ScaleConfig, ScaleModel, load_run, train
from vssl.aggregate.checkpoint import checkpoint_path, read_checkpoint, save_checkpoint
from vssl.aggregate.synthetic import structured_clip_features
from vssl.errors import VsslError
from vssl.features_store.synthetic import make_synthetic_store

TINY = ["--width", "16", "--heads", "2", "--layers", "1", "--pred-hidden", "24", "--target-hidden", "20",
        "--proj-dim", "8", "--batch-size", "8", "--precision", "fp32", "--device", "cpu", "--quiet"]

PLUGIN = '''
from dataclasses import dataclass

import torch
from torch import nn

from vssl.aggregate.terms import LossTerm
from vssl.settings import setting


@dataclass
class SpreadSettings:
    spread_weight: float = setting(0.0, "weight of the spread term (0: off)")


class Spread(LossTerm):
    """Mean square of a linear map of the set tokens: a term with its own head."""
    name, title, Settings, parts = "spread", "SPREAD", SpreadSettings, ("spread_head",)

    def heads(self, cfg, in_dim):
        return {"spread_head": nn.Linear(cfg.width, 3)}

    def loss(self, model, enc):
        z = model.spread_head(enc.cls.float())
        return z.pow(2).mean(), torch.zeros((), device=z.device)
'''


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    feats, boxes = structured_clip_features(16, 8, 12, seed=3)
    path = tmp_path_factory.mktemp("terms") / "store"
    make_synthetic_store(path, feats, [i % 2 for i in range(16)], ["train"] * 16, boxes=boxes, view="random8")
    return path


def install_term(tmp_path, monkeypatch) -> None:
    """A package outside vssl declaring a loss term in the ``vssl.loss_terms`` entry-point group."""
    install_plugin(tmp_path, monkeypatch, "spreadterm", PLUGIN, "vssl.loss_terms", "spread = spreadterm:Spread")


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    install_term(tmp_path, monkeypatch)


def _metrics(run) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_a_plugged_in_term_trains_is_recorded_summarised_and_exported(store, tmp_path, vssl_cli, plugin):
    run = tmp_path / "run"
    done = vssl_cli("aggregate", store, "--view", "random8", "--out", run, "--epochs", "2", "--spread-weight", "0.5",
                    *TINY)
    assert done.returncode == 0, done.stderr
    assert "SPREAD" in done.stdout and "MCM" in done.stdout                      # the CLI summary names it
    state = read_checkpoint(run)
    assert state["config"]["spread_weight"] == 0.5                                # its setting is recorded
    assert state["model"]["spread_head.weight"].shape == (3, 16)                  # its head is trained and saved
    for row in _metrics(run):                                                     # eq. 8 with the new term
        total = float(row["mcm_loss"]) + float(row["set_loss"]) + 0.5 * float(row["spread_loss"])
        assert float(row["loss"]) == pytest.approx(total, rel=1e-5) and float(row["spread_loss"]) > 0
    exported = vssl_cli("aggregate", store, "--view", "random8", "--export", "--from", run, "--quiet")
    assert exported.returncode == 0, exported.stderr


@pytest.mark.slow
def test_a_run_made_before_a_term_was_installed_loads_with_that_term_off(store, tmp_path, vssl_cli, monkeypatch):
    run = tmp_path / "old"
    assert vssl_cli("aggregate", store, "--view", "random8", "--out", run, "--epochs", "1", *TINY).returncode == 0
    install_term(tmp_path, monkeypatch)
    again = vssl_cli("aggregate", store, "--view", "random8", "--out", run, "--epochs", "2", "--resume", *TINY)
    assert again.returncode == 0, again.stderr
    assert read_checkpoint(run)["config"]["spread_weight"] == 0.0
    assert "spread_head.weight" not in read_checkpoint(run)["model"]


def tiny(**kw) -> ScaleConfig:
    return ScaleConfig(**{"width": 16, "heads": 2, "layers": 1, "pred_hidden": 24, "target_hidden": 20, "proj_dim": 8,
                          "epochs": 1, "batch_size": 8, "precision": "fp32", "device": "cpu", **kw})


def test_the_former_switches_are_weights_of_zero_and_not_stored():
    assert ScaleConfig(use_mcm=False).mcm_weight == 0.0 and ScaleConfig(use_set=False).set_weight == 0.0
    assert ScaleConfig(use_mcm=True, mcm_weight=0.0).mcm_weight == 0.0          # either says off: off
    assert ScaleConfig.from_dict({"use_set": False, "set_weight": 2.0}).set_weight == 0.0
    assert not {"use_mcm", "use_set"} & set(ScaleConfig().to_dict())            # one off-switch is stored
    assert ScaleConfig().use_mcm is True and ScaleConfig(mcm_weight=0.0).use_mcm is False   # still readable
    with pytest.raises(VsslError, match="nothing to train"):
        ScaleConfig(use_mcm=False, set_weight=0.0)


@pytest.mark.slow
def test_a_checkpoint_written_with_the_former_switches_loads_and_resumes(store, tmp_path):
    run = tmp_path / "run"
    train(store, "random8", run, tiny(mcm_weight=0.0), quiet=True)
    state = read_checkpoint(run)
    # what vssl wrote before the switch was folded into the weight: --no-mcm with the default weight
    state["config"] = {**state["config"], "use_mcm": False, "use_set": True, "mcm_weight": 1.0}
    save_checkpoint(run, {k: v for k, v in state.items() if k != "format"})
    model, cfg, _ = load_run(run)
    assert cfg.mcm_weight == 0.0 and model.pred_head is None and model.msk_token is None
    summary = train(store, "random8", run, tiny(use_mcm=False, epochs=2), resume=True, quiet=True)
    assert summary.epochs == 2 and checkpoint_path(run).is_file()


@pytest.mark.slow
def test_a_toml_and_the_flags_of_the_former_switches_still_turn_a_loss_off(store, tmp_path, vssl_cli):
    toml = tmp_path / "cfg.toml"
    toml.write_text("[aggregate]\nuse_set = false\nepochs = 1\n")
    run = tmp_path / "toml"
    done = vssl_cli("aggregate", store, "--view", "random8", "--out", run, "--config", toml, *TINY)
    assert done.returncode == 0, done.stderr
    assert read_checkpoint(run)["config"]["set_weight"] == 0.0
    run = tmp_path / "flag"
    done = vssl_cli("aggregate", store, "--view", "random8", "--out", run, "--no-mcm", "--epochs", "1", *TINY)
    assert done.returncode == 0, done.stderr
    cfg = read_checkpoint(run)["config"]
    assert cfg["mcm_weight"] == 0.0 and "use_mcm" not in cfg


def test_a_probe_drops_every_terms_parts():
    model = ScaleModel(tiny(), 12)
    model.drop_pretraining()
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert names == {"input_proj", "box_mlp", "cls_token", "blocks", "norm"}
