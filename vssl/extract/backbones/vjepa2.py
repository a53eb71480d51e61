"""V-JEPA 2 (and V-JEPA 1) video ViT encoder (Assran et al. 2025; Bardes et al. 2024).

Architecture, as in facebookresearch/vjepa2 ``src/models/vision_transformer.py``: a Conv3d tubelet
embedding (2 x 16 x 16), pre-norm blocks with a fused ``attn.qkv`` with bias, GELU MLP, a final
``norm`` (LayerNorm eps 1e-6); no CLS token. Positions differ by generation:

- V-JEPA 2 uses 3-D rotary embeddings inside attention (``use_rope``): each head's first
  ``3 * 2 * (head_dim // 3 // 2)`` channels are split into frame, row and column thirds, each rotated
  by its token's grid coordinate; the rest pass through. The released code duplicates the frequency
  vector (``repeat``) rather than interleaving it; the checkpoints were trained that way, so it is kept.
- V-JEPA 1 adds a fixed 3-D sincos table that the checkpoint stores as ``pos_embed``.

Embedding: the mean over tokens of the encoder output after the final norm (Hugging Face
``VJEPA2Model(...).last_hidden_state``), the frozen features the authors' attentive probes read.
Tokens (token views) are that ``last_hidden_state`` on its grid. ``--layers``: each earlier block's
output gets the final norm too, as the authors' encoder does for its ``out_layers``
(``hidden_states[-k]`` normed).

The adapter reads the authors' training checkpoints (``target_encoder``, as their evaluation
configs choose, else ``encoder``; ``module.``/``backbone.`` prefixes) and Hugging Face ``VJEPA2Model``
/ ``VJEPA2ForVideoClassification`` directories or state dicts (separate q/k/v fused on load).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vssl.errors import CheckpointError

from .base import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from .builder import Adapted
from .checkpoints import (KeyMap, LoadedCheckpoint, StateDict, apply_key_map, drop_keys, register_recogniser,
                          rename_keys, strip_prefix, wrong_layout)
from .registry import register_family
from .token_encoder import TokenEncoder, last_block_outputs
from .vit_layers import Attention, Block, ViTShape, fuse_separate_qkv, vit_arch

# The evaluation configs (configs/eval/vitl/*.yaml): 16 frames every 4th, 256 px, ImageNet statistics.
VJEPA2_SPEC = InputSpec(frames=16, stride=4, size=256, mean=IMAGENET_MEAN, std=IMAGENET_STD)
LAYOUTS = ("facebookresearch/vjepa2 or jepa .pt (target_encoder/encoder, module./backbone. prefixes), "
           "Hugging Face VJEPA2Model dir or state dict")
# vit_giant_xformers, V-JEPA 2's ViT-g, has 22 heads of 64 (the generic ViT-g table says 16).
VJEPA_HEADS = {1408: 22}
ROPE_THETA = 10000.0

Grid = tuple[int, int, int]


def rope_tables(grid: Grid, head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (N, head_dim), of V-JEPA 2's 3-D rotary embedding for tokens in (t, h, w) order.

    One table over the whole head (frame, row, column thirds, then unrotated channels with cos 1 and
    sin 0) so a single rotation serves the three axes; computed in float32 for any input dtype.
    """
    t, h, w = grid
    axis = 2 * ((head_dim // 3) // 2)
    ids = torch.arange(t * h * w, device=device)
    frame, rest = ids // (h * w), ids % (h * w)
    omega = 1.0 / ROPE_THETA ** (torch.arange(axis // 2, device=device, dtype=torch.float32) / (axis / 2))
    angles = [(pos.float()[:, None] * omega).repeat(1, 2) for pos in (frame, rest // w, rest % w)]
    angles = torch.cat(angles, dim=1)
    pad = head_dim - 3 * axis
    cos = F.pad(angles.cos(), (0, pad), value=1.0)
    sin = F.pad(angles.sin(), (0, pad), value=0.0)
    return cos, sin


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair (2i, 2i+1) of ``x`` (..., N, head_dim) by the table's angles."""
    pairs = x.unflatten(-1, (-1, 2))
    turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos.to(x.dtype) + turned * sin.to(x.dtype)


class RopeAttention(Attention):
    """The shared fused-qkv attention with q and k rotated by the token positions before the product."""

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if rope is None:
            return super().forward(x)
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(rotate(q, *rope), rotate(k, *rope), v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class RopeBlock(Block):
    """The shared pre-norm block (same parameter names) whose attention takes the rotary tables."""

    def __init__(self, shape: ViTShape) -> None:
        super().__init__(shape)
        self.attn = RopeAttention(shape.embed_dim, shape.num_heads, shape.qkv_bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class VJEPA2ViT(TokenEncoder):
    """V-JEPA encoder; ``forward_features`` returns the final-normed tokens, pooled by their mean."""

    pooling = "mean_tokens"

    def __init__(self, shape: ViTShape, spec: InputSpec, *, patch: int = 16, tubelet: int = 2, in_chans: int = 3,
                 pos_tokens: int = 0) -> None:
        super().__init__(embed_dim=shape.embed_dim, spec=spec, family="vjepa2")
        dim = shape.embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(in_chans, dim, (tubelet, patch, patch), (tubelet, patch, patch))
        # V-JEPA 1: a stored sincos table; V-JEPA 2: none, rotary positions instead.
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_tokens, dim)) if pos_tokens else None
        self.blocks = nn.ModuleList(RopeBlock(shape) for _ in range(shape.depth))
        self.norm = nn.LayerNorm(dim, eps=shape.eps)
        self.head_dim = dim // shape.num_heads

    @classmethod
    def arch_from_state_dict(cls, sd: StateDict, spec: InputSpec, source: str, *, num_heads: int | None = None,
                             eps: float = 1e-6) -> dict[str, Any]:
        """Block shape (heads: a config, ``--num-heads``, V-JEPA's ViT-g 22, else the ViT default), tubelet,
        and whether the file stores a position table (V-JEPA 1) or relies on rotary positions (V-JEPA 2)."""
        dim = sd["patch_embed.proj.weight"].shape[0]
        arch = vit_arch(sd, num_heads or VJEPA_HEADS.get(dim), eps)
        pos_tokens = sd["pos_embed"].shape[1] if "pos_embed" in sd else 0
        return {**arch, "tubelet": sd["patch_embed.proj.weight"].shape[2], "pos_tokens": pos_tokens}

    def encode(self, clips: torch.Tensor, layers: int = 1) -> list[torch.Tensor]:
        """(B, C, T, H, W) -> (B, N, D) tokens after the final norm, in (t, h, w) order, for each of the
        last ``layers`` blocks."""
        x = self.patch_embed.proj(clips)
        grid = tuple(x.shape[2:])
        self._set_grid(grid)
        x = x.flatten(2).transpose(1, 2)
        rope = None
        if self.pos_embed is not None:
            if self.pos_embed.shape[1] != x.shape[1]:
                raise CheckpointError(f"the checkpoint's position table has {self.pos_embed.shape[1]} tokens, the "
                                      f"clip gives {x.shape[1]} ({'x'.join(map(str, grid))}): use the frames and "
                                      "size it was trained with (V-JEPA 1: --frames 16 --size 224)")
            x = x + self.pos_embed.to(x.dtype)
        else:
            rope = rope_tables(grid, self.head_dim, x.device)
        return [self.norm(h) for h in last_block_outputs(x, self.blocks, layers, lambda block, h: block(h, rope))]


# --------------------------------------------------------------------- checkpoint adapter

_HF_RENAMES = [
    (r"^encoder\.embeddings\.patch_embeddings\.proj\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.query\.", r"blocks.\1.attn.q."),
    (r"^encoder\.layer\.(\d+)\.attention\.key\.", r"blocks.\1.attn.k."),
    (r"^encoder\.layer\.(\d+)\.attention\.value\.", r"blocks.\1.attn.v."),
    (r"^encoder\.layer\.(\d+)\.attention\.proj\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.(norm1|norm2|mlp\.fc1|mlp\.fc2)\.", r"blocks.\1.\2."),
    (r"^encoder\.layernorm\.", "norm."),
]
_HF_NOT_ENCODER = (r"predictor\.", r"pooler\.", r"classifier\.")
_HF_MARK = "encoder.embeddings.patch_embeddings.proj.weight"


def adapt_vjepa2(ckpt: LoadedCheckpoint, key_map: KeyMap | None = None) -> Adapted:
    """Convert a V-JEPA checkpoint to :class:`VJEPA2ViT` names.

    The training file's container (``target_encoder`` before ``encoder``) is chosen when the file is
    read (:data:`.checkpoints.CONTAINER_KEYS`); ``arch_kwargs`` carry a Hugging Face config's head
    count and LayerNorm eps.
    """
    sd = apply_key_map(ckpt.tensors, key_map)
    notes = [f"container {ckpt.container}"] if ckpt.container else []
    options: dict[str, Any] = {}
    sd = {k.removeprefix("vjepa2."): v for k, v in sd.items()}  # VJEPA2ForVideoClassification
    if _HF_MARK in sd:
        sd = fuse_separate_qkv(rename_keys(drop_keys(sd, _HF_NOT_ENCODER), _HF_RENAMES))
        cfg = ckpt.config or {}
        options = {"num_heads": cfg.get("num_attention_heads"), "eps": float(cfg.get("layer_norm_eps", 1e-6))}
        notes.append("Hugging Face names")
    else:
        sd = strip_prefix(strip_prefix(sd, "module."), "backbone.")  # DDP, then the training wrapper
    proj = sd.get("patch_embed.proj.weight")
    if proj is None or proj.dim() != 5 or "blocks.0.attn.qkv.weight" not in sd or "norm.weight" not in sd:
        raise wrong_layout(ckpt, "vjepa2", LAYOUTS, sd)
    return Adapted(sd, options, tuple(notes))


def _recognise(keys: set[str]) -> bool:
    """Hugging Face VJEPA2 names, or the authors' encoder names (qkv with a full bias, no CLS, no q/v bias)."""
    keys = {k.removeprefix("module.").removeprefix("backbone.").removeprefix("vjepa2.") for k in keys}
    if _HF_MARK in keys:
        return True
    return ("patch_embed.proj.weight" in keys and "blocks.0.attn.qkv.bias" in keys and "norm.weight" in keys
            and not any(k.endswith(("cls_token", "q_bias", "fc_norm.weight", "time_embed")) for k in keys))


register_recogniser("vjepa2", "vjepa2", _recognise)
register_family("vjepa2", model_cls=VJEPA2ViT, adapter=adapt_vjepa2, spec=VJEPA2_SPEC, family="vjepa2",
                description="V-JEPA 2 (RoPE) / V-JEPA 1 video ViT, mean of encoder tokens "
                            "(vjepa2/jepa .pt, HF VJEPA2Model dir)")
