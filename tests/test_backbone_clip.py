"""CLIP per frame against transformers' CLIPVisionModelWithProjection, in the HF, OpenAI and open_clip layouts."""

from __future__ import annotations

import pytest
import torch

from tests.backbone_helpers import TOL, randomize_
from vssl.extract.backbones import create_backbone
from vssl.extract.backbones.checkpoints import read_checkpoint

transformers = pytest.importorskip("transformers")

DIM, DEPTH, HEADS, PATCH, SIZE, FRAMES, OUT = 32, 2, 2, 16, 32, 3, 24


def hf_clip_to_openai(hf: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """transformers' CLIP vision names -> OpenAI CLIP's ``visual.*`` (``model.py``: VisionTransformer,
    ResidualAttentionBlock with nn.MultiheadAttention's ``in_proj_weight``), from both models' code;
    ``visual_projection`` is ``x @ proj``, so ``proj`` is its weight transposed."""
    v = {k.removeprefix("vision_model."): t for k, t in hf.items()}
    sd = {"visual.conv1.weight": v["embeddings.patch_embedding.weight"],
          "visual.class_embedding": v["embeddings.class_embedding"],
          "visual.positional_embedding": v["embeddings.position_embedding.weight"],
          "visual.proj": hf["visual_projection.weight"].t().contiguous()}
    for t in ("weight", "bias"):
        sd[f"visual.ln_pre.{t}"] = v[f"pre_layrnorm.{t}"]
        sd[f"visual.ln_post.{t}"] = v[f"post_layernorm.{t}"]
    for i in range(depth):
        a, b = f"encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        sd[b + "attn.in_proj_weight"] = torch.cat([v[f"{a}self_attn.{n}_proj.weight"] for n in "qkv"])
        sd[b + "attn.in_proj_bias"] = torch.cat([v[f"{a}self_attn.{n}_proj.bias"] for n in "qkv"])
        for ours, theirs in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                             ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            for t in ("weight", "bias"):
                sd[f"{b}{ours}.{t}"] = v[f"{a}{theirs}.{t}"]
    # the text tower and logit scale sit next to the image tower in a full CLIP state dict
    sd |= {"positional_embedding": torch.zeros(77, 16), "token_embedding.weight": torch.zeros(10, 16),
           "transformer.resblocks.0.ln_1.weight": torch.ones(16), "text_projection": torch.zeros(16, OUT),
           "logit_scale": torch.tensor(4.6)}
    return sd


def _reference(tmp_path, act: str):
    cfg = transformers.CLIPVisionConfig(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                                        image_size=SIZE, patch_size=PATCH, intermediate_size=64,
                                        projection_dim=OUT, hidden_act=act)
    ref = randomize_(transformers.CLIPVisionModelWithProjection(cfg))
    ref.save_pretrained(tmp_path / "hf")
    return ref


def _check(model, ref, size: int) -> None:
    clips = torch.randn(2, 3, FRAMES, size, size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        frames = clips.transpose(1, 2).reshape(2 * FRAMES, 3, size, size)
        out = ref(pixel_values=frames, interpolate_pos_encoding=size != SIZE).image_embeds
        expected = out.reshape(2, FRAMES, -1).mean(dim=1)
        got = model(clips)
    assert model.embed_dim == OUT and model.spec.mean[0] == pytest.approx(0.48145466)
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= TOL


@pytest.mark.parametrize("size", [SIZE, 48])
def test_clip_openai_layout_and_hf_dir_match_transformers(tmp_path, size):
    ref = _reference(tmp_path, "quick_gelu")  # OpenAI's weights: QuickGELU
    torch.save(hf_clip_to_openai(read_checkpoint(tmp_path / "hf").tensors, DEPTH), tmp_path / "ViT-tiny.pt")
    for ckpt in (tmp_path / "hf", tmp_path / "ViT-tiny.pt"):
        _check(create_backbone("clip", ckpt, frames=FRAMES, size=size, num_heads=HEADS), ref, size)


def test_open_clip_gelu_checkpoint_with_act_hint(tmp_path):
    """open_clip saves {"state_dict": {"module.visual...."}}; LAION models use plain GELU, said by ``act``."""
    ref = _reference(tmp_path, "gelu")
    sd = {f"module.{k}": v for k, v in hf_clip_to_openai(read_checkpoint(tmp_path / "hf").tensors, DEPTH).items()}
    torch.save({"epoch": 32, "state_dict": sd}, tmp_path / "epoch_32.pt")
    _check(create_backbone("clip", tmp_path / "epoch_32.pt", frames=FRAMES, size=SIZE, num_heads=HEADS,
                           act="gelu"), ref, SIZE)
    _check(create_backbone("clip", tmp_path / "hf", frames=FRAMES, size=SIZE), ref, SIZE)  # config says gelu
