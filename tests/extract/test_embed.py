"""`vssl.embed`: clip features of files in no store, equal bit for bit to what `extract` stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import vssl
from tests.videos import write_class_folder
from vssl.errors import VsslError
from vssl.extract.pipeline import extract
from vssl.features_store import FeatureStore

pytestmark = pytest.mark.usefixtures("one_thread")

#: a random, an evaluation and a ragged (dense) view: each kind's placement and randomness is covered
SETTINGS = dict(backbone="tiny", views="random:2,uniform:2x2,dense:1.0", frames=4, stride=2, size=32,
                batch_size=3, device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three readable videos of different lengths and one broken file, in two class folders."""
    return write_class_folder(tmp_path_factory.mktemp("embed_videos"), {"a/v0.mp4": 30, "a/v1.mp4": 61, "b/v2.mp4": 17})


@pytest.fixture(scope="module")
def stored(folder, tmp_path_factory) -> FeatureStore:
    out = tmp_path_factory.mktemp("embed_store") / "s"
    summary = extract(folder, out, progress=False, **SETTINGS)
    assert summary.done == 3 and summary.failed == 1
    return FeatureStore.open(out)


def stored_rows(store: FeatureStore, view: str, i: int) -> tuple[np.ndarray, np.ndarray]:
    rows = store.view(view).read(np.array([i]))
    n = int(rows.counts[0])
    return rows.features[0, :n], rows.boxes[0, :n]


@pytest.mark.slow
def test_embed_equals_what_extract_stores_bit_for_bit(folder, stored):
    results = vssl.embed(folder, **SETTINGS)
    paths = stored.paths().tolist()
    assert [Path(r.path).relative_to(folder).as_posix() for r in results] == paths
    for i, result in enumerate(results):
        if paths[i].endswith("bad.mp4"):
            assert not result.ok and result.error and result.features == {}
            assert stored.errors()[i]  # extract failed it too
            continue
        assert result.ok and result.num_frames == stored.num_frames()[i]
        assert set(result.features) == set(stored.view_names())
        for view in stored.view_names():
            features, boxes = stored_rows(stored, view, i)
            assert result.features[view].dtype == features.dtype  # the stored dtype (float16 by default)
            np.testing.assert_array_equal(result.features[view], features, err_msg=f"{paths[i]} {view}")
            np.testing.assert_array_equal(result.boxes[view], boxes, err_msg=f"{paths[i]} {view}")


def test_one_file_keyed_by_its_recorded_path_gets_the_stored_rows(folder, stored):
    """The key (the path as given, relative to ``root``) seeds a random view, as in the store."""
    i = stored.paths().tolist().index("a/v1.mp4")
    (result,) = vssl.embed(["a/v1.mp4"], root=folder, **SETTINGS)
    for view in stored.view_names():
        np.testing.assert_array_equal(result.features[view], stored_rows(stored, view, i)[0])
    (alone,) = vssl.embed(folder / "a" / "v1.mp4", **{**SETTINGS, "views": "uniform:2x2", "dtype": "float32"})
    assert alone.features["uniform2x2"].dtype == np.float32 and alone.features["uniform2x2"].shape == (4, 128)
    np.testing.assert_allclose(alone.features["uniform2x2"], result.features["uniform2x2"], atol=1e-3)


def test_embed_refuses_bad_settings_and_an_empty_list(folder):
    with pytest.raises(VsslError, match="batch-size"):
        vssl.embed(folder, **{**SETTINGS, "batch_size": 0})
    with pytest.raises(VsslError, match="at least one video"):
        vssl.embed([], **SETTINGS)
