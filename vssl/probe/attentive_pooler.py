"""The attentive probe's model: V-JEPA 2's attentive pooler and linear classifier, padding-aware.

The field's protocol for frozen video encoders (V-JEPA, V-JEPA 2) trains a small cross-attention
classifier over all patch tokens of a video's clips. This module is that classifier as released
(facebookresearch/vjepa2 ``src/models/attentive_pooler.py`` with the blocks of
``src/models/utils/modules.py``): ``depth - 1`` pre-norm self-attention blocks over the tokens, then
one cross-attention block from ``num_queries`` learned queries (no output projection), then a linear
head on the pooled query. Parameter names are vjepa2's (``pooler.query_tokens``, ``pooler.blocks.i.*``,
``pooler.cross_attention_block.*``, ``linear.*``), so its probe checkpoints load as they are; the
initialisation is vjepa2's too (truncated normal, std 0.02, biases 0; the output weights of block i
divided by sqrt(2 i)). The linear head keeps PyTorch's default init, as released.

One addition: ``valid`` marks padding. vssl batches videos with different numbers of clips or
tokens (ragged views) by padding them; padded tokens are masked out of every attention as keys, so
each video's logits equal the released model's on that video alone (LayerNorm and MLP are per
token, so padded rows never reach a valid one).

:func:`load_attentive` reads a released probe: the vjepa2 repository's checkpoint
(``evals/video_classification_frozen/eval.py`` saves ``{"classifiers": [state_dict, ...], "opt": ...}``
with DDP's ``module.`` prefix) or a transformers ``VJEPA2ForVideoClassification`` checkpoint (its
``pooler.*`` and ``classifier.*`` keys, renamed and fused; the encoder's keys are ignored).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vssl.errors import VsslError
from vssl.extract.backbones.vit_layers import Mlp  # fc1 -> GELU -> fc2, vjepa2's MLP (no dropout)

#: LayerNorm epsilon of the released probe (vjepa2 builds it with ``nn.LayerNorm``'s default)
VJEPA2_NORM_EPS = 1e-5
#: heads of the released probe (configs/eval/vitl/*.yaml: ``num_heads: 16``); a vjepa2 checkpoint does not say
RELEASED_HEADS = 16


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, D] -> [B, heads, N, D / heads]."""
    b, n, d = x.shape
    return x.reshape(b, n, num_heads, d // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, d] -> [B, N, heads * d]."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class _SelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and ``proj`` (vjepa2's ``Attention``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        q, k, v = (_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)))


class _Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)) (vjepa2's ``Block``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = _SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


class _CrossAttention(nn.Module):
    """Queries attend to the tokens: ``q`` and fused ``kv`` projections, no output projection (as released)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)

    def forward(self, q: torch.Tensor, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        k, v = (_heads(t, self.num_heads) for t in self.kv(x).chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(_heads(self.q(q), self.num_heads), k, v, attn_mask=key_mask)
        return _merge_heads(out)


class _CrossAttentionBlock(nn.Module):
    """q + xattn(q, norm1(x)), then q + mlp(norm2(q)) (vjepa2's ``CrossAttentionBlock``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.xattn = _CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, q: torch.Tensor, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x), key_mask)
        return q + self.mlp(self.norm2(q))


def _key_mask(valid: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """``valid`` [B, N] as an attention mask [B, 1, 1, N] (True = attend); None when nothing is padded.

    A video with no valid token has nothing to pool (its softmax would be 0/0): refused, not NaN.
    """
    if valid is None:
        return None
    if valid.shape != x.shape[:2]:
        raise ValueError(f"valid has shape {tuple(valid.shape)}, the tokens {tuple(x.shape[:2])} (batch, tokens)")
    valid = valid.to(device=x.device, dtype=torch.bool)
    if not bool(valid.any(dim=1).all()):
        raise ValueError("a row of valid is all False: every video needs at least one token")
    return valid[:, None, None, :]


class AttentivePooler(nn.Module):
    """``depth - 1`` self-attention blocks over the tokens, then learned queries cross-attend to them.

    ``forward(x [B, N, D], valid [B, N] | None) -> [B, num_queries, D]``. Defaults are the released
    probe's (4 blocks, 16 heads: ``configs/eval/vitl/ssv2.yaml``); ``num_heads`` must divide ``embed_dim``.
    """

    def __init__(self, embed_dim: int, num_heads: int = RELEASED_HEADS, depth: int = 4, mlp_ratio: float = 4.0,
                 num_queries: int = 1, eps: float = VJEPA2_NORM_EPS, init_std: float = 0.02) -> None:
        super().__init__()
        if depth < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"attentive pooler: embed_dim {embed_dim} must be divisible by num_heads {num_heads} "
                             f"and depth {depth} >= 1")
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, embed_dim))
        self.cross_attention_block = _CrossAttentionBlock(embed_dim, num_heads, mlp_ratio, eps)
        self.blocks = nn.ModuleList(_Block(embed_dim, num_heads, mlp_ratio, eps) for _ in range(depth - 1))
        self._init_weights(init_std)

    def _init_weights(self, std: float) -> None:
        """vjepa2's init: truncated normal linears and query, then each residual branch's last weight
        divided by sqrt(2 * layer) so that the residual stream's variance does not grow with depth."""
        nn.init.trunc_normal_(self.query_tokens, std=std)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            for layer, block in enumerate(self.blocks, 1):
                block.attn.proj.weight.div_(math.sqrt(2.0 * layer))
                block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))
            # released: the cross block takes the last self-attention block's layer number (1 without any)
            self.cross_attention_block.mlp.fc2.weight.div_(math.sqrt(2.0 * max(len(self.blocks), 1)))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        key_mask = _key_mask(valid, x)
        for block in self.blocks:
            x = block(x, key_mask)
        q = self.query_tokens.expand(x.shape[0], -1, -1)
        return self.cross_attention_block(q, x, key_mask)


class AttentiveClassifier(nn.Module):
    """An :class:`AttentivePooler` with one query and a linear head: ``forward(x, valid) -> logits [B, C]``."""

    def __init__(self, embed_dim: int, num_classes: int, num_heads: int = RELEASED_HEADS, depth: int = 4,
                 mlp_ratio: float = 4.0, eps: float = VJEPA2_NORM_EPS) -> None:
        super().__init__()
        self.pooler = AttentivePooler(embed_dim, num_heads=num_heads, depth=depth, mlp_ratio=mlp_ratio,
                                      num_queries=1, eps=eps)
        self.linear = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(self.pooler(x, valid).squeeze(1))


#: transformers' VJEPA2ForVideoClassification head names -> vjepa2's (prefix rewrites, applied in order)
_HF_RENAMES = (
    ("pooler.cross_attention_layer.cross_attn.", "pooler.cross_attention_block.xattn."),
    ("pooler.cross_attention_layer.layer_norm", "pooler.cross_attention_block.norm"),
    ("pooler.cross_attention_layer.", "pooler.cross_attention_block."),
    ("pooler.self_attention_layers.", "pooler.blocks."),
    ("classifier.", "linear."),
)
#: the same, inside a block: transformers' separate projections -> vjepa2's fused ones
_HF_BLOCK_RENAMES = ((".self_attn.out_proj.", ".attn.proj."), (".layer_norm", ".norm"))


def load_attentive(path: str | Path, embed_dim: int | None = None, num_classes: int | None = None,
                   num_heads: int | None = None, head: int = 0) -> AttentiveClassifier:
    """A released attentive probe as an :class:`AttentiveClassifier`, in eval mode.

    ``path``: a vjepa2 probe checkpoint (``torch.save`` of ``{"classifiers": [state_dict, ...]}``; ``head``
    picks one of its heads, the first by default as transformers' conversion does), a bare state dict
    in the same naming, or a transformers ``VJEPA2ForVideoClassification`` checkpoint (its directory,
    or its ``.safetensors`` / ``.bin`` file). Shapes come from the weights; ``embed_dim`` and
    ``num_classes``, when given, must match them (the features and the labels the probe is used on).
    Heads cannot be read off weights: transformers' config says them, a vjepa2 file does not
    (``num_heads`` or the released 16). Anything else is one VsslError.
    """
    path = Path(path)
    if not path.exists():
        raise VsslError(f"--attentive-from {path}: no such file or directory; give a vjepa2 probe checkpoint "
                        f"(.pt) or a transformers VJEPA2ForVideoClassification checkpoint")
    config = _hf_config(path)
    if config is not None:
        state = _hf_head_to_vjepa2(_read_hf_head(path))
        num_heads = num_heads or config.get("num_attention_heads")
        eps = float(config.get("layer_norm_eps", VJEPA2_NORM_EPS))
    else:
        state = _vjepa2_head(path, head)
        eps = VJEPA2_NORM_EPS
    model = _classifier_for(state, path, num_heads or RELEASED_HEADS, eps)
    _check_size(path, "embed_dim", "width of the features", embed_dim, model.linear.in_features)
    _check_size(path, "num_classes", "classes of the labels", num_classes, model.linear.out_features)
    return model.eval()


def released_classes(path: str | Path) -> list[str] | None:
    """The class names of a released probe, in the order of its outputs: a transformers checkpoint's
    ``id2label`` (None where it names them ``LABEL_i`` only); a vjepa2 file names none."""
    config = _hf_config(Path(path)) if Path(path).exists() else None
    labels = (config or {}).get("id2label") or {}
    names = [labels[k] for k in sorted(labels, key=int)] if labels else []
    if not names or all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        return None
    return names


def _hf_config(path: Path) -> dict | None:
    """The transformers config.json next to (or in) ``path`` when it is a V-JEPA 2 checkpoint, else None."""
    config_path = (path if path.is_dir() else path.parent) / "config.json"
    if not config_path.is_file():
        if path.is_dir():
            raise VsslError(f"--attentive-from {path}: a directory without config.json; give a transformers "
                            f"VJEPA2ForVideoClassification checkpoint directory or a vjepa2 probe file")
        return None
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise VsslError(f"--attentive-from {path}: cannot read {config_path.name} ({exc})") from None
    if path.is_file() and path.suffix not in (".safetensors", ".bin"):
        return None       # a vjepa2 .pt that happens to sit next to some config.json
    if config.get("model_type") != "vjepa2":
        raise VsslError(f"--attentive-from {path}: {config_path.name} is a {config.get('model_type')!r} model, "
                        f"not vjepa2; give a VJEPA2ForVideoClassification checkpoint")
    return config


def _is_head_key(key: str) -> bool:
    return key.startswith(("pooler.", "classifier."))


def _read_hf_head(path: Path) -> dict[str, torch.Tensor]:
    """The pooler and classifier tensors of a transformers checkpoint; the encoder's are never read.

    Looks for model.safetensors (or a sharded index of it), then pytorch_model.bin.
    """
    folder = path if path.is_dir() else path.parent
    if path.is_file():
        files = [path]
    elif (folder / "model.safetensors.index.json").is_file():
        weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
        files = [folder / f for f in sorted({f for k, f in weight_map.items() if _is_head_key(k)})]
    else:
        files = [f for f in (folder / "model.safetensors", folder / "pytorch_model.bin") if f.is_file()][:1]
    head: dict[str, torch.Tensor] = {}
    for file in files:
        head.update(_read_head_tensors(file))
    if not head:
        raise VsslError(f"--attentive-from {path}: no pooler/classifier weights found; it is not a "
                        f"VJEPA2ForVideoClassification checkpoint (a VJEPA2Model has no probe)")
    return head


def _read_head_tensors(file: Path) -> dict[str, torch.Tensor]:
    """The head keys of one weights file (safetensors: only those tensors are read)."""
    try:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys() if _is_head_key(k)}
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise VsslError(f"--attentive-from {file}: cannot read the weights ({type(exc).__name__}: {exc})") from None
    return {k: v for k, v in state.items() if _is_head_key(k)} if isinstance(state, dict) else {}


def _hf_head_to_vjepa2(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' head names -> vjepa2's; its separate q/k/v projections concatenated into vjepa2's
    fused ``qkv`` (self-attention) and ``kv`` (cross-attention) in q, k, v order (vjepa2 reshapes the
    fused output as [..., 3 or 2, heads, head_dim])."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for old, new in _HF_RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        for old, new in _HF_BLOCK_RENAMES:
            key = key.replace(old, new)
        out[key] = value
    for key in [k for k in out if ".self_attn.q_proj." in k]:
        fused = key.replace(".self_attn.q_proj.", ".attn.qkv.")
        out[fused] = torch.cat([out.pop(key.replace("q_proj", p)) for p in ("q_proj", "k_proj", "v_proj")])
    for key in [k for k in out if ".xattn.q_proj." in k]:
        out[key.replace("q_proj", "q")] = out.pop(key)
        out[key.replace("q_proj", "kv")] = torch.cat([out.pop(key.replace("q_proj", p)) for p in ("k_proj", "v_proj")])
    return out


def _vjepa2_head(path: Path, head: int) -> dict[str, torch.Tensor]:
    """One head of a vjepa2 probe checkpoint (or a bare state dict in its naming), DDP's ``module.`` removed."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise VsslError(f"--attentive-from {path}: not a vjepa2 probe checkpoint nor a transformers checkpoint "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(ckpt, dict) and "classifiers" in ckpt:
        heads = ckpt["classifiers"]
        if not isinstance(heads, (list, tuple)) or not heads:
            raise VsslError(f"--attentive-from {path}: its 'classifiers' holds no probe")
        if not -len(heads) <= head < len(heads):
            raise VsslError(f"--attentive-from {path}: head {head} asked for, the file holds {len(heads)} "
                            f"(0..{len(heads) - 1})")
        ckpt = heads[head]
    if not isinstance(ckpt, dict):
        raise VsslError(f"--attentive-from {path}: not a vjepa2 probe checkpoint (expected a dict with "
                        f"'classifiers', found {type(ckpt).__name__})")
    return {k.removeprefix("module."): v for k, v in ckpt.items()}


def _classifier_for(state: Mapping[str, torch.Tensor], path: Path, num_heads: int, eps: float) -> AttentiveClassifier:
    """An AttentiveClassifier shaped by ``state``'s tensors with ``state`` loaded (strict: every key)."""
    try:
        embed_dim = state["pooler.query_tokens"].shape[-1]
        num_classes = state["linear.weight"].shape[0]
        mlp_ratio = state["pooler.cross_attention_block.mlp.fc1.weight"].shape[0] / embed_dim
    except KeyError as exc:
        raise VsslError(f"--attentive-from {path}: no {exc.args[0]} in it: not an attentive probe "
                        f"(vjepa2 AttentiveClassifier or VJEPA2ForVideoClassification)") from None
    depth = 1 + len({k.split(".")[2] for k in state if k.startswith("pooler.blocks.")})
    if embed_dim % num_heads:
        raise VsslError(f"--attentive-from {path}: {num_heads} heads do not divide the probe's width {embed_dim}; "
                        f"give the heads it was trained with")
    model = AttentiveClassifier(embed_dim, num_classes, num_heads=num_heads, depth=depth, mlp_ratio=mlp_ratio,
                                eps=eps)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise VsslError(f"--attentive-from {path}: its weights do not form an attentive probe "
                        f"({str(exc).splitlines()[0]}; {len(state)} tensors)") from None
    return model


def _check_size(path: Path, name: str, what: str, asked: int | None, found: int) -> None:
    if asked is not None and asked != found:
        raise VsslError(f"--attentive-from {path}: the probe's {name} is {found}, the {what} {asked}; "
                        f"use the probe with the features and labels it was trained on")
