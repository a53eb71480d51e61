"""V-JEPA 2 family: the authors' training files and Hugging Face's VJEPA2Model load and equal transformers'
``VJEPA2Model(...).last_hidden_state.mean(1)`` on the same tiny random weights; V-JEPA 1's stored position
table equals transformers' VideoMAE encoder (the same fixed-table, no-RoPE ViT) on the same weights."""

from __future__ import annotations

import pytest
import torch

from tests.backbone_helpers import (TOL, assert_tokens_match, hf_vjepa2_to_released, randomize_, rel_err,
                                    vjepa_training_file)
from vssl.errors import CheckpointError
from vssl.extract.backbones import InputSpec, create_backbone
from vssl.extract.backbones.vjepa2 import VJEPA2ViT

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "VJEPA2Model"):
    pytest.skip("transformers has no VJEPA2Model", allow_module_level=True)

# head_dim 64: 3 rotated thirds of 20 channels and 4 unrotated ones, as in the released ViT-L/g heads
DEPTH, DIM, HEADS, FRAMES, SIZE = 2, 128, 2, 6, 48


def _config(**kw):
    cfg = dict(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS, crop_size=SIZE,
               frames_per_clip=FRAMES, patch_size=16, tubelet_size=2, pred_hidden_size=32, pred_num_hidden_layers=1,
               pred_num_attention_heads=2, num_pooler_layers=1, num_labels=3)
    return transformers.VJEPA2Config(**(cfg | kw))


@pytest.fixture(scope="module")
def hf_model():
    return randomize_(transformers.VJEPA2Model(_config()))


@pytest.fixture(scope="module")
def clips():
    return torch.randn(2, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(hf_model, clips):
    """The encoder output's token mean, as transformers computes it (HF wants (B, T, C, H, W))."""
    with torch.no_grad():
        out = hf_model(pixel_values_videos=clips.permute(0, 2, 1, 3, 4), skip_predictor=True)
    return out.last_hidden_state.mean(dim=1)


def _ours(path, clips, **kw):
    model = create_backbone("vjepa2", path, frames=FRAMES, size=SIZE, **kw)
    with torch.no_grad():
        return model, model(clips)


def test_hf_dir_matches_transformers(tmp_path, hf_model, clips, reference):
    hf_model.save_pretrained(tmp_path / "hf")
    model, ours = _ours(tmp_path / "hf", clips)
    assert ours.shape == (2, DIM) and model.pooling == "mean_tokens" and model.pos_embed is None
    assert rel_err(ours, reference) <= TOL


def test_hf_config_head_count_is_used(tmp_path, clips):
    # 4 heads of 32 at width 128: the shapes say nothing, config.json does (and RoPE splits each head)
    ref_model = randomize_(transformers.VJEPA2Model(_config(num_attention_heads=4)), seed=4)
    ref_model.save_pretrained(tmp_path / "h4")
    with torch.no_grad():
        ref = ref_model(pixel_values_videos=clips.permute(0, 2, 1, 3, 4), skip_predictor=True)
    _, ours = _ours(tmp_path / "h4", clips)
    assert rel_err(ours, ref.last_hidden_state.mean(1)) <= TOL


def test_hf_classification_state_dict_file(tmp_path, hf_model, clips, reference):
    # VJEPA2ForVideoClassification nests the base model under `vjepa2.` next to its pooler and classifier
    clf = transformers.VJEPA2ForVideoClassification(_config())
    clf.vjepa2.load_state_dict(hf_model.state_dict())
    assert any(k.startswith("pooler.") for k in clf.state_dict())
    torch.save(clf.state_dict(), tmp_path / "clf.bin")
    _, ours = _ours(tmp_path / "clf.bin", clips)
    assert rel_err(ours, reference) <= TOL


def test_released_training_file_prefers_target_encoder(tmp_path, hf_model, clips, reference):
    target = hf_vjepa2_to_released(hf_model.state_dict(), DEPTH)
    online = {k: v + 0.1 for k, v in target.items()}  # the online encoder differs from its EMA
    torch.save(vjepa_training_file(online, target), tmp_path / "vitl.pt")
    _, ours = _ours(tmp_path / "vitl.pt", clips)
    assert rel_err(ours, reference) <= TOL


def test_released_encoder_only_file(tmp_path, hf_model, clips, reference):
    # a file with only `encoder` (the hub's key), prefixed `module.` alone
    sd = hf_vjepa2_to_released(hf_model.state_dict(), DEPTH)
    file = vjepa_training_file(sd, None, prefix="module.")
    torch.save(file, tmp_path / "enc.pt")
    _, ours = _ours(tmp_path / "enc.pt", clips)
    assert rel_err(ours, reference) <= TOL


def test_rotary_positions_matter(tmp_path, hf_model, clips, reference, monkeypatch):
    # the comparison can tell: the same weights without the frame axis of RoPE differ beyond the bound
    import vssl.extract.backbones.vjepa2 as vjepa2

    hf_model.save_pretrained(tmp_path / "hf")
    real = vjepa2.rope_tables
    monkeypatch.setattr(vjepa2, "rope_tables", lambda grid, *a: real((1, grid[0] * grid[1], grid[2]), *a))
    _, flat = _ours(tmp_path / "hf", clips)
    assert rel_err(flat, reference) > TOL


def test_tokens_and_layers_equal_transformers_hidden_states(tmp_path, hf_model, clips):
    """Token grids are ``last_hidden_state`` on the (t, h, w) grid; earlier blocks are ``hidden_states[-k]``
    through the final norm (as the authors' ``out_layers``), all from one pass."""
    hf_model.save_pretrained(tmp_path / "hf")
    model = create_backbone("vjepa2", tmp_path / "hf", frames=FRAMES, size=SIZE)
    with torch.no_grad():
        out = hf_model(pixel_values_videos=clips.permute(0, 2, 1, 3, 4), skip_predictor=True,
                       output_hidden_states=True)
        tokens = [hf_model.encoder.layernorm(out.hidden_states[-k]) for k in range(DEPTH, 0, -1)]
        pairs = model.forward_tokens(clips, layers=DEPTH)
        embedding = model(clips)
    assert rel_err(tokens[-1], out.last_hidden_state) <= TOL
    grid = (2, FRAMES // 2, SIZE // 16, SIZE // 16, DIM)
    assert_tokens_match(pairs, [(t.mean(dim=1), t.reshape(grid)) for t in tokens])
    assert torch.equal(pairs[-1][0], embedding)


# ------------------------------------------------------------------ V-JEPA 1: a stored position table


@pytest.fixture(scope="module")
def videomae_encoder():
    """transformers' VideoMAE encoder: fixed table added after the tubelet embedding, no RoPE, final norm."""
    cfg = transformers.VideoMAEConfig(image_size=SIZE, patch_size=16, num_frames=FRAMES, tubelet_size=2,
                                      hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                                      intermediate_size=4 * DIM, use_mean_pooling=False, layer_norm_eps=1e-6)
    return randomize_(transformers.VideoMAEModel(cfg), seed=7)


def _vjepa1_from_videomae(model) -> dict[str, torch.Tensor]:
    """The same weights in V-JEPA 1's layout: a full qkv bias (VideoMAE's k bias is zero) and the table stored."""
    hf = model.state_dict()
    sd = {"patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
          "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
          "pos_embed": model.embeddings.position_embeddings.clone(),
          "norm.weight": hf["layernorm.weight"], "norm.bias": hf["layernorm.bias"]}
    for i in range(DEPTH):
        a, b = f"encoder.layer.{i}.", f"blocks.{i}."
        att = a + "attention.attention."
        sd[b + "attn.qkv.weight"] = torch.cat([hf[f"{att}{n}.weight"] for n in ("query", "key", "value")])
        sd[b + "attn.qkv.bias"] = torch.cat([hf[att + "query.bias"], torch.zeros(DIM), hf[att + "value.bias"]])
        for ours, theirs in (("attn.proj", "attention.output.dense"), ("norm1", "layernorm_before"),
                             ("norm2", "layernorm_after"), ("mlp.fc1", "intermediate.dense"),
                             ("mlp.fc2", "output.dense")):
            for t in ("weight", "bias"):
                sd[f"{b}{ours}.{t}"] = hf[f"{a}{theirs}.{t}"]
    return sd


def test_vjepa1_stored_table_matches_the_fixed_table_vit(tmp_path, videomae_encoder, clips):
    sd = _vjepa1_from_videomae(videomae_encoder)
    torch.save(vjepa_training_file(sd, sd), tmp_path / "vjepa1.pth.tar")
    model, ours = _ours(tmp_path / "vjepa1.pth.tar", clips)
    with torch.no_grad():
        ref = videomae_encoder(pixel_values=clips.permute(0, 2, 1, 3, 4)).last_hidden_state.mean(dim=1)
    assert model.pos_embed is not None
    assert rel_err(ours, ref) <= TOL
    # the table fits one clip grid: another is refused in one line that says what to pass
    other = create_backbone("vjepa2", tmp_path / "vjepa1.pth.tar", frames=FRAMES, size=SIZE + 16)
    with pytest.raises(CheckpointError, match="frames and size it was trained with") as info:
        other(torch.zeros(1, 3, FRAMES, SIZE + 16, SIZE + 16))
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ shapes and errors


def test_vit_giant_gets_vjepa2s_22_heads():
    meta = lambda *s: torch.empty(*s, device="meta")  # noqa: E731  shapes only
    sd = {"patch_embed.proj.weight": meta(1408, 3, 2, 16, 16), "blocks.0.attn.qkv.weight": meta(3 * 1408, 1408),
          "blocks.0.attn.qkv.bias": meta(3 * 1408), "blocks.0.mlp.fc1.weight": meta(6144, 1408)}
    arch = VJEPA2ViT.arch_from_state_dict(sd, InputSpec(), "g.pt")
    assert arch["shape"].num_heads == 22 and arch["shape"].mlp_hidden == 6144 and arch["pos_tokens"] == 0
    assert VJEPA2ViT.arch_from_state_dict(sd, InputSpec(), "g.pt", num_heads=16)["shape"].num_heads == 16


def test_wrong_checkpoint_is_one_line(tmp_path):
    from vssl.extract.backbones.slowonly import SlowOnlyR50

    torch.save({"model_state": SlowOnlyR50(width=8).state_dict()}, tmp_path / "rho.pyth")
    with pytest.raises(CheckpointError) as info:
        create_backbone("vjepa2", tmp_path / "rho.pyth")
    assert "\n" not in str(info.value) and "rho.pyth" in str(info.value) and "vjepa2" in str(info.value)
