"""``box_encoding``: the boxes SCALE reads, absolute (as stored) or as the released code encodes them.

The reference is the released rule written out here in numpy, in the released layout
(SlowFast ``datasets/dataset.py`` ``normalize_pos_info`` on ``(flipped, h0, w0, h1, w1, t0, t1)``
per dataset item; flip +1 mirrored, -1 otherwise, deterministic test crops included), and a
hand-computed example. The tests then check that a run records its encoding and that training,
``--export`` and the set probes all feed the box embedding what that rule gives.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vssl.aggregate.boxes import encode_boxes, encode_flat
from vssl.aggregate.model import ScaleModel
from vssl.features_store import FeatureStore
from vssl.features_store.ragged import RaggedClips
from vssl.features_store.synthetic import make_synthetic_store

from tests.probe_helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

VIEW = "uniform5x3"


def released_item(pos: np.ndarray) -> np.ndarray:
    """``normalize_pos_info`` of one item ``[clips, 7]`` in the released layout, min-max per axis."""
    pos = pos.astype(np.float64).copy()
    for lo_col, hi_col in ((1, 3), (2, 4), (5, 6)):
        lo, hi = pos[:, lo_col].min(), pos[:, hi_col].max()
        pos[:, [lo_col, hi_col]] = (pos[:, [lo_col, hi_col]] - lo) / (hi - lo)
    return pos


def to_released_layout(box: np.ndarray) -> np.ndarray:
    """vssl's stored box (t0, y0, x0, t1, y1, x1, flip 1/0) as the released pos_info: (flip +1/-1,
    h0, w0, h1, w1, t0, t1)."""
    t0, y0, x0, t1, y1, x1, flip = np.moveaxis(box, -1, 0)
    return np.stack([np.where(flip > 0.5, 1.0, -1.0), y0, x0, y1, x1, t0, t1], axis=-1)


def from_released_layout(pos: np.ndarray) -> np.ndarray:
    flip, h0, w0, h1, w1, t0, t1 = np.moveaxis(pos, -1, 0)
    return np.stack([t0, h0, w0, t1, h1, w1, flip], axis=-1)


def reference(boxes: np.ndarray) -> np.ndarray:
    """The released encoding of each video's clips ``[n, K, 7]`` (vssl layout in and out)."""
    return np.stack([from_released_layout(released_item(to_released_layout(b))) for b in boxes])


def random_boxes(rng, n: int, k: int) -> np.ndarray:
    """Plausible stored boxes: crops inside the frame, clips inside the video, some mirrored."""
    t0 = rng.uniform(0, 0.7, (n, k))
    y0, x0 = rng.uniform(0, 0.4, (n, k)), rng.uniform(0, 0.4, (n, k))
    h, w = rng.uniform(0.3, 0.6, (n, k)), rng.uniform(0.3, 0.6, (n, k))
    flip = (rng.random((n, k)) < 0.5).astype(np.float64)
    return np.stack([t0, y0, x0, t0 + 0.3, y0 + h, x0 + w, flip], axis=-1).astype(np.float32)


def test_a_hand_computed_item():
    # three evaluation crops of one video (left, centre, right of a 4:3 frame at two times), unflipped
    boxes = np.array([[[0.0, 0.0, 0.00, 0.5, 1.0, 0.75, 0.0],
                       [0.0, 0.0, 0.125, 0.5, 1.0, 0.875, 0.0],
                       [0.5, 0.0, 0.25, 1.0, 1.0, 1.0, 1.0]]], np.float32)
    want = np.array([[[0.0, 0.0, 0.0, 0.5, 1.0, 0.75, -1.0],
                      [0.0, 0.0, 0.125, 0.5, 1.0, 0.875, -1.0],
                      [0.5, 0.0, 0.25, 1.0, 1.0, 1.0, 1.0]]])
    np.testing.assert_allclose(encode_boxes(boxes, "released"), want)
    # the same crops in a part of the frame and of the video: min-max stretches each axis to [0, 1]
    part = boxes.copy()
    part[..., [1, 4]] = 0.2 + 0.5 * part[..., [1, 4]]
    part[..., [2, 5]] = 0.1 + 0.4 * part[..., [2, 5]]
    part[..., [0, 3]] = 0.3 + 0.2 * part[..., [0, 3]]
    np.testing.assert_allclose(encode_boxes(part, "released"), want, atol=1e-6)
    assert encode_boxes(boxes, "absolute") is boxes


def test_released_encoding_matches_normalize_pos_info_per_video():
    rng = np.random.default_rng(0)
    boxes = random_boxes(rng, 5, 6)
    np.testing.assert_allclose(encode_boxes(boxes, "released"), reference(boxes), atol=1e-6)
    # a ragged view: each video over its own clips
    counts = [1, 4, 6, 2]
    flat = random_boxes(rng, 1, sum(counts))[0]
    out = encode_boxes(RaggedClips.from_counts(flat, counts), "released")
    offsets = np.concatenate(([0], np.cumsum(counts)))
    for i in range(len(counts)):
        video = flat[offsets[i]:offsets[i + 1]][None]
        got = out.flat[offsets[i]:offsets[i + 1]]
        if counts[i] == 1:   # one clip spans its own range: 0..1 on every axis
            np.testing.assert_allclose(got[0, :6], [0, 0, 0, 1, 1, 1])
        else:
            np.testing.assert_allclose(got, reference(video)[0], atol=1e-6)


def test_a_zero_range_is_zero_not_nan():
    boxes = np.zeros((1, 3, 7), np.float32)              # degenerate: every coordinate equal
    out = encode_flat(boxes[0], np.array([0, 3]), "released")
    assert np.isfinite(out).all() and (out[:, :6] == 0).all() and (out[:, 6] == -1).all()


# ---------------------------------------------------------------------- through the stages


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A 3-class store whose clips have varied boxes (36 train, 12 test videos of 4 clips, 8-d)."""
    root = tmp_path_factory.mktemp("boxes")
    rng = np.random.default_rng(3)
    y = np.arange(48) % 3
    x = (3 * rng.normal(size=(3, 8))[y][:, None] + rng.normal(size=(48, 4, 8))).astype(np.float32)
    make_synthetic_store(root / "store", x, y, ["train"] * 36 + ["test"] * 12, view=VIEW, classes=["a", "b", "c"],
                         boxes=random_boxes(rng, 48, 4), chunk_videos=16)
    return root / "store"


TINY = ["--width", "16", "--layers", "1", "--heads", "2", "--pred-hidden", "32", "--target-hidden", "32",
        "--proj-dim", "8", "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--precision", "fp32",
        "--quiet"]


class BoxInputs:
    """Every box the SCALE model's box embedding reads while active."""

    def __enter__(self):
        self.rows = []
        original = ScaleModel._transform

        def spy(model, tokens, boxes, valid=None):
            keep = boxes if valid is None else boxes[valid.to(boxes.device)]
            self.rows.append(keep.detach().reshape(-1, boxes.shape[-1]).double().cpu().numpy())
            return original(model, tokens, boxes, valid)
        self._patch = pytest.MonkeyPatch()
        self._patch.setattr(ScaleModel, "_transform", spy)
        return self

    def __exit__(self, *exc):
        self._patch.undo()

    def all(self) -> np.ndarray:
        return np.concatenate(self.rows)


def _among(rows: np.ndarray, candidates: np.ndarray) -> bool:
    """Whether every row is one of ``candidates``' rows (float32 rounding)."""
    dist = np.abs(rows[:, None, :] - candidates.reshape(-1, 7)[None]).max(axis=-1)
    return bool((dist.min(axis=1) < 1e-5).all())


def _stored_boxes(store) -> np.ndarray:
    return FeatureStore.open(store).view(VIEW).read_boxes(np.arange(48)).astype(np.float64)


@pytest.fixture(scope="module")
def released_run(store, tmp_path_factory):
    from vssl.cli import main

    run = tmp_path_factory.mktemp("released") / "run"
    with BoxInputs() as seen:
        try:
            main(["aggregate", str(store), "--view", VIEW, "--out", str(run), "--split", "all",
                  "--box-encoding", "released", *TINY])
        except SystemExit as exc:
            assert exc.code in (0, None)
    return run, seen.all()


def test_training_reads_the_runs_encoding_and_records_it(store, released_run):
    from vssl.aggregate import load_run

    run, trained_on = released_run
    stored = _stored_boxes(store)
    assert _among(trained_on, reference(stored))            # every set's boxes: encoded over the video's clips
    assert not _among(trained_on, stored)                   # not the stored ones
    _, cfg, _ = load_run(run)
    assert cfg.box_encoding == "released"


@pytest.mark.slow
def test_export_and_set_probes_apply_the_runs_encoding(store, released_run, capsys):
    run, _ = released_run
    stored = _stored_boxes(store)
    with BoxInputs() as seen:
        code, _, err = run_cli(capsys, "aggregate", store, "--from", run, "--export", "--view", VIEW, "--quiet")
    assert code == 0, err
    np.testing.assert_allclose(seen.all(), reference(stored).reshape(-1, 7), atol=1e-6)   # video by video, in order
    np.testing.assert_array_equal(_stored_boxes(store), stored)                            # the store keeps them absolute

    with BoxInputs() as seen:
        code, out, err = run_cli(capsys, "probe", store, "--view", VIEW, "--scale", run, "--finetune", "--transformer",
                                 "--epochs", "1", "--lr", "0.01", "--batch-size", "8", "--device", "cpu",
                                 "--precision", "fp32", "--quiet", "--report", run.parent / "r.json")
    assert code == 0, err
    assert _among(seen.all(), reference(stored)) and not _among(seen.all(), stored)
    rows = json.loads((run.parent / "r.json").read_text())["results"]
    assert {r["probe"]: r["params"]["box_encoding"] for r in rows} == {"transformer": "released", "scale_ft": "released"}

    code, _, err = run_cli(capsys, "probe", store, "--view", VIEW, "--scale", run, "--finetune",
                           "--box-encoding", "absolute", "--device", "cpu", "--quiet")
    assert code == 2 and "--box-encoding absolute" in err and "released" in err


@pytest.mark.slow
def test_an_older_run_without_the_setting_reads_absolute_boxes(store, tmp_path, capsys):
    from vssl.aggregate import load_run
    from vssl.aggregate.checkpoint import checkpoint_path

    run = tmp_path / "old"
    code, _, err = run_cli(capsys, "aggregate", store, "--view", VIEW, "--out", run, "--split", "all", *TINY)
    assert code == 0, err
    state = torch.load(checkpoint_path(run), weights_only=True)
    del state["config"]["box_encoding"]                      # as written before the setting existed
    torch.save(state, checkpoint_path(run))
    assert load_run(run)[1].box_encoding == "absolute"
    with BoxInputs() as seen:
        code, _, err = run_cli(capsys, "aggregate", store, "--from", run, "--export", "--view", VIEW, "--quiet")
    assert code == 0, err
    np.testing.assert_allclose(seen.all(), _stored_boxes(store).reshape(-1, 7), atol=1e-6)


def test_unknown_encoding_is_one_line(store, tmp_path, capsys):
    code, _, err = run_cli(capsys, "aggregate", store, "--view", VIEW, "--out", tmp_path / "r",
                           "--box-encoding", "pixels", *TINY)
    assert code == 2 and "box_encoding" in err and "released" in err


@pytest.mark.slow
def test_set_probe_options_reach_the_rows(store, tmp_path, capsys):
    """``--no-standardize`` (the released head has no input standardisation) and ``--box-encoding``
    without a run reach both set probes' rows."""
    with BoxInputs() as seen:
        code, _, err = run_cli(capsys, "probe", store, "--view", VIEW, "--transformer", "--no-standardize",
                               "--box-encoding", "released", "--epochs", "1", "--lr", "0.01", "--batch-size", "8",
                               "--device", "cpu", "--precision", "fp32", "--quiet", "--report", tmp_path / "t.json")
    assert code == 0, err
    row = json.loads((tmp_path / "t.json").read_text())["results"][0]
    assert row["params"]["standardize"] is False and row["params"]["input"] == "[C_i, SET] per clip"
    assert row["params"]["box_encoding"] == "released"
    assert _among(seen.all(), reference(_stored_boxes(store)))


def test_no_videos_encode_to_no_boxes():
    """An empty split (fixed or ragged layout) passes through, as every other split does."""
    assert encode_boxes(np.zeros((0, 5, 7), np.float32), "released").shape == (0, 5, 7)
    empty = RaggedClips(np.zeros((0, 7), np.float32), np.zeros(1, np.int64))
    assert encode_boxes(empty, "released").flat.shape == (0, 7)

