"""ST-MAE video ViT (Feichtenhofer et al. 2022, "Masked Autoencoders As Spatiotemporal Learners").

The ``mae_st`` code base (and CrossVideoMAE's video branch, which uses it) differs from
VideoMAE: a CLS token, separable position embeddings (``pos_embed_spatial`` repeated over
time + ``pos_embed_temporal`` repeated over space, ``pos_embed_class`` for the CLS token),
separate ``attn.q/k/v`` projections with bias, Kinetics mean/std. Its video evaluation pools
``norm(mean(patch tokens))`` (the CLS token does not enter the embedding). Tokens (token views) are
the patch tokens each through that norm, as its MAE encoder returns them. ``--layers``: each earlier
block's output goes the same way (norm of the mean for the embedding, of each token for the grid).

The separate q/k/v are fused into our ``attn.qkv`` on load, so the block is the shared one.

mae_st's encoder only runs at its training grid. At another clip size or frame count the
factorised table is resized as SCALE resizes this very layout (its ``factorized_pos_emb``):
trilinearly over (t, h, w), computed per factor (:func:`.pos_embed.resize_factorised`: the
spatial table bilinearly, the temporal one linearly, which sums to the same table), said in
one log line.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import KINETICS_MEAN, KINETICS_STD, InputSpec
from .builder import Adapted
from .checkpoints import KeyMap, LoadedCheckpoint, StateDict, apply_key_map, drop_keys, register_recogniser, wrong_layout
from .registry import register_family
from .token_encoder import TokenEncoder, last_block_outputs
from .pos_embed import grid_side, resize_factorised, say_resized
from .vit_layers import Block, ViTShape, fuse_separate_qkv, vit_arch

MAE_ST_SPEC = InputSpec(frames=16, stride=4, size=224, mean=KINETICS_MEAN, std=KINETICS_STD)
LAYOUTS = "mae_st / CrossVideoMAE .pth (model or model_state; pos_embed_spatial/temporal/class, attn.q/k/v)"


class MaeSTViT(TokenEncoder):
    """mae_st encoder; forward returns ``norm(mean(patch tokens))``."""

    pooling = "mean_tokens"

    def __init__(self, shape: ViTShape, spec: InputSpec, *, patch: int = 16, t_patch: int = 2, in_chans: int = 3,
                 grid: int = 14, t_grid: int = 8, cls_embed: bool = True) -> None:
        super().__init__(embed_dim=shape.embed_dim, spec=spec, family="mae_st")
        dim = shape.embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(in_chans, dim, (t_patch, patch, patch), (t_patch, patch, patch))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_embed else None
        self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, dim)) if cls_embed else None
        self.pos_embed_spatial = nn.Parameter(torch.zeros(1, grid * grid, dim))
        self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t_grid, dim))
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.depth))
        self.norm = nn.LayerNorm(dim, eps=shape.eps)
        self.grid = grid

    @classmethod
    def arch_from_state_dict(cls, sd: StateDict, spec: InputSpec, source: str, *,
                             num_heads: int | None = None) -> dict[str, Any]:
        """Shape and the (t, h, w) grid the position tables were trained for; another clip resizes them."""
        arch = vit_arch(sd, num_heads, eps=1e-6)
        t_patch = sd["patch_embed.proj.weight"].shape[2]
        t_grid, grid = sd["pos_embed_temporal"].shape[1], grid_side(sd["pos_embed_spatial"].shape[1])
        side = spec.size // arch["patch"]
        say_resized("mae_st", source, (t_grid, grid, grid), (spec.frames // t_patch, side, side),
                    "trilinearly (as SCALE does; per factor)", f"{spec.frames} frames at {spec.size} px")
        return {**arch, "t_patch": t_patch, "grid": grid, "t_grid": t_grid, "cls_embed": "cls_token" in sd}

    def encode(self, clips: torch.Tensor, layers: int = 1) -> list[torch.Tensor]:
        """(B, C, T, H, W) -> (B, N, D) patch tokens in (t, h, w) order (the CLS token dropped), before the
        final norm, of each of the last ``layers`` blocks."""
        x = self.patch_embed.proj(clips)  # (B, D, T', H', W')
        B, D, t, h, w = x.shape
        self._set_grid((t, h, w))
        x = x.flatten(2).transpose(1, 2)  # tokens ordered (t, h, w)
        trained = (self.pos_embed_temporal.shape[1], self.grid, self.grid)
        spatial, temporal = resize_factorised(self.pos_embed_spatial, self.pos_embed_temporal, trained, (t, h, w))
        pos = spatial.repeat(1, t, 1) + temporal.repeat_interleave(h * w, dim=1)
        x = x + pos
        if self.cls_token is not None:
            x = torch.cat([(self.cls_token + self.pos_embed_class).expand(B, -1, -1), x], dim=1)
        skip = 1 if self.cls_token is not None else 0
        return [h[:, skip:] for h in last_block_outputs(x, self.blocks, layers)]

    def patch_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """The patch tokens each through the final norm, as mae_st's encoder (``forward_encoder``) returns them."""
        return self.norm(features)

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.norm(pooled)


def adapt_mae_st(ckpt: LoadedCheckpoint, key_map: KeyMap | None = None) -> Adapted:
    """mae_st names are ours but for the separate q/k/v (fused here) and the decoder (dropped)."""
    sd = apply_key_map(ckpt.tensors, key_map)
    sd = drop_keys(sd, (r"decoder", r"mask_token$", r"head\."))
    sd = fuse_separate_qkv(sd)
    if "pos_embed_spatial" not in sd or "blocks.0.attn.qkv.weight" not in sd:
        raise wrong_layout(ckpt, "mae_st", LAYOUTS, sd)
    return Adapted(sd)


register_recogniser("mae_st", "mae-st", lambda keys: "pos_embed_spatial" in keys or
                    any(k.endswith(".pos_embed_spatial") for k in keys))
register_family("mae-st", model_cls=MaeSTViT, adapter=adapt_mae_st, spec=MAE_ST_SPEC, family="mae_st",
                description="ST-MAE / CrossVideoMAE video ViT (mae_st layout), norm(mean(patch tokens))")
