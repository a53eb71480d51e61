"""SVT's backbone: TimeSformer ViT-B/16 with divided space-time attention, 8 frames (Ranasinghe et al. 2022).

TimeSformer (Bertasius et al. 2021, §3 "divided space-time attention", Fig. 1): each frame is
patch-embedded by a Conv2d; a CLS token and a spatial ``pos_embed`` are added per frame, then a
``time_embed`` per frame index; each block applies temporal attention (``temporal_norm1``,
``temporal_attn``, ``temporal_fc``) among the tokens at one spatial position, then spatial
attention (``norm1``, ``attn``) within each frame with a copy of the CLS token, whose per-frame
outputs are averaged, then the MLP. The clip embedding is the final-norm CLS token (768-d). Tokens
(token views) are the final-normed patch tokens, transformers' ``TimesformerModel`` ``last_hidden_state``
less CLS, on their (frame, row, column) grid. ``--layers``: each earlier block's output gets the
final norm too (``hidden_states[-k]`` normed; its CLS token is the embedding).

SVT saves DINO-style checkpoints: keys prefixed ``backbone.`` (and a DINO ``head.`` to drop),
flat or under ``teacher`` (the network SVT evaluates).

At another clip size or frame count the tables are resized as SCALE does for this checkpoint
(``convert_svt`` turns ``pos_embed``/``time_embed`` into its factorised table, which it
interpolates trilinearly; its recipe feeds SVT 16 frames, twice its 8): bilinear spatial +
linear temporal, :func:`.pos_embed.resize_factorised`, said in one log line. This departs on
purpose from TimeSformer's, SVT's and transformers' ``TimesformerModel`` nearest-neighbour
resizing, which SCALE's features were not computed with.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import KINETICS_MEAN, KINETICS_STD, InputSpec
from .builder import Adapted
from .checkpoints import (KeyMap, LoadedCheckpoint, StateDict, apply_key_map, drop_keys, register_recogniser,
                          select_prefix, wrong_layout)
from .registry import register_family
from .token_encoder import TokenEncoder, last_block_outputs
from .pos_embed import grid_side, resize_factorised, say_resized
from .vit_layers import Attention, Mlp, ViTShape, vit_arch

# SVT evaluates TimeSformer_divST_8x32_224: 8 frames, sampling rate 32, 224 px, Kinetics mean/std.
SVT_SPEC = InputSpec(frames=8, stride=32, size=224, mean=KINETICS_MEAN, std=KINETICS_STD)
LAYOUTS = "SVT .pth (backbone./teacher), TimeSformer .pyth (model_state)"


class DividedBlock(nn.Module):
    """TimeSformer block with divided space-time attention."""

    def __init__(self, shape: ViTShape) -> None:
        super().__init__()
        dim = shape.embed_dim
        self.temporal_norm1 = nn.LayerNorm(dim, eps=shape.eps)
        self.temporal_attn = Attention(dim, shape.num_heads, shape.qkv_bias)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=shape.eps)
        self.attn = Attention(dim, shape.num_heads, shape.qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=shape.eps)
        self.mlp = Mlp(dim, shape.mlp_hidden)

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        B, _, D = x.shape
        cls, patches = x[:, :1], x[:, 1:]  # patches ordered (space, time): index = s * T + t
        S = patches.shape[1] // T
        # temporal attention among the T tokens of each spatial position
        xt = patches.reshape(B * S, T, D)
        xt = patches + self.temporal_fc(self.temporal_attn(self.temporal_norm1(xt)).reshape(B, S * T, D))
        # spatial attention within each frame, each frame with its own copy of the CLS token
        xs = xt.reshape(B, S, T, D).transpose(1, 2).reshape(B * T, S, D)
        xs = torch.cat([cls.repeat_interleave(T, dim=0), xs], dim=1)
        res = self.attn(self.norm1(xs))
        res_cls = res[:, :1].reshape(B, T, D).mean(dim=1, keepdim=True)
        res_patches = res[:, 1:].reshape(B, T, S, D).transpose(1, 2).reshape(B, S * T, D)
        x = torch.cat([cls, xt], dim=1) + torch.cat([res_cls, res_patches], dim=1)
        return x + self.mlp(self.norm2(x))


class TimeSformer(TokenEncoder):
    """Divided space-time ViT; forward returns the final-norm CLS token."""

    pooling = "cls"

    def __init__(self, shape: ViTShape, spec: InputSpec, *, patch: int = 16, in_chans: int = 3, grid: int = 14,
                 num_frames: int = 8) -> None:
        super().__init__(embed_dim=shape.embed_dim, spec=spec, family="timesformer")
        dim = shape.embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, dim))
        self.blocks = nn.ModuleList(DividedBlock(shape) for _ in range(shape.depth))
        self.norm = nn.LayerNorm(dim, eps=shape.eps)
        self.grid = grid

    @classmethod
    def arch_from_state_dict(cls, sd: StateDict, spec: InputSpec, source: str, *,
                             num_heads: int | None = None) -> dict[str, Any]:
        """Shape and the (t, h, w) grid ``time_embed`` and ``pos_embed`` were trained for."""
        arch = vit_arch(sd, num_heads, eps=1e-6)
        frames, grid = sd["time_embed"].shape[1], grid_side(sd["pos_embed"].shape[1] - 1)
        side = spec.size // arch["patch"]
        say_resized("timesformer", source, (frames, grid, grid), (spec.frames, side, side),
                    "trilinearly (as SCALE does; per factor)", f"{spec.frames} frames at {spec.size} px")
        return {**arch, "grid": grid, "num_frames": frames}

    def encode(self, clips: torch.Tensor, layers: int = 1) -> list[torch.Tensor]:
        """(B, C, T, H, W) -> (B, 1 + S*T, D) tokens, CLS first, before the final norm, of each of the last
        ``layers`` blocks (patches in the model's (space, time) order)."""
        B, C, T, H, W = clips.shape
        x = self.patch_embed.proj(clips.transpose(1, 2).reshape(B * T, C, H, W))
        h, w = x.shape[-2:]
        self._set_grid((T, h, w))
        x = x.flatten(2).transpose(1, 2)  # (B*T, S, D)
        S, D = x.shape[1], x.shape[2]
        trained = (self.time_embed.shape[1], self.grid, self.grid)
        pos, time = resize_factorised(self.pos_embed[:, 1:], self.time_embed, trained, (T, h, w))
        cls = self.cls_token + self.pos_embed[:, :1]
        x = x + pos
        x = x.reshape(B, T, S, D) + time[:, :, None]
        x = torch.cat([cls.expand(B, -1, -1), x.transpose(1, 2).reshape(B, S * T, D)], dim=1)
        return last_block_outputs(x, self.blocks, layers, lambda block, tokens: block(tokens, T))

    def patch_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """The final-normed patch tokens (transformers' ``last_hidden_state`` less CLS), reordered from the
        model's (space, time) to (time, space)."""
        T = self._grid[0]
        patches = self.norm(features[:, 1:])
        return patches.unflatten(1, (-1, T)).transpose(1, 2).flatten(1, 2)

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.norm(pooled)


def adapt_timesformer(ckpt: LoadedCheckpoint, key_map: KeyMap | None = None) -> Adapted:
    """SVT (``backbone.``) or TimeSformer (``model.``) wrappers removed, the DINO/classifier head dropped."""
    sd = apply_key_map(ckpt.tensors, key_map)
    notes = ()
    if "backbone.cls_token" in sd:
        sd, notes = select_prefix(sd, "backbone."), ("SVT backbone.",)
    elif "model.cls_token" in sd:  # TimeSformer's own .pyth wraps the ViT as `model`
        sd, notes = select_prefix(sd, "model."), ("TimeSformer model.",)
    sd = drop_keys(sd, (r"head\.",))
    if "time_embed" not in sd or "blocks.0.temporal_attn.qkv.weight" not in sd:
        raise wrong_layout(ckpt, "timesformer", LAYOUTS, sd)
    return Adapted(sd, notes=notes)


register_recogniser("timesformer", "svt", lambda keys: any(k.endswith("time_embed") for k in keys) and
                    any("temporal_attn" in k for k in keys))
register_family("svt", model_cls=TimeSformer, adapter=adapt_timesformer, spec=SVT_SPEC, family="timesformer",
                description="SVT: TimeSformer ViT-B/16 divided space-time, 8 frames, final-norm CLS 768-d")
