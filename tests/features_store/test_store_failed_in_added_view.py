"""A video that fails while a re-run adds a view is failed in every view, and the store still verifies."""

from __future__ import annotations

import numpy as np

from vssl.features_store import verify_store
from vssl.features_store.synthetic import make_synthetic_store, uniform_boxes


def test_failure_while_adding_a_view_clears_the_other_views_done_flags(tmp_path):
    rng = np.random.default_rng(0)
    store = make_synthetic_store(tmp_path / "s", rng.normal(size=(6, 2, 8)).astype(np.float32),
                                 labels=[0, 1] * 3, splits=["train"] * 6, view="a", chunk_videos=6)
    store.create_view("b", num_clips=2, spec={"sampler": "synthetic", "clips": 2})
    idx = np.arange(6)
    feats = rng.normal(size=(6, 2, 8)).astype(np.float32)
    store.write_videos(idx, {"b": (feats, uniform_boxes(6, 2))}, num_frames=[10] * 6, fps=[25.0] * 6,
                       errors=[None, None, "unreadable on this node", None, None, None])
    assert verify_store(store) == []
    assert not store.view("a").done()[2] and store.view("a").done()[[0, 1, 3, 4, 5]].all()
    assert 2 not in store.usable("a") and 2 not in store.usable("b")


def test_a_split_verify_reports_whole_view_problems_once(tmp_path):
    """Under torchrun every rank verifies its own chunks and rank 0 the table: a problem of the whole
    view (done flags of a failed video) comes from the table's rank only, not once per rank."""
    rng = np.random.default_rng(0)
    store = make_synthetic_store(tmp_path / "s", rng.normal(size=(4, 2, 8)).astype(np.float32),
                                 labels=[0, 1] * 2, splits=["train"] * 4, view="a", chunk_videos=2)
    store.write_videos([0, 1], {"a": (rng.normal(size=(2, 2, 8)).astype(np.float32), uniform_boxes(2, 2))},
                       num_frames=[10, 10], fps=[25.0, 25.0], errors=["broken", None])
    store.view("a").mark(np.array([0]), np.array([True]))  # an inconsistent store: done rows of a failed video
    whole = [p for p in verify_store(store) if "failed videos" in p]
    assert len(whole) == 1
    per_rank = [p for r in ([(0, 2)], [(2, 4)]) for p in verify_store(store, ranges=r, table=False)]
    assert not [p for p in per_rank if "failed videos" in p]
