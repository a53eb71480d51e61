"""Transformer pieces shared by the ViT families (video ViT, image ViT, ST-MAE, TimeSformer).

Parameter names follow the timm/MCG-NJU convention (``norm1``, ``attn.qkv``, ``attn.proj``,
``norm2``, ``mlp.fc1``, ``mlp.fc2``) so that most official checkpoints load with few or no
renames. Attention uses :func:`torch.nn.functional.scaled_dot_product_attention`, which
picks a fused kernel on CUDA and stays exact on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import StateDict


# Published head counts of the standard ViT widths (Dosovitskiy et al.; Zhai et al. for ViT-g 1408).
STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


@dataclass(frozen=True)
class ViTShape:
    """Architecture hyper-parameters a checkpoint implies."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    qkv_bias: str = "full"  # "full" (timm), "qv" (VideoMAE: q_bias/v_bias, k bias zero), "none"
    layer_scale: bool = False  # gamma_1/gamma_2 (VideoMAE v2 with init_values)
    eps: float = 1e-6


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: str = "full") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv_bias_mode = qkv_bias
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias == "full")
        if qkv_bias == "qv":
            # VideoMAE/BEiT: learnable q and v biases, the k bias is fixed at zero.
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        if self.qkv_bias_mode == "qv":
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
            qkv = F.linear(x, self.qkv.weight, bias)
        else:
            qkv = self.qkv(x)
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, shape: ViTShape) -> None:
        super().__init__()
        dim = shape.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=shape.eps)
        self.attn = Attention(dim, shape.num_heads, shape.qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=shape.eps)
        self.mlp = Mlp(dim, shape.mlp_hidden)
        if shape.layer_scale:
            self.gamma_1 = nn.Parameter(torch.ones(dim))
            self.gamma_2 = nn.Parameter(torch.ones(dim))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gamma_1 is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = x + self.gamma_1 * self.attn(self.norm1(x))
        return x + self.gamma_2 * self.mlp(self.norm2(x))


def infer_vit_shape(sd: StateDict, prefix: str = "blocks.", num_heads: int | None = None,
                    eps: float = 1e-6, head_dim: int = 64) -> ViTShape:
    """Read depth, width, MLP width and bias layout from the (already renamed) state dict.

    The head count is not visible in the shapes: the standard widths get their published
    head counts (ViT-S 6, B 12, L 16, H 16, g 16 — H and g do not use 64-d heads), any other
    width ``embed_dim // 64``, unless a config or ``num_heads`` says otherwise.
    """
    depth = len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})
    w = sd[f"{prefix}0.attn.qkv.weight"]
    dim = w.shape[1]
    if f"{prefix}0.attn.q_bias" in sd:
        bias = "qv"
    elif f"{prefix}0.attn.qkv.bias" in sd:
        bias = "full"
    else:
        bias = "none"
    heads = num_heads or STANDARD_HEADS.get(dim) or max(1, dim // head_dim)
    return ViTShape(embed_dim=dim, depth=depth, num_heads=heads, mlp_hidden=sd[f"{prefix}0.mlp.fc1.weight"].shape[0],
                    qkv_bias=bias, layer_scale=f"{prefix}0.gamma_1" in sd, eps=eps)


def vit_arch(sd: StateDict, num_heads: int | None = None, eps: float = 1e-6) -> dict[str, Any]:
    """Constructor arguments every ViT family reads alike: the block shape and the patch embedding."""
    proj = sd["patch_embed.proj.weight"]
    return {"shape": infer_vit_shape(sd, num_heads=num_heads, eps=eps), "patch": proj.shape[-1],
            "in_chans": proj.shape[1]}


def fuse_separate_qkv(sd: StateDict, attn_prefix_regex: str = r"(.*\.attn)\.") -> StateDict:
    """Concatenate separate ``attn.q/k/v`` Linear layers (mae_st, some MindSpore ports) into ``attn.qkv``.

    Missing k bias with present q and v biases becomes the ``q_bias``/``v_bias`` layout.
    """
    import re

    rx = re.compile(attn_prefix_regex + r"([qkv])\.(weight|bias)$")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    out: StateDict = {}
    for key, value in sd.items():
        m = rx.fullmatch(key)
        if m:
            groups.setdefault(m.group(1), {})[f"{m.group(2)}.{m.group(3)}"] = value
        else:
            out[key] = value
    for prefix, parts in groups.items():
        if not all(f"{n}.weight" in parts for n in "qkv"):
            out.update({f"{prefix}.{k}": v for k, v in parts.items()})  # leave for the strict loader to report
            continue
        out[f"{prefix}.qkv.weight"] = torch.cat([parts["q.weight"], parts["k.weight"], parts["v.weight"]])
        if all(f"{n}.bias" in parts for n in "qkv"):
            out[f"{prefix}.qkv.bias"] = torch.cat([parts["q.bias"], parts["k.bias"], parts["v.bias"]])
        elif "q.bias" in parts and "v.bias" in parts:
            out[f"{prefix}.q_bias"], out[f"{prefix}.v_bias"] = parts["q.bias"], parts["v.bias"]
    return out


@lru_cache(maxsize=16)
def _sinusoid_table(num_tokens: int, dim: int) -> torch.Tensor:
    pos = torch.arange(num_tokens, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


def sinusoid_table(num_tokens: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """Fixed 1-D sinusoid position table over the flattened token index (Vaswani et al.; VideoMAE)."""
    return _sinusoid_table(num_tokens, dim).to(device=like.device, dtype=like.dtype)
