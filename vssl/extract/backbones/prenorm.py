"""Pre-norm transformer pieces for the image families that differ from the timm block (DINOv2, CLIP).

:class:`~.vit_layers.Block` fixes GELU, an fc1/fc2 MLP and VideoMAE's ``gamma_1`` LayerScale; DINOv2
needs LayerScale named ``ls1.gamma`` and a SwiGLU MLP (ViT-g), CLIP QuickGELU. Rather than widen
the shared block (owned by the video families), this module builds the same pre-norm block from
the shared :class:`~.vit_layers.Attention` with those choices as arguments. Names follow
facebookresearch/dinov2 (``norm1``, ``attn.qkv``, ``attn.proj``, ``ls1.gamma``, ``norm2``,
``mlp.fc1``/``mlp.fc2`` or ``mlp.w12``/``mlp.w3``, ``ls2.gamma``); other layouts are renamed to
them by their adapters.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import StateDict
from .pos_embed import grid_side, resize_pos_grid
from .vit_layers import Attention, Mlp


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's GELU approximation ``x * sigmoid(1.702 x)``: its weights were trained with it."""
    return x * torch.sigmoid(1.702 * x)


# transformers' ``hidden_act`` names -> the function; the checkpoint's training activation must match.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "quick_gelu": quick_gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
}


class _Act(nn.Module):
    """An activation from :data:`ACTIVATIONS`, as a module (no parameters, so names are unaffected)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fn = ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def act_mlp(dim: int, hidden: int, act: str) -> Mlp:
    """The fc1/fc2 :class:`~.vit_layers.Mlp` with a named activation (CLIP/SigLIP blocks, SigLIP's pooling head)."""
    mlp = Mlp(dim, hidden)
    mlp.act = _Act(act)
    return mlp


# transformers' CLIP/SigLIP encoder layer names (``encoder.layers.N.*``) -> :class:`PreNormBlock`'s;
# q/k/v stay separate here (``attn.q``...) for :func:`~.vit_layers.fuse_separate_qkv`.
HF_ENCODER_RENAMES = [
    (r"^encoder\.layers\.(\d+)\.", r"blocks.\1."),
    (r"\.layer_norm([12])\.", r".norm\1."),
    (r"\.self_attn\.([qkv])_proj\.", r".attn.\1."),
    (r"\.self_attn\.out_proj\.", ".attn.proj."),
]


class LayerScale(nn.Module):
    """Per-channel residual scale (CaiT; DINOv2's ``ls1``/``ls2``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class SwiGLU(nn.Module):
    """DINOv2's fused SwiGLU MLP: ``w3(silu(a) * b)`` with ``a, b = w12(x).chunk(2)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class PreNormBlock(nn.Module):
    """x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))); LayerScale and SwiGLU optional."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, *, eps: float, act: str = "gelu",
                 layer_scale: bool = False, swiglu: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp: nn.Module = SwiGLU(dim, mlp_hidden) if swiglu else act_mlp(dim, mlp_hidden, act)
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def block_depth(sd: StateDict, prefix: str = "blocks.") -> int:
    """Number of blocks ``prefix.N.*`` in a state dict."""
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def mlp_width(sd: StateDict, prefix: str = "blocks.0.mlp.") -> int:
    """Hidden width of block 0's MLP (SwiGLU's ``w3`` input, else ``fc1``'s output)."""
    w3 = sd.get(f"{prefix}w3.weight")
    return w3.shape[1] if w3 is not None else sd[f"{prefix}fc1.weight"].shape[0]


def resize_patch_positions(table: torch.Tensor, grid: tuple[int, int], antialias: bool = False) -> torch.Tensor:
    """A (1, S*S, D) square position grid resized bicubically to ``grid`` (as transformers' DINOv2/CLIP)."""
    side = grid_side(table.shape[1])
    return resize_pos_grid(table, (side, side), tuple(grid), "bicubic", antialias)