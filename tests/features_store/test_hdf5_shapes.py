"""HDF5 export/import is exact for every store shape: smaller than a chunk, failed videos, empty and
ragged views, aggregates (a store smaller than one chunk used to crash the export)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from vssl.errors import StoreError
from vssl.features_store import BackboneSpec, FeatureStore, VideoEntry, export_hdf5, import_hdf5, verify_store

BACKBONE = BackboneSpec(name="tiny", embed_dim=4, frames=8, stride=2, size=64, mean=(0.5,) * 3, std=(0.2,) * 3)


def tree(path) -> dict:
    """Every group's and array's attributes and every array's values, by path."""
    out = {}

    def walk(node, prefix):
        out[prefix + "@attrs"] = dict(node.attrs)
        for k in node.array_keys():
            arr = node[k]
            out[prefix + k] = (np.asarray(arr[...]).tolist(), str(arr.dtype), tuple(arr.chunks), dict(arr.attrs))
        for k in node.group_keys():
            walk(node[k], prefix + k + "/")

    walk(zarr.open_group(str(path), mode="r"), "")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 3, 17])
def test_round_trip_is_exact_for_small_stores_failed_videos_and_empty_views(tmp_path, n):
    videos = [VideoEntry(f"v{i}.mp4", label=i % 2, split="train") for i in range(n)]
    store = FeatureStore.create(tmp_path / "s", BACKBONE, videos, classes=["a", "b"], chunk_videos=16)
    store.create_view("fixed", num_clips=2, spec={"sampler": "x"})
    store.create_view("never_written", num_clips=3, spec={"sampler": "x"})
    store.create_view("dense", num_clips=None, spec={"sampler": "y"})
    rng = np.random.default_rng(n)
    for start, stop in store.chunk_ranges():
        idx = list(range(start, stop))
        errors = ["bad file" if i == 0 else None for i in idx]
        counts = [i % 3 + 1 for i in idx]
        store.write_videos(idx, {
            "fixed": (rng.normal(size=(len(idx), 2, 4)), np.tile([0, 0, 0, 1, 1, 1, 0], (len(idx), 2, 1))),
            "dense": ([rng.normal(size=(k, 4)) for k in counts], [np.tile([0, 0, 0, 1, 1, 1, 0], (k, 1)) for k in counts]),
        }, num_frames=[9] * len(idx), fps=[25.0] * len(idx), errors=errors)
    rows = store.create_row_group("aggregates/run/fixed", {"set_token": ((5,), "float32")}, {"run": "run"})
    rows.write(np.arange(min(n, 16)), {"set_token": np.ones((min(n, 16), 5))})
    export_hdf5(store, tmp_path / "s.h5")
    back = import_hdf5(tmp_path / "s.h5", tmp_path / "t")
    assert tree(tmp_path / "s") == tree(tmp_path / "t")
    assert verify_store(back) == verify_store(store) == []
    with pytest.raises(StoreError, match="already exists"):
        export_hdf5(store, tmp_path / "s.h5")
