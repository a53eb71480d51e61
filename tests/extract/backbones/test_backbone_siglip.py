"""SigLIP per frame against transformers' SiglipVisionModel ``pooler_output``: HF dir and SiglipModel state dict."""

from __future__ import annotations

import logging

import pytest
import torch

from tests.backbone_helpers import TOL, assert_tokens_match, frames_to_grid, randomize_, rel_err
from vssl.extract.backbones import create_backbone
from vssl.extract.backbones.checkpoints import read_checkpoint

transformers = pytest.importorskip("transformers")

DIM, DEPTH, HEADS, PATCH, SIZE, FRAMES = 32, 2, 2, 16, 32, 3


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A tiny random SiglipVisionModel, saved as a dir (transformers 5: unprefixed names) and as the
    ``vision_model.*`` half of a full SiglipModel state dict (hub files' names, text tower beside it)."""
    tmp = tmp_path_factory.mktemp("siglip")
    cfg = transformers.SiglipVisionConfig(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                                          image_size=SIZE, patch_size=PATCH, intermediate_size=64)
    ref = randomize_(transformers.SiglipVisionModel(cfg))
    ref.save_pretrained(tmp / "hf")
    vision = read_checkpoint(tmp / "hf").tensors
    sd = {f"vision_model.{k.removeprefix('vision_model.')}": v for k, v in vision.items()}
    sd |= {"logit_scale": torch.tensor([2.3]), "logit_bias": torch.tensor([-10.0]),
           "text_model.embeddings.token_embedding.weight": torch.zeros(10, 16),
           "text_model.head.weight": torch.zeros(16, 16)}
    torch.save(sd, tmp / "siglip.pt")
    return ref, (tmp / "hf", tmp / "siglip.pt")


@pytest.mark.parametrize("size", [SIZE, 48])
def test_siglip_hf_dir_and_state_dict_match_transformers(reference, size, caplog):
    ref, files = reference
    clips = torch.randn(2, 3, FRAMES, size, size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        frames = clips.transpose(1, 2).reshape(2 * FRAMES, 3, size, size)
        out = ref(pixel_values=frames, interpolate_pos_encoding=size != SIZE).pooler_output
        expected = out.reshape(2, FRAMES, -1).mean(dim=1)
    for ckpt, heads in zip(files, (None, HEADS)):  # a bare state dict does not say its head count (a tiny width)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vssl.extract"):
            model = create_backbone("siglip", ckpt, frames=FRAMES, size=size, num_heads=heads)
        resized = [r for r in caplog.records if "position table" in r.getMessage()]
        assert len(resized) == (size != SIZE), [r.getMessage() for r in resized]
        with torch.no_grad():
            got = model(clips)
        assert model.embed_dim == DIM and model.pooling == "map" and model.spec.mean == (0.5, 0.5, 0.5)
        assert ((got - expected).abs().max() / expected.abs().max()).item() <= TOL, ckpt.name


def test_tokens_and_layers_equal_transformers_hidden_states(reference):
    """Per frame: token grids are ``last_hidden_state`` (``post_layernorm``'s output), frames x patches;
    earlier blocks are ``post_layernorm(hidden_states[-k])`` with the MAP head on them, from one pass."""
    ref, files = reference
    model = create_backbone("siglip", files[0], frames=FRAMES, size=48)
    clips = torch.randn(2, 3, FRAMES, 48, 48, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out = ref(pixel_values=clips.transpose(1, 2).reshape(2 * FRAMES, 3, 48, 48), interpolate_pos_encoding=True,
                  output_hidden_states=True)
        vision = getattr(ref, "vision_model", ref)  # transformers 5 flattens it into the model
        normed = [vision.post_layernorm(out.hidden_states[-k]) for k in range(DEPTH, 0, -1)]
        expected = [(vision.head(t).reshape(2, FRAMES, DIM).mean(dim=1), frames_to_grid(t, 2)) for t in normed]
        pairs = model.forward_tokens(clips, layers=DEPTH)
        embedding = model(clips)
    assert rel_err(normed[-1], out.last_hidden_state) <= TOL
    assert_tokens_match(pairs, expected)
    assert pairs[-1][1].shape == (2, FRAMES, 3, 3, DIM)
    assert torch.equal(pairs[-1][0], embedding)
