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
