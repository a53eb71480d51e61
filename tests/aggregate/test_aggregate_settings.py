"""Every setting of `vssl aggregate` is a Settings field: the view, split, run name and export window
come from a TOML file as from their flags, and an export takes its batch size and precision from the
same settings (flags, ``[aggregate.export]``, then ``[aggregate]``) instead of fixed defaults."""

from __future__ import annotations

import numpy as np
import pytest

import vssl.aggregate
from vssl.aggregate import load_run
from vssl.aggregate.config import ExportConfig, load_aggregate_settings
from vssl.aggregate.synthetic import structured_clip_features
from vssl.cli import main
from vssl.errors import VsslError
from vssl.features_store import FeatureStore
from vssl.features_store.synthetic import make_synthetic_store

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--width", "16", "--heads", "2", "--layers", "1", "--pred-hidden", "24", "--target-hidden", "20",
        "--proj-dim", "8", "--epochs", "1", "--device", "cpu", "--quiet"]


def cli(*args) -> None:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    assert done.value.code in (0, None)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    feats, boxes = structured_clip_features(16, 8, 12, seed=5)
    path = tmp_path_factory.mktemp("settings") / "store"
    make_synthetic_store(path, feats, [i % 2 for i in range(16)], ["train", "test"] * 8, boxes=boxes, view="random8")
    return path


@pytest.fixture(scope="module")
def run(store, tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run"
    cli("aggregate", store, "--view", "random8", "--out", path, "--batch-size", "8", "--precision", "fp32", *TINY)
    return path


@pytest.mark.slow
def test_view_and_split_come_from_the_settings_file(store, tmp_path):
    toml = tmp_path / "cfg.toml"
    toml.write_text('[aggregate]\nview = "random8"\nsplit = "all"\nbatch_size = 8\nprecision = "fp32"\n')
    cli("aggregate", store, "--out", tmp_path / "run", "--config", toml, *TINY)
    meta = load_run(tmp_path / "run")[2]
    assert (meta["view"], meta["split"], meta["num_videos"]) == ("random8", "all", 16)


def test_a_toml_batch_size_and_precision_reach_the_export(store, run, tmp_path, monkeypatch):
    seen = []

    def recording(store_path, run_dir, view, config=None, **kw):
        seen.append(config.values() if config is not None else kw)
        return {"group": "g", "written": 0, "done": 0}

    monkeypatch.setattr(vssl.aggregate, "export", recording)
    toml = tmp_path / "cfg.toml"
    toml.write_text('[aggregate]\nbatch_size = 3\nprecision = "bf16"\n')
    cli("aggregate", store, "--export", "--from", run, "--view", "random8", "--config", toml, "--quiet")
    assert (seen[-1]["batch_size"], seen[-1]["precision"]) == (3, "bf16")
    toml.write_text('[aggregate]\nview = "random8"\nbatch_size = 3\n[aggregate.export]\nbatch_size = 5\n'
                    'name = "named"\nmax_clips = 7\n')
    cli("aggregate", store, "--export", "--from", run, "--config", toml, "--quiet")
    assert (seen[-1]["batch_size"], seen[-1]["precision"], seen[-1]["name"], seen[-1]["max_clips"]) == \
        (5, "fp32", "named", 7)                                        # the export's table wins; fp32 by default
    cli("aggregate", store, "--export", "--from", run, "--config", toml, "--batch-size", "2", "--quiet")
    assert seen[-1]["batch_size"] == 2                                                  # a flag wins over both


def test_an_exported_name_from_the_settings_file_is_the_group(store, run, tmp_path):
    toml = tmp_path / "cfg.toml"
    toml.write_text('[aggregate]\nview = "random8"\n[aggregate.export]\nname = "fromtoml"\n')
    cli("aggregate", store, "--export", "--from", run, "--config", toml, "--quiet")
    flagged = tmp_path / "flag"
    cli("aggregate", store, "--export", "--from", run, "--view", "random8", "--name", "fromflag", "--quiet")
    s = FeatureStore.open(store)
    a = s.row_group("aggregates/fromtoml/random8").read("set_token", np.arange(16))
    b = s.row_group("aggregates/fromflag/random8").read("set_token", np.arange(16))
    assert np.array_equal(a, b) and not flagged.exists()


def test_export_settings_are_checked():
    assert ExportConfig().values() == {"name": None, "max_clips": 1024, "batch_size": 256, "precision": "fp32",
                                       "device": "auto"}
    with pytest.raises(VsslError, match="export-max-clips"):
        ExportConfig(max_clips=0)
    with pytest.raises(VsslError, match="unknown key"):
        load_aggregate_settings(None, export={"nope": 1})
