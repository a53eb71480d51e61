"""`--checkpoint org/name` resolves from a local Hugging Face cache, never the network; a miss is one line."""

from __future__ import annotations

import pytest
import torch

from tests.backbone_helpers import TOL, randomize_
from vssl.errors import CheckpointError
from vssl.extract.backbones import create_backbone

transformers = pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _fake_cache(root, repo_id: str, model) -> None:
    """The hub cache layout: models--org--name/{refs/main, snapshots/<hash>/files}."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    model.save_pretrained(repo / "snapshots" / REVISION)


def test_model_id_loads_from_the_cache_offline(tmp_path, monkeypatch):
    cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=28,
                                    patch_size=14, mlp_ratio=2)
    ref = randomize_(transformers.Dinov2Model(cfg))
    _fake_cache(tmp_path / "hub", "facebook/dinov2-small", ref)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no ./facebook/dinov2-small directory to mistake for it
    model = create_backbone("dinov2", "facebook/dinov2-small", frames=2, size=28)
    assert model.checkpoint_path.name == REVISION
    clips = torch.randn(1, 3, 2, 28, 28)
    with torch.no_grad():
        expected = ref(pixel_values=clips.transpose(1, 2)[0]).pooler_output.mean(dim=0, keepdim=True)
        assert (model(clips) - expected).abs().max() <= TOL * expected.abs().max()


def test_missing_model_id_is_one_line_naming_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as info:
        create_backbone("dinov2", "facebook/dinov2-giant")
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path / "empty") in msg and "facebook/dinov2-giant" in msg


def test_existing_relative_path_is_not_a_model_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    torch.save({"weight": torch.zeros(1)}, tmp_path / "runs" / "ckpt")
    with pytest.raises(CheckpointError, match="does not fit|not a dinov2 checkpoint"):  # read as a file
        create_backbone("dinov2", "runs/ckpt")
