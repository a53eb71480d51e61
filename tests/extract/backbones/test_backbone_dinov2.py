"""DINOv2 per frame against transformers' Dinov2Model / Dinov2WithRegistersModel, in both released layouts."""

from __future__ import annotations

import pytest
import torch

from tests.backbone_helpers import TOL, assert_tokens_match, frames_to_grid, randomize_
from vssl.extract.backbones import create_backbone
from vssl.extract.backbones.checkpoints import read_checkpoint

transformers = pytest.importorskip("transformers")

DIM, DEPTH, HEADS, PATCH, SIZE, FRAMES = 32, 2, 2, 14, 28, 3


def hf_dinov2_to_hub(hf: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """transformers' DINOv2 names as saved on the Hub -> facebookresearch/dinov2's, from both models' code:
    ``Dinov2Embeddings`` vs ``DinoVisionTransformer`` (cls_token, pos_embed, register_tokens, mask_token,
    patch_embed.proj), ``Dinov2Layer`` vs ``Block`` (fused qkv; ``layer_scaleN.lambda1`` = ``lsN.gamma``;
    SwiGLU ``weights_in``/``weights_out`` = ``w12``/``w3``), ``layernorm`` = ``norm``."""
    sd = {"cls_token": hf["embeddings.cls_token"], "pos_embed": hf["embeddings.position_embeddings"],
          "mask_token": hf["embeddings.mask_token"].reshape(1, -1),
          "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
          "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
          "norm.weight": hf["layernorm.weight"], "norm.bias": hf["layernorm.bias"]}
    if "embeddings.register_tokens" in hf:
        sd["register_tokens"] = hf["embeddings.register_tokens"]
    for i in range(depth):
        a, b = f"encoder.layer.{i}.", f"blocks.{i}."
        sd[b + "ls1.gamma"] = hf[a + "layer_scale1.lambda1"]
        sd[b + "ls2.gamma"] = hf[a + "layer_scale2.lambda1"]
        for t in ("weight", "bias"):
            sd[f"{b}attn.qkv.{t}"] = torch.cat([hf[f"{a}attention.attention.{n}.{t}"] for n in ("query", "key", "value")])
            sd[f"{b}attn.proj.{t}"] = hf[f"{a}attention.output.dense.{t}"]
            for n in ("norm1", "norm2"):
                sd[f"{b}{n}.{t}"] = hf[f"{a}{n}.{t}"]
            mlp = (("fc1", "fc1"), ("fc2", "fc2")) if f"{a}mlp.fc1.weight" in hf else \
                (("w12", "weights_in"), ("w3", "weights_out"))
            for ours, theirs in mlp:
                sd[f"{b}mlp.{ours}.{t}"] = hf[f"{a}mlp.{theirs}.{t}"]
    return sd


def _reference(kind: str, tmp_path):
    if kind == "registers":
        cfg = transformers.Dinov2WithRegistersConfig(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                                                     image_size=SIZE, patch_size=PATCH, mlp_ratio=2,
                                                     num_register_tokens=3)
        model = transformers.Dinov2WithRegistersModel(cfg)
    else:
        cfg = transformers.Dinov2Config(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                                        image_size=SIZE, patch_size=PATCH, mlp_ratio=2,
                                        use_swiglu_ffn=kind == "swiglu")
        model = transformers.Dinov2Model(cfg)
    model = randomize_(model)
    model.save_pretrained(tmp_path / "hf")
    return model


def _expected(ref, clips: torch.Tensor) -> torch.Tensor:
    B, C, T, H, W = clips.shape
    with torch.no_grad():
        frames = clips.transpose(1, 2).reshape(B * T, C, H, W)
        return ref(pixel_values=frames).pooler_output.reshape(B, T, -1).mean(dim=1)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["plain", "swiglu", "registers"])
@pytest.mark.parametrize("size", [SIZE, 42])  # 42 px: the position grid resized as transformers does
def test_dinov2_matches_transformers_in_hf_and_hub_layouts(tmp_path, kind, size):
    ref = _reference(kind, tmp_path)
    hub = hf_dinov2_to_hub(read_checkpoint(tmp_path / "hf").tensors, DEPTH)
    torch.save(hub, tmp_path / "dinov2_pretrain.pth")
    clips = torch.randn(2, 3, FRAMES, size, size, generator=torch.Generator().manual_seed(3))
    expected = _expected(ref, clips)
    for ckpt in (tmp_path / "hf", tmp_path / "dinov2_pretrain.pth"):
        model = create_backbone("dinov2", ckpt, frames=FRAMES, size=size, num_heads=HEADS)
        assert model.embed_dim == DIM and model.pooling == "cls"
        with torch.no_grad():
            assert _rel(model(clips), expected) <= TOL, ckpt.name


def test_dinov2_image_classification_wrapper_and_hint_for_image_vit(tmp_path):
    """An HF classifier wraps the model under ``dinov2.``; a hub file given to image-vit names dinov2."""
    from vssl.errors import CheckpointError

    ref = _reference("plain", tmp_path)
    wrapped = {f"dinov2.{k}": v for k, v in read_checkpoint(tmp_path / "hf").tensors.items()}
    wrapped |= {"classifier.weight": torch.zeros(5, 2 * DIM), "classifier.bias": torch.zeros(5)}
    torch.save(wrapped, tmp_path / "cls.bin")
    clips = torch.randn(1, 3, FRAMES, SIZE, SIZE)
    with torch.no_grad():
        assert _rel(create_backbone("dinov2", tmp_path / "cls.bin", frames=FRAMES, size=SIZE, num_heads=HEADS)(clips),
                    _expected(ref, clips)) <= TOL
    torch.save(hf_dinov2_to_hub(read_checkpoint(tmp_path / "hf").tensors, DEPTH), tmp_path / "hub.pth")
    with pytest.raises(CheckpointError, match="use --backbone dinov2"):
        create_backbone("image-vit", tmp_path / "hub.pth", frames=FRAMES, size=SIZE)


def test_tokens_and_layers_equal_transformers_hidden_states(tmp_path):
    """Per frame: token grids are ``last_hidden_state`` less CLS and registers, frames x patches; earlier
    blocks are ``hidden_states[-k]`` through the final norm (``get_intermediate_layers(norm=True)``), their
    CLS token the frame embedding, all from one pass."""
    ref = _reference("registers", tmp_path)
    model = create_backbone("dinov2", tmp_path / "hf", frames=FRAMES, size=42, num_heads=HEADS)
    clips = torch.randn(2, 3, FRAMES, 42, 42, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = ref(pixel_values=clips.transpose(1, 2).reshape(2 * FRAMES, 3, 42, 42), output_hidden_states=True)
        normed = [ref.layernorm(out.hidden_states[-k]) for k in range(DEPTH, 0, -1)]
        pairs = model.forward_tokens(clips, layers=DEPTH)
        embedding = model(clips)
        assert torch.equal(model.token_grid(model.forward_features(clips)), pairs[-1][1])  # frames x patches
    assert _rel(normed[-1], out.last_hidden_state) <= TOL
    expected = [(t[:, 0].reshape(2, FRAMES, DIM).mean(dim=1), frames_to_grid(t[:, 1 + 3:], 2)) for t in normed]
    assert_tokens_match(pairs, expected)
    assert pairs[-1][1].shape == (2, FRAMES, 3, 3, DIM)
    assert torch.equal(pairs[-1][0], embedding)
