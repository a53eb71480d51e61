"""A run exported under another name (`vssl aggregate --export --name`) is found by `vssl probe --scale`."""

import json

import numpy as np
import pytest

from vssl.cli import main
from vssl.features_store import FeatureStore
from vssl.features_store.synthetic import make_synthetic_store

VIEW = "uniform5x3"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store_and_run(tmp_path_factory):
    from vssl.aggregate import ScaleConfig, train

    rng = np.random.default_rng(0)
    y = np.arange(48) % 3
    x = (3 * rng.normal(size=(3, 8))[y][:, None] + rng.normal(size=(48, 4, 8))).astype(np.float32)
    root = tmp_path_factory.mktemp("export_name")
    make_synthetic_store(root / "store", x, y, ["train"] * 36 + ["test"] * 12, view=VIEW, chunk_videos=16)
    cfg = ScaleConfig(width=16, layers=1, heads=2, pred_hidden=32, target_hidden=32, proj_dim=8, epochs=1,
                      batch_size=16, device="cpu", precision="fp32", seed=0)
    train(root / "store", VIEW, root / "myrun", cfg, quiet=True)
    return root / "store", root / "myrun"


def _vssl(capsys, *args) -> str:
    """Run `vssl` in-process; its stdout (a failing command fails the test)."""
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_probe_uses_an_export_made_with_name(store_and_run, capsys):
    store, run = store_and_run
    _vssl(capsys, "aggregate", store, "--view", VIEW, "--export", "--from", run, "--name", "custom", "--quiet")
    report = json.loads(_vssl(capsys, "probe", store, "--view", VIEW, "--knn", "--scale", run, "--quiet", "--json"))
    scale_row = next(r for r in report["results"] if r["features"] == "scale")
    assert scale_row["params"]["aggregates"] == f"aggregates/custom/{VIEW}"
    groups = FeatureStore.open(store).row_group_paths()
    assert f"aggregates/{run.name}/{VIEW}" not in groups, "the probe exported the run a second time"
