"""A probe is one module: a probe registered here, inside the test, runs end to end through the
public API with what it declares (its rows, grid, seed dependence, interval, the run's shape); a
probe installed through the ``vssl.probes`` entry-point group runs through the real CLI with its
own flags and ``[probe.NAME]`` table."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

import numpy as np
import pytest

from tests.plugins import install_plugin
from vssl.errors import VsslError
from vssl.probe import PROBES, KnnConfig, Probe, ProbeRequest, register_probe, run_probes, unregister_probe
from vssl.probe.registry import ProbeScores

from tests.probe_helpers import VIEW, tiny_store, tiny_store_and_run

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class CentroidConfig:
    """A nearest-class-centroid probe: a row per temperature of ``temperatures``."""

    temperatures: tuple[float, ...] = (1.0,)
    temperature: float = 1.0
    width: int = 0
    seed: int = 0


CALLS: list[CentroidConfig] = []


def run_centroid(call) -> ProbeScores:
    """Scores -||mean clip - class centroid||² / T of each test video."""
    CALLS.append(call.config)
    train = np.asarray(call.data.train.features, np.float64).mean(axis=1)
    test = np.asarray(call.data.test.features, np.float64).mean(axis=1)
    centroids = np.stack([train[call.data.train.labels == c].mean(axis=0) for c in range(call.data.num_classes)])
    dist = ((test[:, None] - centroids[None]) ** 2).sum(-1)
    return ProbeScores(-dist / call.config.temperature, {"temperature": call.config.temperature,
                                                         "width": call.config.width})


def temperature_rows(cfg: CentroidConfig, request) -> list:
    return [(replace(cfg, temperature=t), f"t{t:g}") for t in cfg.temperatures]


@pytest.fixture
def centroid():
    """The probe, registered for one test only."""
    probe = register_probe(Probe("centroid", "centroid", ("backbone",), CentroidConfig, run_centroid,
                                 frozenset({"clips"}), interval="wilson", seeded=False, expand=temperature_rows,
                                 match_run=lambda cfg, run: replace(cfg, width=run.width)))
    CALLS.clear()
    yield probe
    unregister_probe("centroid")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "store"
    x = tiny_store(path, seed=3, videos=60, test=15, dim=6, spread=2.0)
    return path, x.astype(np.float16).astype(np.float64), np.arange(60) % 3


def test_a_registered_probe_runs_end_to_end(centroid, store):
    path, x, y = store
    report = run_probes(ProbeRequest(store=path, view=VIEW, knn=KnnConfig(device="cpu"), seeds=2, quiet=True,
                                     configs={"centroid": CentroidConfig(temperatures=(1.0, 2.0))}))
    assert [r.name for r in report.results] == ["knn", "centroid_t1", "centroid_t2"]
    # the reference: nearest centroid written out in numpy on the stored (float16) clips
    mean = x.mean(axis=1)
    centroids = np.stack([mean[:45][y[:45] == c].mean(axis=0) for c in range(3)])
    predicted = np.argmin(((mean[45:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    top1 = (predicted == y[45:]).mean() * 100
    for row, t in zip(report.results[1:], (1.0, 2.0)):
        assert row.top1 == pytest.approx(top1) and row.params["temperature"] == t
        assert row.ci["method"] == "wilson" and row.n_test == 15
    assert len(CALLS) == 2            # not seeded: computed once per row, whatever --seeds
    assert PROBES[-1] is centroid


@pytest.mark.slow
def test_a_registered_probe_takes_the_scale_runs_shape(centroid, tmp_path):
    store, run = tiny_store_and_run(tmp_path)
    report = run_probes(ProbeRequest(store=store, view=VIEW, scale_run=run, quiet=True,
                                     configs={"centroid": CentroidConfig()}))
    assert [(r.name, r.features, r.params["width"]) for r in report.results] == [("centroid_t1", "backbone", 16)]


def test_a_probe_is_checked_when_registered(centroid):
    with pytest.raises(VsslError, match="already registered"):
        register_probe(centroid)
    with pytest.raises(ValueError, match="interval"):
        Probe("x", "x", ("backbone",), CentroidConfig, run_centroid, frozenset({"clips"}), interval="normal")
    with pytest.raises(ValueError, match="seed"):
        Probe("x", "x", ("backbone",), ProbeScores, run_centroid,
              frozenset({"clips"}))
    with pytest.raises(ValueError, match="video_rule"):
        Probe("x", "x", ("backbone",), CentroidConfig, run_centroid)


def test_a_registered_probe_is_set_by_its_toml_table(centroid, store, tmp_path):
    """``[probe.centroid]`` enables the registered probe and sets its config's fields."""
    from vssl.probe.config import ProbeConfig

    path, _, _ = store
    config = tmp_path / "probe.toml"
    config.write_text(f'[probe]\nview = "{VIEW}"\nquiet = true\n\n[probe.centroid]\ntemperatures = [1.0, 4.0]\n')
    request = ProbeConfig.load(config).request(path)
    assert request.configs == {"centroid": CentroidConfig(temperatures=(1.0, 4.0))}
    report = run_probes(request)
    assert [(r.name, r.params["temperature"]) for r in report.results] == [("centroid_t1", 1.0), ("centroid_t4", 4.0)]


PLUGIN = '''
from dataclasses import dataclass

import numpy as np

from vssl.features_store.ragged import as_ragged
from vssl.probe import Probe
from vssl.probe.registry import ProbeScores
from vssl.settings import setting


@dataclass(frozen=True)
class CentroidConfig:
    temperature: float = setting(1.0, "divides the squared distances to the class centroids")
    squared: bool = True


def run(call):
    train, test = as_ragged(call.data.train.features).mean(), as_ragged(call.data.test.features).mean()
    labels = call.data.train.labels
    centroids = np.stack([train[labels == c].mean(axis=0) for c in range(call.data.num_classes)])
    dist = ((test[:, None] - centroids[None]) ** 2).sum(-1)
    return ProbeScores(-dist / call.config.temperature, {"temperature": call.config.temperature})


PROBE = Probe("centroid", "centroid", ("backbone",), CentroidConfig, run, frozenset({"clips"}), seeded=False)
'''


def install_probe(root, monkeypatch, entry: str = "centroid = centroidprobe:PROBE", module: str = PLUGIN) -> None:
    """A package outside vssl declaring a probe in the ``vssl.probes`` entry-point group, on the
    subprocess's path."""
    install_plugin(root, monkeypatch, "centroidprobe", module, "vssl.probes", entry)


@pytest.mark.slow
def test_an_installed_probe_runs_through_the_cli_with_its_own_flags(store, tmp_path, monkeypatch, vssl_cli):
    path, x, y = store
    install_probe(tmp_path, monkeypatch)
    monkeypatch.setenv("COLUMNS", "250")                     # the help's table, not cut
    shown = vssl_cli("probe", "--help")
    assert "--centroid-temperature" in shown.stdout and "--no-centroid-squared" in shown.stdout, shown.stdout
    config = tmp_path / "probe.toml"
    config.write_text("[probe.centroid]\ntemperature = 4.0\n")
    done = vssl_cli("probe", path, "--view", VIEW, "--config", config, "--centroid-temperature", "2.5", "--json",
                    "--quiet")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["results"]
    assert [(r["probe"], r["params"]["temperature"]) for r in rows] == [("centroid", 2.5)]   # the flag > the table
    mean = x.mean(axis=1)            # nearest centroid in numpy on the stored (float16) clips
    centroids = np.stack([mean[:45][y[:45] == c].mean(axis=0) for c in range(3)])
    predicted = np.argmin(((mean[45:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert rows[0]["top1"] == pytest.approx((predicted == y[45:]).mean() * 100)


@pytest.mark.parametrize("entry, module, what", [
    ("centroid = nosuchmodule:PROBE", PLUGIN, r"probe plugin 'centroid' \(nosuchmodule:PROBE, entry point of "
                                              r"vssl\.probes\) cannot be loaded \(ModuleNotFoundError"),
    ("centroid = centroidprobe:PROBE", "PROBE = 3\n", r"probe plugin 'centroid' .* is a int, not a vssl\.probe\.Probe"),
], ids=["not importable", "not a probe"])
@pytest.mark.slow
def test_a_broken_probe_plugin_is_one_line_and_other_commands_still_run(store, tmp_path, monkeypatch, vssl_cli,
                                                                        entry, module, what):
    path, _, _ = store
    install_probe(tmp_path, monkeypatch, entry, module)
    done = vssl_cli("probe", path, "--view", VIEW, "--knn", "--quiet")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert re.search(what, done.stderr), done.stderr
    assert vssl_cli("store", "info", path).returncode == 0
