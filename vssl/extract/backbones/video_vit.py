"""VideoMAE-family video ViT (VideoMAE, VideoMAE V2; tested layouts: :mod:`.verified`).

Architecture (Tong et al. 2022, VideoMAE §3.3/appendix): a Conv3d tubelet embedding of 2x16x16
over 16 frames at 224 px gives 8x14x14 tokens ordered (t, h, w); no CLS token; a fixed 1-D
sinusoid position table over the flattened token index (not stored in checkpoints); pre-norm
blocks with LayerNorm eps 1e-6 and a qkv projection without bias plus learnable ``q_bias`` and
``v_bias`` (the k bias is zero).

Clip embedding, the way the authors evaluate: a finetuned checkpoint (``fc_norm``) gives
``fc_norm(mean(tokens))``; a pretrain checkpoint (``encoder.norm``) gives ``mean(norm(tokens))``.
Only the norms the file contains are put in the path, never an untrained one.

Tokens (token views) are the encoder's output as transformers' ``VideoMAEModel`` returns it in
``last_hidden_state``: ``norm(tokens)`` for a pretrain file, the un-normed tokens for a finetuned one
(its ``fc_norm`` follows pooling). ``--layers``: each earlier block's output takes the same path (the
file's ``norm`` where it has one, then pooling and ``fc_norm``), i.e. ``hidden_states[-k]`` so normed.

One adapter, :func:`adapt_video_vit`, recognises the released layouts — MCG-NJU finetuned and
pretrain ``.pth``, Hugging Face directories with v4 (``q_bias``/``v_bias``) or v5
(``query.bias``/``value.bias``) names, MindSpore ``.ckpt`` with fused or separate q/k/v —
and converts them to this module's names.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from vssl.errors import CheckpointError

from .base import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from .builder import Adapted
from .checkpoints import (KeyMap, LoadedCheckpoint, StateDict, apply_key_map, drop_keys, register_recogniser,
                          rename_keys, select_prefix, strip_prefix, wrong_layout)
from .mindspore_ckpt import is_mindspore_layout, mindspore_to_torch_names
from .registry import register_family
from .token_encoder import TokenEncoder, last_block_outputs
from .pos_embed import resize_pos_table, say_resized
from .vit_layers import Block, ViTShape, fuse_separate_qkv, sinusoid_table, vit_arch

log = logging.getLogger("vssl.extract")

VIDEOMAE_SPEC = InputSpec(frames=16, stride=4, size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
LAYOUTS = "MCG-NJU finetuned/pretrain .pth, Hugging Face VideoMAE dir (v4/v5 names), MindSpore .ckpt"
HF_FC_NORM_EPS = 1e-5  # transformers' VideoMAEForVideoClassification builds fc_norm with LayerNorm's default


class VideoViT(TokenEncoder):
    """Tubelet-embedding ViT over a whole clip; output = pooled token embedding."""

    pooling = "mean_tokens"

    def __init__(self, shape: ViTShape, spec: InputSpec, *, patch: int = 16, tubelet: int = 2, in_chans: int = 3,
                 final_norm: bool = True, fc_norm: bool = False, fc_norm_eps: float | None = None,
                 learned_pos: int = 0, family: str = "videomae",
                 pos_grid: tuple[int, int, int] | None = None) -> None:
        super().__init__(embed_dim=shape.embed_dim, spec=spec, family=family)
        # the token grid (t, h, w) the position table was trained for; None: the clip's own grid
        self.pos_grid = tuple(pos_grid) if pos_grid else None
        self._fixed_tables: dict[tuple, torch.Tensor] = {}  # position_table's cache
        dim = shape.embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(in_chans, dim, kernel_size=(tubelet, patch, patch),
                                          stride=(tubelet, patch, patch))
        # Some releases train a learned table instead of the fixed sinusoid (use_learnable_pos_emb).
        self.pos_embed = nn.Parameter(torch.zeros(1, learned_pos, dim)) if learned_pos else None
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.depth))
        self.norm = nn.LayerNorm(dim, eps=shape.eps) if final_norm else None
        self.fc_norm = nn.LayerNorm(dim, eps=fc_norm_eps or shape.eps) if fc_norm else None

    @classmethod
    def arch_from_state_dict(cls, sd: StateDict, spec: InputSpec, source: str, *, num_heads: int | None = None,
                             eps: float = 1e-6, fc_norm_eps: float | None = None,
                             trained_frames: int | None = None, trained_size: int | None = None) -> dict[str, Any]:
        """Shape, tubelet, which norms the file has, and the token grid its position table was trained for.

        The training clip comes from a Hugging Face config (``trained_frames``/``trained_size``)
        or, for a learned table, from its length (the family's 16 x 224 clip, or the requested
        one). A clip of another grid gets the table interpolated (:func:`resize_pos_table`), said
        in one log line. A file that says neither (an MCG-NJU ``.pth`` with the fixed sinusoid)
        gets the sinusoid built for the requested clip, as before, also said in one line.
        """
        arch = vit_arch(sd, num_heads, eps)
        proj = sd["patch_embed.proj.weight"]
        tubelet, patch = proj.shape[2], proj.shape[-1]
        grid_of = lambda frames, size: (frames // tubelet, size // patch, size // patch)  # noqa: E731
        clip = grid_of(spec.frames, spec.size)
        pos_grid = grid_of(trained_frames, trained_size) if trained_frames and trained_size else None
        if "pos_embed" in sd:
            n = sd["pos_embed"].shape[1]
            default = grid_of(VIDEOMAE_SPEC.frames, VIDEOMAE_SPEC.size)
            pos_grid = pos_grid or next((g for g in (clip, default) if math.prod(g) == n), None)
            if pos_grid is None or math.prod(pos_grid) != n:
                raise CheckpointError(f"{source} has a learned position table for {n} tokens, which is neither "
                                      f"{spec.frames} frames at {spec.size} px nor the family's "
                                      f"{VIDEOMAE_SPEC.frames} x {VIDEOMAE_SPEC.size}: use the clip size it was "
                                      "trained with (--frames/--size)")
        if pos_grid is not None:
            say_resized("videomae", source, pos_grid, clip, "trilinearly (as SCALE does)",
                        f"{spec.frames} frames at {spec.size} px")
        elif pos_grid is None and (spec.frames, spec.size) != (VIDEOMAE_SPEC.frames, VIDEOMAE_SPEC.size):
            log.warning("%s does not say which clip it was trained on: its fixed sinusoid table is built for %d "
                        "frames at %d px (no interpolation)", source, spec.frames, spec.size)
        return {**arch, "tubelet": tubelet, "final_norm": "norm.weight" in sd,
                "fc_norm": "fc_norm.weight" in sd, "fc_norm_eps": fc_norm_eps,
                "learned_pos": sd["pos_embed"].shape[1] if "pos_embed" in sd else 0, "pos_grid": pos_grid}

    def encode(self, clips: torch.Tensor, layers: int = 1) -> list[torch.Tensor]:
        """(B, C, T, H, W) -> (B, N, D) tokens in (t, h, w) order, normed if the file has ``norm``, for each
        of the last ``layers`` blocks."""
        x = self.patch_embed.proj(clips)
        grid = tuple(x.shape[2:])
        self._set_grid(grid)
        x = x.flatten(2).transpose(1, 2)
        x = x + self.position_table(grid, x)
        return [self.norm(h) if self.norm is not None else h for h in last_block_outputs(x, self.blocks, layers)]

    def position_table(self, grid: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """The (1, N, D) table for a clip of token grid ``grid``: the trained one, interpolated if needed."""
        trained = self.pos_grid or grid
        if self.pos_embed is not None:
            if self.pos_grid is None and self.pos_embed.shape[1] != math.prod(grid):
                raise CheckpointError(f"checkpoint's learned position table has {self.pos_embed.shape[1]} tokens,"
                                      f" the clip gives {math.prod(grid)}: use the frames/size it was trained with")
            return resize_pos_table(self.pos_embed, trained, grid).to(like.dtype)
        # the fixed table depends on nothing learned: built (and resized, and uploaded) once per
        # (grid, device, dtype) instead of in every forward
        key = (grid, like.device, like.dtype)
        if key not in self._fixed_tables:
            table = sinusoid_table(math.prod(trained), like.shape[-1], like)
            self._fixed_tables[key] = resize_pos_table(table, trained, grid).to(like.dtype)
        return self._fixed_tables[key]

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc_norm(pooled) if self.fc_norm is not None else pooled


# --------------------------------------------------------------------- checkpoint adapter

_HF_RENAMES = [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.query\.", r"blocks.\1.attn.q."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.key\.", r"blocks.\1.attn.k."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.value\.", r"blocks.\1.attn.v."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.([qv])_bias$", r"blocks.\1.attn.\2_bias"),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"^layernorm\.", "norm."),
]
_TRAINING_ONLY = (r"decoder\.", r"encoder_to_decoder\.", r"mask_token$", r"head\.", r"classifier\.",
                  r"embeddings\.position_embeddings$")


def adapt_video_vit(ckpt: LoadedCheckpoint, key_map: KeyMap | None = None) -> Adapted:
    """Convert any known VideoMAE-family layout to :class:`VideoViT` names.

    ``arch_kwargs`` carry what only the container says: LayerNorm eps and head count from a
    Hugging Face config, and the ``fc_norm`` eps transformers builds.
    """
    sd = apply_key_map(ckpt.tensors, key_map)
    options: dict = {"eps": 1e-6, "fc_norm_eps": None, "num_heads": None}
    notes = []
    if is_mindspore_layout(set(sd)):
        sd = mindspore_to_torch_names(sd)
        notes.append("MindSpore names")
    # HF ForPreTraining/ForVideoClassification wrap the base model as `videomae.` next to extras.
    sd = {k.removeprefix("videomae."): v for k, v in sd.items()}
    sd = strip_prefix(sd, "backbone.")  # VideoMAEv2's loader strips it too (wrapped finetuned files)
    if "embeddings.patch_embeddings.projection.weight" in sd:  # Hugging Face
        sd = rename_keys(drop_keys(sd, _TRAINING_ONLY), _HF_RENAMES)
        cfg = ckpt.config
        options.update(eps=float(cfg.get("layer_norm_eps", 1e-12)) if cfg else 1e-12,
                       fc_norm_eps=HF_FC_NORM_EPS, num_heads=cfg.get("num_attention_heads"),
                       trained_frames=cfg.get("num_frames") if cfg else None,
                       trained_size=cfg.get("image_size") if cfg else None)
        notes.append("Hugging Face names")
    elif "encoder.patch_embed.proj.weight" in sd:  # MCG-NJU pretrain: encoder + decoder
        sd = select_prefix(sd, "encoder.")
        notes.append("MCG-NJU pretrain")
    sd = fuse_separate_qkv(drop_keys(sd, _TRAINING_ONLY))
    proj = sd.get("patch_embed.proj.weight")
    if proj is None or proj.dim() != 5 or "blocks.0.attn.qkv.weight" not in sd:
        raise wrong_layout(ckpt, "videomae", LAYOUTS, sd)
    return Adapted(sd, options, tuple(notes))


def _recognise(keys: set[str]) -> bool:
    keys = {k.removeprefix("encoder.") for k in keys}
    hf = any(k.endswith("attention.attention.query.weight") for k in keys)
    mcg = any(k.endswith("patch_embed.proj.weight") for k in keys) and \
        not any(k.endswith(("cls_token", "time_embed", "pos_embed_spatial")) for k in keys)
    return hf or (mcg and any(k.endswith("attn.qkv.weight") or k.endswith("attn.q.weight") for k in keys))


register_recogniser("videomae", "videomae", _recognise)
register_family("videomae", model_cls=VideoViT, adapter=adapt_video_vit, spec=VIDEOMAE_SPEC, family="videomae",
                description="VideoMAE / VideoMAE V2 video ViT (MCG-NJU/OpenGVLab .pth, HF dir, MindSpore .ckpt)")
