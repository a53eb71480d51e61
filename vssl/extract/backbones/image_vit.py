"""Image ViT applied to every frame of a clip (ViC-MAE, MAE; timm layout).

Checkpoints use timm's names: ``patch_embed.proj`` (Conv2d), ``cls_token``, ``pos_embed``
(CLS + patch grid), ``blocks.N.attn.qkv`` with bias, ``norm`` (MAE finetuned with global
pooling has ``fc_norm`` instead). Each frame is embedded as its authors pool it — the mean
of the normed patch tokens (MAE's global pooling, ViC-MAE's frame representation) — and the
clip embedding is the average over frames. At another frame size than the training one the
patch position grid is interpolated bicubically, exactly as transformers' ``ViTModel(...,
interpolate_pos_encoding=True)`` and timm do (SCALE runs no image ViT to follow), and said in one
log line (:mod:`.pos_embed`). :class:`ImageViT` embeds frames;
the registry wraps it in :class:`~.per_frame.PerFrame` for clips.

Tokens (token views) are the patch tokens, normed where the file has ``norm`` (transformers'
``ViTModel`` ``last_hidden_state`` less CLS), frames x patches. ``--layers``: each earlier block's
output takes the same path (``hidden_states[-k]``, so normed; the mean of its patch tokens).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from .builder import Adapted
from .checkpoints import (KeyMap, LoadedCheckpoint, StateDict, apply_key_map, drop_keys, register_recogniser,
                          select_prefix, wrong_layout)
from .registry import register_family
from .token_encoder import TokenEncoder, last_block_outputs
from .pos_embed import grid_side, resize_pos_grid, say_resized
from .vit_layers import Block, ViTShape, fuse_separate_qkv, vit_arch

IMAGE_VIT_SPEC = InputSpec(frames=8, stride=8, size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
LAYOUTS = "timm/MAE/ViC-MAE .pth (cls_token, pos_embed, blocks.N.attn.qkv, norm)"


class ImageViT(TokenEncoder):
    """A ViT over single frames ``(N, C, H, W)``; its embedding is the mean of the normed patch tokens."""

    pooling = "mean_tokens"

    def __init__(self, shape: ViTShape, spec: InputSpec, *, patch: int = 16, in_chans: int = 3, grid: int = 14,
                 final_norm: bool = True, fc_norm: bool = False, family: str = "image_vit") -> None:
        super().__init__(embed_dim=shape.embed_dim, spec=spec, family=family)
        dim = shape.embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.depth))
        self.norm = nn.LayerNorm(dim, eps=shape.eps) if final_norm else None
        self.fc_norm = nn.LayerNorm(dim, eps=shape.eps) if fc_norm else None
        self.grid = grid

    @classmethod
    def arch_from_state_dict(cls, sd: StateDict, spec: InputSpec, source: str, *,
                             num_heads: int | None = None) -> dict[str, Any]:
        """Shape, which norms the file has, and the square patch grid its ``pos_embed`` was trained for."""
        arch = vit_arch(sd, num_heads, eps=1e-6)
        grid = grid_side(sd["pos_embed"].shape[1] - 1)
        side = spec.size // arch["patch"]
        say_resized("image_vit", source, (grid, grid), (side, side), "bicubically (as transformers' ViT)",
                    f"frames of {spec.size} px")
        return {**arch, "grid": grid, "final_norm": "norm.weight" in sd, "fc_norm": "fc_norm.weight" in sd}

    def encode(self, frames: torch.Tensor, layers: int = 1) -> list[torch.Tensor]:
        """(N, C, H, W) -> (N, P, D) patch tokens (normed if the file has ``norm``), the CLS token dropped,
        of each of the last ``layers`` blocks."""
        x = self.patch_embed.proj(frames)
        h, w = x.shape[-2:]
        self._set_grid((h, w))
        x = x.flatten(2).transpose(1, 2)
        pos = self.pos_embed
        patch_pos = resize_pos_grid(pos[:, 1:], (self.grid, self.grid), (h, w))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1) + pos[:, :1], x + patch_pos], dim=1)
        outputs = last_block_outputs(x, self.blocks, layers)
        return [(self.norm(h) if self.norm is not None else h)[:, 1:] for h in outputs]

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc_norm(pooled) if self.fc_norm is not None else pooled


_TRAINING_ONLY = (r"decoder", r"mask_token$", r"head\.", r"fc_norm_head", r"projector\.", r"predictor\.")


def adapt_image_vit(ckpt: LoadedCheckpoint, key_map: KeyMap | None = None) -> Adapted:
    """timm-layout ViT state dict: drop MAE's decoder and any classifier/projection heads."""
    sd = apply_key_map(ckpt.tensors, key_map)
    notes = ()
    if "cls_token" not in sd:  # wrapped by a training model (ViC-MAE and others)
        prefix = next((p for p in ("backbone.", "encoder.", "visual.") if f"{p}cls_token" in sd), None)
        sd = select_prefix(sd, prefix) if prefix else sd
        notes = (f"under {prefix}",) if prefix else ()
    sd = fuse_separate_qkv(drop_keys(sd, _TRAINING_ONLY))
    proj = sd.get("patch_embed.proj.weight")
    if proj is None or proj.dim() != 4 or "cls_token" not in sd or "pos_embed" not in sd:
        raise wrong_layout(ckpt, "image_vit", LAYOUTS, sd)
    return Adapted(sd, notes=notes)


register_recogniser("image_vit", "image-vit", lambda keys: "cls_token" in keys and "pos_embed" in keys and
                    "blocks.0.attn.qkv.weight" in keys and not any("temporal" in k or "time_embed" in k for k in keys))
register_family("image-vit", model_cls=ImageViT, adapter=adapt_image_vit, spec=IMAGE_VIT_SPEC, family="image_vit",
                per_frame=True,
                description="image ViT per frame, mean of normed patch tokens, averaged over frames (MAE, ViC-MAE)")
