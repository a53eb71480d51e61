"""`vssl extract --checkpoint ... --key-map ...`: the flag reaches the loader; bad files are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.videos import write_video
from vssl.extract.backbones import create_backbone
from vssl.features_store import FeatureStore


def _one_video(tmp_path):
    folder = tmp_path / "videos" / "cls"
    folder.mkdir(parents=True)
    write_video(folder / "a.mp4", 24, height=48, width=64)
    return tmp_path / "videos"


@pytest.mark.slow
def test_key_map_renames_checkpoint_keys_end_to_end(tmp_path, vssl_cli):
    weights = {f"encoder.{k}": v * 2 for k, v in create_backbone("tiny").state_dict().items()}
    torch.save({"model": weights}, tmp_path / "prefixed.pth")
    videos = _one_video(tmp_path)
    r = vssl_cli("extract", videos, "--out", tmp_path / "plain", "--backbone", "tiny",
                 "--checkpoint", tmp_path / "prefixed.pth", "--quiet")
    assert r.returncode == 2 and "--key-map" in r.stderr and "Traceback" not in r.stderr
    r = vssl_cli("extract", videos, "--out", tmp_path / "s", "--backbone", "tiny", "--checkpoint",
                 tmp_path / "prefixed.pth", "--key-map", r"encoder\.(.*)=\1", "--quiet", "--views", "uniform:1x1")
    assert r.returncode == 0, r.stderr
    store = FeatureStore.open(tmp_path / "s")
    assert store.backbone.checkpoint_sha256 and store.backbone.checkpoint.endswith("prefixed.pth")
    doubled = np.asarray(store.view("uniform1x1").read_features([0]), np.float32)
    r = vssl_cli("extract", videos, "--out", tmp_path / "d", "--backbone", "tiny", "--quiet", "--views", "uniform:1x1")
    default = np.asarray(FeatureStore.open(tmp_path / "d").view("uniform1x1").read_features([0]), np.float32)
    assert not np.allclose(doubled, default)  # the renamed (doubled) weights were really loaded


def test_search_embeds_a_new_file_with_the_recorded_key_map(tmp_path, capsys):
    """A store extracted with --key-map records it, so `vssl search` loads the checkpoint the same way."""
    from tests.probe_helpers import run_cli
    from vssl.extract import extract

    weights = {f"encoder.{k}": v * 2 for k, v in create_backbone("tiny").state_dict().items()}
    torch.save({"model": weights}, tmp_path / "prefixed.pth")
    videos = _one_video(tmp_path)
    extract(videos, tmp_path / "s", backbone="tiny", checkpoint=str(tmp_path / "prefixed.pth"),
            key_map=(r"encoder\.(.*)=\1",), views="uniform:1x1", progress=False)
    assert FeatureStore.open(tmp_path / "s").view("uniform1x1").record["key_map"] == [r"encoder\.(.*)=\1"]
    write_video(tmp_path / "copy.mp4", 24, height=48, width=64)        # the same frames, not in the store
    code, out, err = run_cli(capsys, "search", tmp_path / "s", tmp_path / "copy.mp4", "--json")
    assert code == 0, err
    (hit,) = json.loads(out)["hits"]
    assert hit["path"].endswith("a.mp4") and hit["similarity"] == pytest.approx(1.0, abs=1e-5)
