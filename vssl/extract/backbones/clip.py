"""CLIP image encoder (Radford et al. 2021), applied per frame.

Checkpoints load as released: OpenAI CLIP and open_clip state dicts (``visual.conv1``,
``visual.class_embedding``, ``visual.positional_embedding``, ``visual.ln_pre``,
``visual.transformer.resblocks.N.{ln_1,attn.in_proj_weight,attn.out_proj,ln_2,mlp.c_fc,mlp.c_proj}``,
``visual.ln_post``, ``visual.proj``; the text tower is dropped) and Hugging Face
``CLIPVisionModelWithProjection`` / ``CLIPModel`` (``vision_model.*`` + ``visual_projection``).
Outer names stay OpenAI's; blocks are renamed to :class:`~.prenorm.PreNormBlock`'s.

Each frame is embedded as CLIP's image embedding (HF ``image_embeds``): ``ln_post(CLS) @ proj``;
the clip embedding averages the frames. Tokens (token views) are transformers' ``last_hidden_state``
less CLS, frames x patches: the last block's output, which neither OpenAI's code nor transformers
norms (``ln_post`` is applied to the CLS token alone; open_clip's ``output_tokens`` norms them all).
``--layers``: each earlier block's output likewise (``hidden_states[-k]``), its CLS token through
``ln_post`` and the projection for the embedding. The activation is not in the state dict: OpenAI's weights
were trained with QuickGELU, which is the default for the ``visual.*`` layout; open_clip models
trained without it (LAION ``ViT-*`` without ``-quickgelu``) need ``act="gelu"``. A Hugging Face
config's ``hidden_act`` decides for its files. OpenAI's TorchScript ``.pt`` archives (``ViT-B-32.pt``,
...) are read as released: :mod:`.torchscript_ckpt` takes their ``state_dict()`` without running their
code. At another input size the position grid is resized bicubically, as transformers'
``interpolate_pos_encoding`` does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import InputSpec
from .builder import Adapted
from .checkpoints import (KeyMap, LoadedCheckpoint, StateDict, apply_key_map, register_recogniser, rename_keys,
                          select_prefix, wrong_layout)
from .prenorm import HF_ENCODER_RENAMES, PreNormBlock, block_depth, mlp_width, resize_patch_positions
from .registry import register_family
from .token_encoder import TokenEncoder, last_block_outputs
from .pos_embed import grid_side, say_resized
from .vit_layers import STANDARD_HEADS, fuse_separate_qkv

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SPEC = InputSpec(frames=8, stride=8, size=224, mean=CLIP_MEAN, std=CLIP_STD)
LAYOUTS = ("OpenAI CLIP / open_clip visual.* state dict or OpenAI TorchScript .pt, Hugging Face"
           " CLIPVisionModelWithProjection dir")


class CLIPVision(TokenEncoder):
    """CLIP's ViT over single frames ``(N, C, H, W)``; forward gives the projected image embedding."""

    pooling = "cls"

    def __init__(self, spec: InputSpec, *, width: int, depth: int, num_heads: int, mlp_hidden: int, out_dim: int,
                 patch: int = 16, in_chans: int = 3, grid: int = 14, act: str = "quick_gelu",
                 eps: float = 1e-5) -> None:
        super().__init__(embed_dim=out_dim, spec=spec, family="clip")
        self.conv1 = nn.Conv2d(in_chans, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(1 + grid * grid, width))
        self.ln_pre = nn.LayerNorm(width, eps=eps)
        self.blocks = nn.ModuleList(PreNormBlock(width, num_heads, mlp_hidden, eps=eps, act=act)
                                    for _ in range(depth))
        self.ln_post = nn.LayerNorm(width, eps=eps)
        self.proj = nn.Parameter(torch.zeros(width, out_dim))

    @classmethod
    def arch_from_state_dict(cls, sd: StateDict, spec: InputSpec, source: str, *, num_heads: int | None = None,
                             act: str = "quick_gelu", eps: float = 1e-5) -> dict[str, Any]:
        width, out_dim = sd["proj"].shape
        conv = sd["conv1.weight"]
        grid = grid_side(sd["positional_embedding"].shape[0] - 1)
        say_resized("clip", source, (grid, grid), (spec.size // conv.shape[-1],) * 2, "bicubically",
                    f"{spec.size} px frames")
        return {"width": width, "out_dim": out_dim, "depth": block_depth(sd), "mlp_hidden": mlp_width(sd),
                "num_heads": num_heads or STANDARD_HEADS.get(width) or max(1, width // 64),
                "patch": conv.shape[-1], "in_chans": conv.shape[1],
                "grid": grid, "act": act, "eps": eps}

    def encode(self, frames: torch.Tensor, layers: int = 1) -> list[torch.Tensor]:
        """(N, C, H, W) -> (N, 1 + P, D) tokens (before ``ln_post``), CLS first, of each of the last
        ``layers`` blocks."""
        x = self.conv1(frames)
        grid = tuple(x.shape[-2:])
        self._set_grid(grid)
        x = x.flatten(2).transpose(1, 2)
        pos = self.positional_embedding[None]
        patch_pos = resize_patch_positions(pos[:, 1:], grid)
        cls = (self.class_embedding + pos[:, 0]).expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x + patch_pos], dim=1))
        return last_block_outputs(x, self.blocks, layers)

    def patch_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """The tokens less CLS, un-normed as in transformers' ``last_hidden_state``."""
        return features[:, 1:]

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """CLS token -> ``ln_post`` -> projection: the image embedding."""
        return self.ln_post(pooled) @ self.proj


# --------------------------------------------------------------------- checkpoint adapter

_OPENAI_RENAMES = [
    (r"^transformer\.resblocks\.(\d+)\.", r"blocks.\1."),
    (r"\.ln_([12])\.", r".norm\1."),
    (r"\.attn\.in_proj_(weight|bias)$", r".attn.qkv.\1"),
    (r"\.attn\.out_proj\.", ".attn.proj."),
    (r"\.mlp\.c_fc\.", ".mlp.fc1."), (r"\.mlp\.c_proj\.", ".mlp.fc2."),
]
_HF_RENAMES = [
    (r"^embeddings\.patch_embedding\.weight$", "conv1.weight"),
    (r"^embeddings\.class_embedding$", "class_embedding"),
    (r"^embeddings\.position_embedding\.weight$", "positional_embedding"),
    (r"^pre_layrnorm\.", "ln_pre."), (r"^post_layernorm\.", "ln_post."),
    *HF_ENCODER_RENAMES,
]


def adapt_clip(ckpt: LoadedCheckpoint, key_map: KeyMap | None = None) -> Adapted:
    """OpenAI/open_clip ``visual.*`` or HF ``vision_model.*`` + ``visual_projection`` -> :class:`CLIPVision` names."""
    sd = apply_key_map(ckpt.tensors, key_map)
    options: dict[str, Any] = {}
    if "vision_model.embeddings.class_embedding" in sd:
        vision = rename_keys(select_prefix(sd, "vision_model."), _HF_RENAMES)
        if "visual_projection.weight" in sd:  # nn.Linear(width, out, bias=False): weight is proj transposed
            vision["proj"] = sd["visual_projection.weight"].t()
        sd = fuse_separate_qkv(vision)
        cfg = ckpt.config.get("vision_config", ckpt.config)  # a CLIPModel config nests the vision one
        options = {"num_heads": cfg.get("num_attention_heads"), "act": cfg.get("hidden_act", "quick_gelu"),
                   "eps": float(cfg.get("layer_norm_eps", 1e-5))}
        notes: tuple[str, ...] = ("Hugging Face names",)
    else:
        sd = rename_keys(select_prefix(sd, "visual.") if "visual.proj" in sd else sd, _OPENAI_RENAMES)
        notes = ("OpenAI/open_clip names",)
    if not {"conv1.weight", "class_embedding", "positional_embedding", "proj", "blocks.0.attn.qkv.weight"} <= set(sd):
        raise wrong_layout(ckpt, "clip", LAYOUTS, sd)
    return Adapted(sd, {k: v for k, v in options.items() if v is not None}, notes)


def _recognise(keys: set[str]) -> bool:
    return "visual.class_embedding" in keys or "vision_model.embeddings.class_embedding" in keys


register_recogniser("clip", "clip", _recognise)
register_family("clip", model_cls=CLIPVision, adapter=adapt_clip, spec=CLIP_SPEC, family="clip", per_frame=True,
                description="CLIP image encoder per frame, projected image embedding averaged over frames "
                            "(OpenAI/open_clip visual.*, OpenAI TorchScript .pt, HF dir)")
