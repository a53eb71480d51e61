"""SigLIP image encoder (Zhai et al. 2023), applied per frame.

Checkpoints load as Hugging Face writes them: ``SiglipVisionModel`` directories and state dicts
(``vision_model.*`` in hub files, unprefixed as transformers 5 saves them) and the ``vision_model.*``
part of a full ``SiglipModel`` (the text tower, ``logit_scale`` and ``logit_bias`` are dropped).
Blocks are renamed to :class:`~.prenorm.PreNormBlock`'s; the rest keeps transformers' names.

Each frame is embedded as transformers' ``pooler_output``: SigLIP has no CLS token, so its image
embedding is the multihead attention pooling ("MAP") head — a learned probe token attends over
the ``post_layernorm`` patch tokens (``nn.MultiheadAttention``), then a LayerNorm + MLP residual.
The clip embedding averages the frames. The probe's attention runs in ``forward_features`` (it
owns parameters, which :mod:`.pooling` does not), the pooling named ``map`` takes its one token,
and ``forward_head`` applies the residual MLP — the same arithmetic as
``SiglipMultiheadAttentionPoolingHead``. Checkpoints without a head (``vision_use_head=False``)
have no such embedding and are refused. At another input size the position grid is resized
bicubically, as transformers' ``interpolate_pos_encoding`` does.

The features carry the normed patch tokens after the probe's token: tokens (token views) are
transformers' ``last_hidden_state`` (``post_layernorm``'s output), frames x patches. ``--layers``:
each earlier block's output goes the same way (``post_layernorm`` of ``hidden_states[-k]``, the
probe and head on it for the embedding).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import InputSpec
from .builder import Adapted
from .checkpoints import (KeyMap, LoadedCheckpoint, StateDict, apply_key_map, register_recogniser, rename_keys,
                          select_prefix, wrong_layout)
from .pos_embed import grid_side, say_resized
from .prenorm import HF_ENCODER_RENAMES, PreNormBlock, act_mlp, block_depth, mlp_width, resize_patch_positions
from .registry import register_family
from .token_encoder import TokenEncoder, last_block_outputs
from .vit_layers import STANDARD_HEADS, fuse_separate_qkv

SIGLIP_SPEC = InputSpec(frames=8, stride=8, size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
LAYOUTS = "Hugging Face SiglipVisionModel / SiglipModel dir or state dict (vision_model.* with head.probe)"
# SigLIP's published widths: the standard ViTs plus So400m (1152 wide, 16 heads of 72).
SIGLIP_HEADS = {**STANDARD_HEADS, 1152: 16}


class MAPHead(nn.Module):
    """transformers' ``SiglipMultiheadAttentionPoolingHead``, split where vssl pools: :meth:`attend`
    (probe over the tokens) before pooling, :meth:`forward` (LayerNorm + MLP residual) after."""

    def __init__(self, width: int, num_heads: int, mlp_hidden: int, *, act: str, eps: float) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, width))
        self.attention = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.layernorm = nn.LayerNorm(width, eps=eps)
        self.mlp = act_mlp(width, mlp_hidden, act)

    def attend(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, P, D) tokens -> (N, 1, D): the probe's attention output."""
        probe = self.probe.expand(tokens.shape[0], -1, -1)
        return self.attention(probe, tokens, tokens, need_weights=False)[0]

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled + self.mlp(self.layernorm(pooled))


class SiglipVision(TokenEncoder):
    """SigLIP's ViT over single frames ``(N, C, H, W)``; forward gives ``pooler_output``."""

    pooling = "map"

    def __init__(self, spec: InputSpec, *, width: int, depth: int, num_heads: int, mlp_hidden: int,
                 patch: int = 16, in_chans: int = 3, grid: int = 14, act: str = "gelu_pytorch_tanh",
                 eps: float = 1e-6) -> None:
        super().__init__(embed_dim=width, spec=spec, family="siglip")
        self.patch_embedding = nn.Conv2d(in_chans, width, kernel_size=patch, stride=patch)
        self.position_embedding = nn.Parameter(torch.zeros(grid * grid, width))
        self.blocks = nn.ModuleList(PreNormBlock(width, num_heads, mlp_hidden, eps=eps, act=act)
                                    for _ in range(depth))
        self.post_layernorm = nn.LayerNorm(width, eps=eps)
        self.head = MAPHead(width, num_heads, mlp_hidden, act=act, eps=eps)

    @classmethod
    def arch_from_state_dict(cls, sd: StateDict, spec: InputSpec, source: str, *, num_heads: int | None = None,
                             act: str = "gelu_pytorch_tanh", eps: float = 1e-6) -> dict[str, Any]:
        conv = sd["patch_embedding.weight"]
        width, in_chans, patch = conv.shape[0], conv.shape[1], conv.shape[-1]
        grid = grid_side(sd["position_embedding"].shape[0])
        say_resized("siglip", source, (grid, grid), (spec.size // patch,) * 2, "bicubically",
                    f"{spec.size} px frames")
        heads = num_heads or SIGLIP_HEADS.get(width) or max(1, width // 64)
        return {"width": width, "depth": block_depth(sd), "num_heads": heads, "mlp_hidden": mlp_width(sd),
                "patch": patch, "in_chans": in_chans, "grid": grid, "act": act, "eps": eps}

    def encode(self, frames: torch.Tensor, layers: int = 1) -> list[torch.Tensor]:
        """(N, C, H, W) -> (N, 1 + P, D): the MAP probe's attention over the normed patch tokens, then those
        tokens, for each of the last ``layers`` blocks."""
        x = self.patch_embedding(frames)
        grid = tuple(x.shape[-2:])
        self._set_grid(grid)
        x = x.flatten(2).transpose(1, 2) + resize_patch_positions(self.position_embedding[None], grid)
        return [self._probe_and_tokens(h) for h in last_block_outputs(x, self.blocks, layers)]

    def _probe_and_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """A block's output -> the probe token (what ``map`` pools) followed by the ``post_layernorm`` tokens
        (the token grid), so that one tensor serves both."""
        tokens = self.post_layernorm(x)
        return torch.cat([self.head.attend(tokens), tokens], dim=1)

    def patch_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """The normed patch tokens, less the probe token in front."""
        return features[:, 1:]

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """The probe token -> the head's LayerNorm + MLP residual: ``pooler_output``."""
        return self.head(pooled)


# --------------------------------------------------------------------- checkpoint adapter

_HF_RENAMES = [
    (r"^embeddings\.patch_embedding\.", "patch_embedding."),
    (r"^embeddings\.position_embedding\.weight$", "position_embedding"),
    *HF_ENCODER_RENAMES,
]


def adapt_siglip(ckpt: LoadedCheckpoint, key_map: KeyMap | None = None) -> Adapted:
    """HF ``SiglipVisionModel``/``SiglipModel`` (``vision_model.*`` or unprefixed) -> :class:`SiglipVision` names."""
    sd = apply_key_map(ckpt.tensors, key_map)
    if "vision_model.head.probe" in sd:
        sd = select_prefix(sd, "vision_model.")
    sd = fuse_separate_qkv(rename_keys(sd, _HF_RENAMES))
    if not {"patch_embedding.weight", "position_embedding", "head.probe", "blocks.0.attn.qkv.weight"} <= set(sd):
        raise wrong_layout(ckpt, "siglip", LAYOUTS, sd)
    cfg = ckpt.config.get("vision_config", ckpt.config)  # a SiglipModel config nests the vision one
    options = {"num_heads": cfg.get("num_attention_heads"), "act": cfg.get("hidden_act"),
               "eps": float(cfg["layer_norm_eps"]) if "layer_norm_eps" in cfg else None}
    return Adapted(sd, {k: v for k, v in options.items() if v is not None}, ("Hugging Face names",))


def _recognise(keys: set[str]) -> bool:
    return "vision_model.head.probe" in keys or {"head.probe", "embeddings.position_embedding.weight"} <= keys


register_recogniser("siglip", "siglip", _recognise)
register_family("siglip", model_cls=SiglipVision, adapter=adapt_siglip, spec=SIGLIP_SPEC, family="siglip",
                per_frame=True,
                description="SigLIP image encoder per frame, attention-pooled (MAP) embedding averaged over frames "
                            "(HF SiglipVisionModel/SiglipModel)")
