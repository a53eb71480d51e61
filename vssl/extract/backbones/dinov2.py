"""DINOv2 (Oquab et al. 2023) and DINOv2 with registers (Darcet et al. 2024), applied per frame.

Checkpoints load as released: facebookresearch/dinov2 hub ``.pth`` state dicts (``patch_embed.proj``,
``cls_token``, ``pos_embed`` for a 37x37 grid, ``register_tokens``, ``mask_token``,
``blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1|mlp.w12,ls2.gamma}``, ``norm``) are
this module's own names; Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel`` directories
(and their ``ForImageClassification`` wrappers) are renamed to them.

Each frame is embedded as the authors evaluate linear probes and as transformers' ``pooler_output``
gives it: the CLS token after the final norm; the clip embedding averages the frames
(:class:`~.per_frame.PerFrame`). Register tokens sit between the CLS and the patch tokens and take
no position embedding. The patch position grid is resized bicubically to the frame's grid as
transformers does (size-based; with antialiasing for the register models, whose hub code also
uses it). The plain hub code resizes by a scale factor offset by 0.1 instead, so at sizes other
than the trained grid a hub file's features follow transformers, not the hub code, exactly.

Tokens (token views) are transformers' ``last_hidden_state`` (normed) less the CLS and register
tokens, frames x patches. ``--layers``: each earlier block's output is normed too and gives its CLS
token, as the authors' ``get_intermediate_layers(..., norm=True)`` (their linear evaluation
concatenates the last 4 blocks' CLS tokens with the mean patch token).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from .builder import Adapted
from .checkpoints import (KeyMap, LoadedCheckpoint, StateDict, apply_key_map, drop_keys, register_recogniser,
                          rename_keys, wrong_layout)
from .prenorm import PreNormBlock, block_depth, mlp_width, resize_patch_positions
from .registry import register_family
from .token_encoder import TokenEncoder, last_block_outputs
from .pos_embed import grid_side, say_resized
from .vit_layers import fuse_separate_qkv

DINOV2_SPEC = InputSpec(frames=8, stride=8, size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
LAYOUTS = ("facebookresearch/dinov2 hub .pth (cls_token, pos_embed, blocks.N.ls1.gamma), "
           "Hugging Face Dinov2Model / Dinov2WithRegistersModel dir")
HEAD_DIM = 64  # every released DINOv2 (S/B/L/g) uses 64-d heads


class DinoV2(TokenEncoder):
    """DINOv2 ViT over single frames ``(N, C, H, W)``; features are the normed tokens, CLS first."""

    pooling = "cls"

    def __init__(self, spec: InputSpec, *, embed_dim: int, depth: int, num_heads: int, mlp_hidden: int,
                 patch: int = 14, in_chans: int = 3, grid: int = 37, registers: int = 0, swiglu: bool = False,
                 layer_scale: bool = True, eps: float = 1e-6) -> None:
        super().__init__(embed_dim=embed_dim, spec=spec, family="dinov2")
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, embed_dim)) if registers else None
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.blocks = nn.ModuleList(
            PreNormBlock(embed_dim, num_heads, mlp_hidden, eps=eps, layer_scale=layer_scale, swiglu=swiglu)
            for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        self.num_registers = registers

    @classmethod
    def arch_from_state_dict(cls, sd: StateDict, spec: InputSpec, source: str, *, num_heads: int | None = None,
                             eps: float = 1e-6) -> dict[str, Any]:
        dim = sd["cls_token"].shape[-1]
        proj = sd["patch_embed.proj.weight"]
        grid = grid_side(sd["pos_embed"].shape[1] - 1)
        say_resized("dinov2", source, (grid, grid), (spec.size // proj.shape[-1],) * 2, "bicubically",
                    f"{spec.size} px frames")
        return {"embed_dim": dim, "depth": block_depth(sd), "num_heads": num_heads or max(1, dim // HEAD_DIM),
                "mlp_hidden": mlp_width(sd), "patch": proj.shape[-1], "in_chans": proj.shape[1],
                "grid": grid,
                "registers": sd["register_tokens"].shape[1] if "register_tokens" in sd else 0,
                "swiglu": "blocks.0.mlp.w12.weight" in sd, "layer_scale": "blocks.0.ls1.gamma" in sd, "eps": eps}

    def encode(self, frames: torch.Tensor, layers: int = 1) -> list[torch.Tensor]:
        """(N, C, H, W) -> (N, 1 + R + P, D) normed tokens (CLS, registers, patches) of each of the last
        ``layers`` blocks."""
        x = self.patch_embed.proj(frames)
        grid = tuple(x.shape[-2:])
        self._set_grid(grid)
        x = x.flatten(2).transpose(1, 2)
        pos = self.pos_embed
        patch_pos = resize_patch_positions(pos[:, 1:], grid, antialias=self.register_tokens is not None)
        tokens = [self.cls_token.expand(x.shape[0], -1, -1) + pos[:, :1]]
        if self.register_tokens is not None:
            tokens.append(self.register_tokens.expand(x.shape[0], -1, -1))
        x = torch.cat([*tokens, x + patch_pos], dim=1)
        return [self.norm(h) for h in last_block_outputs(x, self.blocks, layers)]

    def patch_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """The normed tokens less the CLS and register tokens."""
        return features[:, 1 + self.num_registers:]


# --------------------------------------------------------------------- checkpoint adapter

# transformers' names (as saved on the Hub, and v5's in-memory ones) -> the hub code's.
_HF_RENAMES = [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.(cls_token|register_tokens|mask_token)$", r"\1"),
    (r"^encoder\.layer\.(\d+)\.", r"blocks.\1."),
    (r"\.attention\.attention\.(query|key|value)\.", r".attn.\1."),
    (r"\.attention\.([qkv])_proj\.", r".attn.\1."),
    (r"\.attn\.query\.", ".attn.q."), (r"\.attn\.key\.", ".attn.k."), (r"\.attn\.value\.", ".attn.v."),
    (r"\.attention\.(output\.dense|o_proj)\.", ".attn.proj."),
    (r"\.layer_scale([12])\.lambda1$", r".ls\1.gamma"),
    (r"\.mlp\.weights_in\.", ".mlp.w12."), (r"\.mlp\.(weights_out|down_proj)\.", ".mlp.w3."),
    (r"^layernorm\.", "norm."),
]
_NOT_ENCODER = (r"mask_token$", r"classifier\.", r"head\.", r"dino_head\.", r"ibot_head\.")


def _fuse_gate_up(sd: StateDict) -> StateDict:
    """transformers v5's split SwiGLU ``gate_proj``/``up_proj`` -> the hub's fused ``w12`` (gate first)."""
    out = {k: v for k, v in sd.items() if ".mlp.gate_proj." not in k and ".mlp.up_proj." not in k}
    for key, gate in sd.items():
        if ".mlp.gate_proj." in key:
            out[key.replace(".mlp.gate_proj.", ".mlp.w12.")] = torch.cat([gate, sd[key.replace("gate_proj", "up_proj")]])
    return out


def adapt_dinov2(ckpt: LoadedCheckpoint, key_map: KeyMap | None = None) -> Adapted:
    """Hub names pass through; Hugging Face names are renamed, q/k/v fused, heads and eps read from config."""
    sd = apply_key_map(ckpt.tensors, key_map)
    sd = {k.removeprefix("dinov2_with_registers.").removeprefix("dinov2."): v for k, v in sd.items()}
    options: dict[str, Any] = {}
    notes: tuple[str, ...] = ()
    if "embeddings.cls_token" in sd:
        sd = fuse_separate_qkv(_fuse_gate_up(rename_keys(sd, _HF_RENAMES)))
        cfg = ckpt.config
        options = {"num_heads": cfg.get("num_attention_heads"), "eps": float(cfg.get("layer_norm_eps", 1e-6))}
        notes = ("Hugging Face names",)
    sd = drop_keys(sd, _NOT_ENCODER)
    if not _recognise(set(sd)):
        raise wrong_layout(ckpt, "dinov2", LAYOUTS, sd)
    return Adapted(sd, {k: v for k, v in options.items() if v is not None}, notes)


def _recognise(keys: set[str]) -> bool:
    keys = {k.removeprefix("dinov2_with_registers.").removeprefix("dinov2.") for k in keys}
    hub = "cls_token" in keys and "pos_embed" in keys and "blocks.0.ls1.gamma" in keys
    hf = "embeddings.cls_token" in keys and "encoder.layer.0.layer_scale1.lambda1" in keys
    return hub or hf


register_recogniser("dinov2", "dinov2", _recognise, refines=("image_vit",))
register_family("dinov2", model_cls=DinoV2, adapter=adapt_dinov2, spec=DINOV2_SPEC, family="dinov2", per_frame=True,
                description="DINOv2 / DINOv2-registers per frame, normed CLS token averaged over frames "
                            "(hub .pth, HF dir)")
