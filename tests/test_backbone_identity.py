"""One identity rule: extraction, a SCALE run's export and its probe all ask the store the same question."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from vssl.aggregate.checkpoint import check_trained_on
from vssl.errors import StoreError
from vssl.features_store.synthetic import make_synthetic_store


def test_a_run_is_checked_against_the_whole_backbone_record(tmp_path):
    store = make_synthetic_store(tmp_path / "s", np.zeros((4, 2, 3), np.float32), [0, 1, 0, 1], ["train"] * 4)
    bb = store.backbone
    check_trained_on(store, {"backbone_spec": bb.to_dict()}, "run", fix="-")  # same record: accepted
    with pytest.raises(StoreError, match=r"run was made from features of another backbone.*frames.*; retrain"):
        check_trained_on(store, {"backbone_spec": replace(bb, frames=bb.frames + 1).to_dict()}, "run", fix="retrain")
    # runs of vssl 0.1 recorded the name and the checkpoint hash only: those are compared
    check_trained_on(store, {"backbone": bb.name, "backbone_sha256": bb.checkpoint_sha256}, "old", fix="-")
    with pytest.raises(StoreError, match="name: store has"):
        check_trained_on(store, {"backbone": "other", "backbone_sha256": bb.checkpoint_sha256}, "old", fix="-")
