"""A run exported under another name (`vssl aggregate --export --name`) is found by `vssl probe --scale`."""

import json

import pytest

from vssl.cli import main
from vssl.features_store import FeatureStore

from tests.probe_helpers import VIEW, tiny_store_and_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store_and_run(tmp_path_factory):
    return tiny_store_and_run(tmp_path_factory.mktemp("export_name"))


def _vssl(capsys, *args) -> str:
    """Run `vssl` in-process; its stdout (a failing command fails the test)."""
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code == 0, capsys.readouterr().err
    return capsys.readouterr().out


@pytest.mark.slow
def test_probe_uses_an_export_made_with_name(store_and_run, capsys):
    store, run = store_and_run
    _vssl(capsys, "aggregate", store, "--view", VIEW, "--export", "--from", run, "--name", "custom", "--quiet")
    report = json.loads(_vssl(capsys, "probe", store, "--view", VIEW, "--knn", "--scale", run, "--quiet", "--json"))
    scale_row = next(r for r in report["results"] if r["features"] == "scale")
    assert scale_row["params"]["aggregates"] == f"aggregates/custom/{VIEW}"
    groups = FeatureStore.open(store).row_group_paths()
    assert f"aggregates/{run.name}/{VIEW}" not in groups, "the probe exported the run a second time"
