"""Image ViT per frame, SVT's TimeSformer and mae_st against independent references on tiny weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.backbone_helpers import (TOL, assert_tokens_match, frames_to_grid, hf_timesformer_to_svt, randomize_,
                                    rel_err)
from vssl.extract.backbones import create_backbone

transformers = pytest.importorskip("transformers")

DIM, DEPTH, HEADS, SIZE = 128, 2, 2, 32


def _clips(frames: int) -> torch.Tensor:
    return torch.randn(2, 3, frames, SIZE, SIZE, generator=torch.Generator().manual_seed(7))


def _hf_vit_to_timm(hf: dict, depth: int) -> dict:
    """transformers ViT (v5 names) -> timm names, as MAE/ViC-MAE release them."""
    sd = {"cls_token": hf["embeddings.cls_token"], "pos_embed": hf["embeddings.position_embeddings"],
          "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
          "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
          "norm.weight": hf["layernorm.weight"], "norm.bias": hf["layernorm.bias"]}
    for i in range(depth):
        a, b = f"layers.{i}.", f"blocks.{i}."
        for t in ("weight", "bias"):
            sd[f"{b}attn.qkv.{t}"] = torch.cat([hf[f"{a}attention.{n}_proj.{t}"] for n in "qkv"])
            sd[f"{b}attn.proj.{t}"] = hf[f"{a}attention.o_proj.{t}"]
            for ours, theirs in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                                 ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                sd[f"{b}{ours}.{t}"] = hf[f"{a}{theirs}.{t}"]
    return sd


def test_image_vit_per_frame_matches_transformers_vit(tmp_path):
    cfg = transformers.ViTConfig(image_size=SIZE, patch_size=16, hidden_size=DIM, num_hidden_layers=DEPTH,
                                 num_attention_heads=HEADS, intermediate_size=256, layer_norm_eps=1e-6)
    ref = randomize_(transformers.ViTModel(cfg, add_pooling_layer=False))
    sd = _hf_vit_to_timm(ref.state_dict(), DEPTH)
    # an MAE pretrain file: encoder weights next to a decoder that must be ignored
    sd |= {"mask_token": torch.zeros(1, 1, 16), "decoder_embed.weight": torch.zeros(16, DIM)}
    torch.save({"model": sd, "epoch": 799}, tmp_path / "mae.pth")
    model = create_backbone("image-vit", tmp_path / "mae.pth", frames=3, size=SIZE)
    clips = _clips(3)
    with torch.no_grad():
        frames = clips.transpose(1, 2).reshape(6, 3, SIZE, SIZE)
        tokens = ref(pixel_values=frames).last_hidden_state  # already normed
        expected = tokens[:, 1:].mean(dim=1).reshape(2, 3, DIM).mean(dim=1)
        assert (model(clips) - expected).abs().max() <= TOL


def test_svt_matches_transformers_timesformer(tmp_path):
    T = 3
    cfg = transformers.TimesformerConfig(image_size=SIZE, patch_size=16, num_frames=T, hidden_size=DIM,
                                         num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=256)
    ref = randomize_(transformers.TimesformerModel(cfg))
    sd = hf_timesformer_to_svt(ref.state_dict(), DEPTH)
    # SVT: DINO wrapper, backbone.-prefixed, the teacher under `teacher`, a projection head to drop
    wrapped = {f"backbone.{k}": v for k, v in sd.items()} | {"head.mlp.0.weight": torch.zeros(4, DIM)}
    student = {k: torch.zeros_like(v) for k, v in wrapped.items()}
    torch.save({"student": student, "teacher": wrapped, "epoch": 20}, tmp_path / "svt.pth")
    model = create_backbone("svt", tmp_path / "svt.pth", frames=T, size=SIZE)
    clips = _clips(T)
    with torch.no_grad():
        expected = ref(pixel_values=clips.transpose(1, 2)).last_hidden_state[:, 0]
        assert (model(clips) - expected).abs().max() <= TOL


def _mae_st_blocks(sd: dict, clips: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """mae_st's encoder written out with plain tensor ops (no vssl code): every block's output, CLS first."""
    w = sd["patch_embed.proj.weight"]
    x = F.conv3d(clips, w, sd["patch_embed.proj.bias"], stride=w.shape[2:])
    B, D, t, h, ww = x.shape
    x = x.reshape(B, D, t, h * ww).permute(0, 2, 3, 1)  # (B, t, hw, D)
    x = x + sd["pos_embed_spatial"][:, None] + sd["pos_embed_temporal"][:, :, None]
    x = x.reshape(B, t * h * ww, D)
    x = torch.cat([(sd["cls_token"] + sd["pos_embed_class"]).expand(B, 1, D), x], dim=1)
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    outputs = []
    for i in range(depth):
        p = lambda n: sd[f"blocks.{i}.{n}"]  # noqa: E731
        y = F.layer_norm(x, (D,), p("norm1.weight"), p("norm1.bias"), 1e-6)
        q, k, v = (F.linear(y, p(f"attn.{n}.weight"), p(f"attn.{n}.bias")) for n in "qkv")
        split = lambda z: z.reshape(B, -1, heads, D // heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        att = (q @ k.transpose(-1, -2) * (D // heads) ** -0.5).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, -1, D)
        x = x + F.linear(y, p("attn.proj.weight"), p("attn.proj.bias"))
        y = F.layer_norm(x, (D,), p("norm2.weight"), p("norm2.bias"), 1e-6)
        y = F.linear(F.gelu(F.linear(y, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
        x = x + y
        outputs.append(x)
    return outputs


def _mae_st_norm(sd: dict, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd["norm.weight"], sd["norm.bias"], 1e-6)


def _mae_st_reference(sd: dict, clips: torch.Tensor, heads: int) -> torch.Tensor:
    """mae_st's video evaluation: the final norm of the mean patch token."""
    return _mae_st_norm(sd, _mae_st_blocks(sd, clips, heads)[-1][:, 1:].mean(dim=1))


def _mae_st_weights(tmp_path) -> tuple[dict, int]:
    """Random mae_st weights (separate q/k/v, a decoder beside them) saved as ``mae_st.pyth``; their frames."""
    g = torch.Generator().manual_seed(11)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    T, grid = 4, SIZE // 16
    sd = {"patch_embed.proj.weight": r(DIM, 3, 2, 16, 16), "patch_embed.proj.bias": r(DIM),
          "cls_token": r(1, 1, DIM), "pos_embed_spatial": r(1, grid * grid, DIM),
          "pos_embed_temporal": r(1, T // 2, DIM), "pos_embed_class": r(1, 1, DIM),
          "norm.weight": 1 + r(DIM), "norm.bias": r(DIM)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        for n in ("q", "k", "v", "proj"):
            sd[f"{b}attn.{n}.weight"], sd[f"{b}attn.{n}.bias"] = r(DIM, DIM), r(DIM)
        for n in ("norm1", "norm2"):
            sd[f"{b}{n}.weight"], sd[f"{b}{n}.bias"] = 1 + r(DIM), r(DIM)
        sd[f"{b}mlp.fc1.weight"], sd[f"{b}mlp.fc1.bias"] = r(256, DIM), r(256)
        sd[f"{b}mlp.fc2.weight"], sd[f"{b}mlp.fc2.bias"] = r(DIM, 256), r(DIM)
    extras = {"decoder_blocks.0.norm1.weight": r(8), "mask_token": r(1, 1, 8)}
    torch.save({"model_state": sd | extras, "epoch": 1}, tmp_path / "mae_st.pyth")
    return sd, T


def test_mae_st_matches_hand_written_reference(tmp_path):
    sd, T = _mae_st_weights(tmp_path)
    model = create_backbone("mae-st", tmp_path / "mae_st.pyth", frames=T, size=SIZE)
    clips = _clips(T)
    with torch.no_grad():
        assert (model(clips) - _mae_st_reference(sd, clips, DIM // 64)).abs().max() <= TOL


# ------------------------------------------------------------------ token grids and --layers


def test_mae_st_tokens_and_layers_equal_hand_written_reference(tmp_path):
    """Token grids are the patch tokens each through the final norm (mae_st's ``forward_encoder``), (t, h, w);
    earlier blocks take the same norm, their embedding the norm of their mean patch token, from one pass."""
    sd, T = _mae_st_weights(tmp_path)
    model = create_backbone("mae-st", tmp_path / "mae_st.pyth", frames=T, size=SIZE)
    clips = _clips(T)
    with torch.no_grad():
        patches = [h[:, 1:] for h in _mae_st_blocks(sd, clips, DIM // 64)]
        pairs = model.forward_tokens(clips, layers=DEPTH)
    grid = (2, T // 2, SIZE // 16, SIZE // 16, DIM)
    assert_tokens_match(pairs, [(_mae_st_norm(sd, p.mean(dim=1)), _mae_st_norm(sd, p).reshape(grid)) for p in patches])


def test_image_vit_tokens_and_layers_equal_transformers_hidden_states(tmp_path):
    """Per frame: ``layernorm(hidden_states[-k])`` less CLS, frames x patches; the mean patch token embeds."""
    cfg = transformers.ViTConfig(image_size=SIZE, patch_size=16, hidden_size=DIM, num_hidden_layers=DEPTH,
                                 num_attention_heads=HEADS, intermediate_size=256, layer_norm_eps=1e-6)
    ref = randomize_(transformers.ViTModel(cfg, add_pooling_layer=False), seed=2)
    torch.save({"model": _hf_vit_to_timm(ref.state_dict(), DEPTH)}, tmp_path / "mae.pth")
    model = create_backbone("image-vit", tmp_path / "mae.pth", frames=3, size=48)
    clips = torch.randn(2, 3, 3, 48, 48, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = ref(pixel_values=clips.transpose(1, 2).reshape(6, 3, 48, 48), interpolate_pos_encoding=True,
                  output_hidden_states=True)
        patches = [ref.layernorm(out.hidden_states[-k])[:, 1:] for k in range(DEPTH, 0, -1)]
        pairs = model.forward_tokens(clips, layers=DEPTH)
    assert rel_err(patches[-1], out.last_hidden_state[:, 1:]) <= TOL
    assert_tokens_match(pairs, [(p.mean(dim=1).reshape(2, 3, DIM).mean(dim=1), frames_to_grid(p, 2)) for p in patches])
    assert pairs[-1][1].shape == (2, 3, 3, 3, DIM)


def test_svt_tokens_and_layers_equal_transformers_hidden_states(tmp_path):
    """Token grids are ``last_hidden_state`` less CLS, from TimeSformer's (space, time) token order
    (``(b n) t m -> b (n t) m``) to (time, row, column); earlier blocks take the final norm too."""
    T, size = 2, 48  # T differs from the 3 x 3 patch grid, so a swapped axis shows in the shape
    cfg = transformers.TimesformerConfig(image_size=size, patch_size=16, num_frames=T, hidden_size=DIM,
                                         num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=256)
    ref = randomize_(transformers.TimesformerModel(cfg), seed=4)
    torch.save({"model_state": {f"model.{k}": v for k, v in hf_timesformer_to_svt(ref.state_dict(), DEPTH).items()}},
               tmp_path / "timesformer.pyth")
    model = create_backbone("svt", tmp_path / "timesformer.pyth", frames=T, size=size)
    clips = torch.randn(2, 3, T, size, size, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        out = ref(pixel_values=clips.transpose(1, 2), output_hidden_states=True)
        normed = [ref.layernorm(out.hidden_states[-k]) for k in range(DEPTH, 0, -1)]
        pairs = model.forward_tokens(clips, layers=DEPTH)
        embedding = model(clips)
    assert rel_err(normed[-1], out.last_hidden_state) <= TOL
    side = size // 16
    by_time = lambda t: t[:, 1:].reshape(2, side, side, T, DIM).permute(0, 3, 1, 2, 4)  # noqa: E731
    assert_tokens_match(pairs, [(t[:, 0], by_time(t)) for t in normed])
    assert torch.equal(pairs[-1][0], embedding)
