"""The demo's procedural dataset: seeded, balanced, varied, decodable, long-range classes symmetric."""

from __future__ import annotations

import csv

import av
import numpy as np
import pytest

from vssl.demo.dataset import CLASSES, LONG_RANGE_CLASSES, RED, BLUE, VideoSpec, generate_dataset, render_video, sample_specs


def test_specs_are_seeded_balanced_and_varied():
    a, b = sample_specs(60, seed=3), sample_specs(60, seed=3)
    assert a == b and a != sample_specs(60, seed=4)
    counts = np.bincount([s.label for s in a], minlength=len(CLASSES))
    assert counts.tolist() == [10] * len(CLASSES)
    assert len({s.frames for s in a}) > 10 and len({(s.height, s.width) for s in a}) > 10
    assert len({s.fps for s in a}) > 2
    assert all(s.height % 2 == 0 and s.width % 2 == 0 for s in a)  # yuv420p needs even sizes


def _event_frames(frames: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Frame indices where a patch of the event colour is visible."""
    close = (np.abs(frames.astype(np.float32) - colour).max(axis=-1) < 40).mean(axis=(1, 2))
    return np.flatnonzero(close > 0.02)


@pytest.mark.slow
def test_long_range_classes_differ_only_in_event_order():
    for name in LONG_RANGE_CLASSES:
        label = CLASSES.index(name)
        for seed in range(4):
            frames = render_video(VideoSpec(label, 80, 64, 80, 25.0, seed))
            red, blue = _event_frames(frames, RED), _event_frames(frames, BLUE)
            assert red.size and blue.size
            first, second = (red, blue) if name == "red_then_blue" else (blue, red)
            assert first.max() < second.min()          # the order is the label ...
            assert first.max() < 0.5 * 80 <= second.min()  # ... and the events are far apart


def test_generated_files_decode_with_the_manifest_labels(tmp_path):
    manifest = generate_dataset(tmp_path, num_videos=6, seed=1, frames=(20, 24), sizes=(32, 40))
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 6 and {r["label"] for r in rows} == set(CLASSES)
    assert {r["split"] for r in rows} <= {"train", "test"}
    specs = sample_specs(6, seed=1, frames=(20, 24), sizes=(32, 40))
    for row, spec in zip(rows, specs):
        assert row["label"] == CLASSES[spec.label] and row["path"].startswith(row["label"] + "/")
        with av.open(str(tmp_path / row["path"])) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == spec.frames and frames[0].shape == (spec.height, spec.width, 3)
