"""`vssl aggregate --export` on a ragged view: per-clip Ĉ with the view's counts, a SET token per video.

References are the model applied to each video (or window) alone, unpadded: the batching,
padding and windowing of the export must not show in what it writes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vssl.aggregate import ScaleConfig, export, load_run, train
from vssl.aggregate.exporting import windows
from vssl.cli import app
from vssl.errors import StoreError
from vssl.features_store import FeatureStore, export_hdf5, import_hdf5, verify_store
from vssl.features_store.ragged import padded_batches
from vssl.features_store.synthetic import make_synthetic_store

pytestmark = pytest.mark.usefixtures("one_thread")

COUNTS = [3, 5, 10, 2, 1, 7, 4, 2, 6, 3]


@pytest.fixture(scope="module")
def ragged_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ragged_export")
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(c, 6)).astype(np.float32) for c in COUNTS]
    boxes = []
    for c in COUNTS:                                      # valid boxes: (t0, y0, x0, t1, y1, x1, flip)
        lo = rng.uniform(0, 0.3, size=(c, 3))
        boxes.append(np.concatenate([lo, lo + 0.6, np.zeros((c, 1))], 1).astype(np.float32))
    make_synthetic_store(root / "s", feats, np.zeros(len(COUNTS), int), ["train"] * len(COUNTS), view="d",
                         boxes=boxes, chunk_videos=4, dtype="float32")
    cfg = ScaleConfig(width=16, layers=1, heads=2, pred_hidden=16, target_hidden=16, proj_dim=8, epochs=1,
                      batch_size=4, device="cpu", precision="fp32", seed=0, set_size=2)
    train(root / "s", "d", root / "run", cfg, quiet=True)
    return root, feats, boxes


def alone(model, feats: np.ndarray, boxes: np.ndarray):
    c_hat, cls = model.encode(torch.from_numpy(feats)[None], torch.from_numpy(boxes)[None])
    return c_hat[0].detach().numpy(), cls[0].detach().numpy()


def test_windows_and_batches():
    assert windows(10, 16) == [(0, 10)]
    assert windows(10, 4) == [(0, 3), (3, 7), (7, 10)]            # near-equal, no short last window
    assert windows(8, 4) == [(0, 4), (4, 8)]
    assert padded_batches([5, 1, 300, 2], batch_size=2) == [[1, 3], [0], [2]]  # short first; 2 x 300 > 128


@pytest.mark.slow
def test_ragged_export_writes_each_videos_clips_and_token_as_alone(ragged_run):
    root, feats, boxes = ragged_run
    out = export(root / "s", root / "run", "d", batch_size=2, quiet=True)   # padded batches of 2
    assert out == {"group": "aggregates/run/d", "written": 10, "done": 10, "num_videos": 10}
    store = FeatureStore.open(root / "s")
    refined = store.ragged_group("aggregates/run/d.clips")
    np.testing.assert_array_equal(refined.counts(), COUNTS)              # the source view's counts
    model, _, _ = load_run(root / "run")
    tokens = store.row_group("aggregates/run/d").read("set_token", np.arange(10))
    rows = refined.read(np.arange(10))
    for v in range(10):
        c_hat, cls = alone(model, feats[v], boxes[v])
        np.testing.assert_allclose(rows.features[v, :COUNTS[v]], c_hat, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(tokens[v], cls, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(rows.boxes[v, :COUNTS[v]], boxes[v])  # boxes as stored
    assert verify_store(store) == []
    export_hdf5(store, root / "copy.h5")                    # the ragged aggregate travels with the store
    import_hdf5(root / "copy.h5", root / "copy")
    back = FeatureStore.open(root / "copy").ragged_group("aggregates/run/d.clips").read(np.arange(10))
    np.testing.assert_array_equal(back.features, rows.features)
    assert export(root / "s", root / "run", "d", quiet=True)["written"] == 0     # resumable: nothing left
    with pytest.raises(StoreError, match="export-max-clips"):
        export(root / "s", root / "run", "d", max_clips=4, quiet=True)


@pytest.mark.slow
def test_a_video_longer_than_the_pass_is_encoded_in_windows(ragged_run):
    """max_clips=4: the 10-clip video in windows of 3, 4, 3 clips; its token the clip-weighted mean."""
    root, feats, boxes = ragged_run
    result = CliRunner().invoke(app, ["aggregate", str(root / "s"), "--view", "d", "--from", str(root / "run"),
                                      "--export", "--name", "win", "--export-max-clips", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(root / "s")
    model, _, _ = load_run(root / "run")
    got_clips = store.ragged_group("aggregates/win/d.clips").read([2]).features[0]
    got_token = store.row_group("aggregates/win/d").read("set_token", [2])[0]
    parts = [alone(model, feats[2][a:e], boxes[2][a:e]) for a, e in [(0, 3), (3, 7), (7, 10)]]
    np.testing.assert_allclose(got_clips, np.concatenate([p[0] for p in parts]), rtol=1e-5, atol=1e-5)
    want = (3 * parts[0][1] + 4 * parts[1][1] + 3 * parts[2][1]) / 10
    np.testing.assert_allclose(got_token, want, rtol=1e-5, atol=1e-5)
    _, one_pass = alone(model, feats[2], boxes[2])
    assert not np.allclose(got_token, one_pass, atol=1e-4)          # windowing did change it
    short = store.row_group("aggregates/win/d").read("set_token", [0])[0]  # 3 clips: one pass, as before
    np.testing.assert_allclose(short, alone(model, feats[0], boxes[0])[1], rtol=1e-5, atol=1e-5)
