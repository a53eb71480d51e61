"""A new store's chunks are sized by the bytes of one video's rows in its largest view, not by a
video count that assumes K=16 pooled vectors."""

from __future__ import annotations

import pytest

from tests.extract.test_extract import Recorder
from tests.videos import write_video
from vssl.extract.pipeline import extract
from vssl.features_store import FeatureStore, schema

D = 6  # the Recorder's width; float16 rows: 2 bytes a value


@pytest.fixture()
def videos(tmp_path):
    for i in range(3):
        write_video(tmp_path / "v" / "a" / f"{i}.mp4", 12)
    return tmp_path / "v"


@pytest.mark.parametrize("views, chunk", [
    # target 2 videos of random:4 (4 clips x 6 x 2 B = 48 B a video): 2 of them fill it, 4 would not
    ("random:4", 2),
    # uniform:1x1 is 12 B a video: 8 videos fill the same target
    ("uniform:1x1", 8),
    # the largest view decides
    ("a=random:4,b=uniform:1x1", 2),
    # a variable clip count is assumed to be 16 clips (192 B): more than the target, one video a chunk
    ("dense:1.0", 1),
])
@pytest.mark.slow
def test_the_largest_view_sizes_the_chunks(videos, tmp_path, monkeypatch, views, chunk):
    monkeypatch.setattr(schema, "TARGET_CHUNK_BYTES", 2 * 4 * D * 2 + 1)
    extract(videos, tmp_path / "s", model=Recorder(), backbone="recorder", views=views, progress=False)
    assert FeatureStore.open(tmp_path / "s").chunk_videos == chunk


def test_an_explicit_chunk_videos_wins(videos, tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "TARGET_CHUNK_BYTES", 2 * 4 * D * 2 + 1)
    extract(videos, tmp_path / "s", model=Recorder(), backbone="recorder", views="random:4", chunk_videos=3,
            progress=False)
    assert FeatureStore.open(tmp_path / "s").chunk_videos == 3
