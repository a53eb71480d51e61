"""The SCALE predictor (SCALE §3): a small set transformer over frozen clip embeddings.

Each clip embedding c (dim D) is projected to the width H, its box embedding P(box) is
added (eq. 5), masked clips have their projection replaced by a learnable MSK token (their
box embedding is still added), a learnable CLS token is prepended, and a pre-norm
encoder-only transformer with a final LayerNorm gives Ĉ (one vector per clip) and the CLS
output. Three MLP heads without batch norm (eq. 1) map to the contrastive spaces:
prediction head on Ĉ, target head on the original c, SET head on CLS.

Training computes only what the losses use: the input projection of masked clips is never
formed, the prediction head runs on masked clips only, and the MCM logits are
(masked clips) x (all clips) instead of the released code's (all clips)^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vssl.aggregate.config import ScaleConfig
from vssl.aggregate.dropout import Dropout
from vssl.aggregate.terms import TERMS, Encoded, make_head, pretraining_parts
from vssl.distributed.negatives import Gather

BOX_DIM = 7  # (t0, y0, x0, t1, y1, x1, flip) as stored in the feature store


def _compute_dtype(weight: Tensor, device: torch.device) -> torch.dtype:
    """The dtype a linear layer computes in: the autocast dtype when autocast is on, else the weights'."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight.dtype


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (fused kernels where available)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.proj_drop = Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """``attn_mask`` (bool ``[B, 1, 1, N]``, True = a real token): key padding; every query
        attends to the real tokens only, so padding never reaches a real token's output."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, c)))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)) (GELU, dropout)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), Dropout(dropout),
                                 nn.Linear(hidden, width), Dropout(dropout))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), attn_mask)
        return x + self.mlp(self.norm2(x))


__all__ = ["ScaleModel", "Attention", "Block", "make_head", "BOX_DIM"]


class ScaleModel(nn.Module):
    """SCALE predictor and its loss terms' heads; ``in_dim`` is D of the store's view.

    Each loss term that is on (:mod:`vssl.aggregate.terms`) adds its tokens (before the blocks) and
    heads (after the final LayerNorm) under its own attribute names, so the parameters are created,
    and initialised from the seed, in the same order as when the model named them itself; a term
    that is off leaves its names None (an ablation has no dead parameters).
    """

    def __init__(self, cfg: ScaleConfig, in_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        width = cfg.width
        self.input_proj = nn.Linear(in_dim, width)
        # eq. 5: P = MLP(box); as released: 7 -> 2H -> H with ReLU (the flip flag is one of the 7)
        self.box_mlp = nn.Sequential(nn.Linear(BOX_DIM, 2 * width), nn.ReLU(), nn.Linear(2 * width, width))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        for name in pretraining_parts():
            setattr(self, name, None)
        self.terms = cfg.terms
        for term in self.terms:
            for name, token in term.tokens(cfg, width).items():
                setattr(self, name, token)
        self.blocks = nn.ModuleList(Block(width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(width)
        for term in self.terms:
            for name, head in term.heads(cfg, in_dim).items():
                setattr(self, name, head)

    def drop_pretraining(self) -> None:
        """Remove every loss term's tokens and heads: what serves pre-training only (a probe drops
        them, so models built from a run and from scratch have the same parameters)."""
        for name in pretraining_parts():
            if getattr(self, name, None) is not None:
                setattr(self, name, None)

    # ------------------------------------------------------------------ encoder

    def _transform(self, tokens: Tensor, boxes: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Add box embeddings, prepend CLS, run the blocks and the final LayerNorm.

        The residual stream stays in the parameters' dtype (fp32) under autocast; only the
        linear layers run in bf16/fp16, as in the released code. ``valid`` (bool ``[B, S]``, True =
        a real clip; None = all real) is the key padding of a variable-length set: attention
        reads the CLS token and the real clips only.
        """
        dtype = self.cls_token.dtype
        h = (tokens + self.box_mlp(boxes.to(dtype))).to(dtype)
        h = torch.cat((self.cls_token.expand(h.shape[0], -1, -1), h), dim=1)
        attn_mask = None
        if valid is not None:
            keys = torch.cat((valid.new_ones(valid.shape[0], 1), valid.to(h.device)), dim=1)
            attn_mask = keys[:, None, None, :]                    # [B, 1, 1, 1 + S]: broadcast over heads, queries
        for block in self.blocks:
            h = block(h, attn_mask)
        h = self.norm(h)
        return h[:, 1:], h[:, 0]

    def encode(self, features: Tensor, boxes: Tensor, mask: Tensor | None = None,
               valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Ĉ per clip ``[B, S, H]`` and the CLS output ``[B, H]`` (both after the final LayerNorm).

        ``mask`` (bool ``[B, S]`` or ``[S]``, True = masked) replaces those clips' projected
        embeddings by the MSK token; ``None`` masks nothing (evaluation / export).
        ``valid`` (bool ``[B, S]``, True = a real clip): a padded batch of sets of different sizes;
        padding takes no part in attention, so the CLS output and the real clips' Ĉ do not depend
        on it (padded rows of Ĉ are meaningless). ``None``: every clip is real.
        """
        proj = self.input_proj(features.to(_compute_dtype(self.input_proj.weight, features.device)))
        if mask is not None and bool(mask.any()):
            if self.msk_token is None:
                raise ValueError("this model was trained without MCM and has no MSK token; pass mask=None")
            proj = torch.where(mask.to(proj.device).expand(proj.shape[:2]).unsqueeze(-1),
                               self.msk_token.to(proj.dtype), proj)
        return self._transform(proj, boxes, valid)

    # ------------------------------------------------------------------ pre-training objective

    def pretrain_losses(self, features: Tensor, boxes: Tensor, sets: Tensor, num_masked: int | Tensor, *,
                        gather: Gather | None = None) -> dict[str, Tensor]:
        """Eq. 8 for B videos of a fixed view given as all their clips and the sets drawn from them.

        ``features [B, K, D]`` and ``boxes [B, K, 7]`` are the stored clips of B videos; ``sets
        [B, 2, S]`` the clip indices of the two disjoint sets (:func:`~vssl.aggregate.sampling.sample_sets`);
        ``num_masked`` as in :meth:`set_losses`. The sets' clips are gathered, then :meth:`set_losses`.
        """
        b, _, d = features.shape
        s = sets.shape[-1]
        idx = sets.reshape(b, 2 * s)
        clips = features.gather(1, idx.unsqueeze(-1).expand(-1, -1, d)).view(b, 2, s, d)   # C, both sets
        box = boxes.gather(1, idx.unsqueeze(-1).expand(-1, -1, boxes.shape[-1])).view(b, 2, s, -1)
        return self.set_losses(clips, box, None, num_masked, gather=gather)

    def set_losses(self, clips: Tensor, boxes: Tensor, valid: Tensor | None, masked: int | Tensor, *,
                   gather: Gather | None = None) -> dict[str, Tensor]:
        """L = sum of w_term L_term (eq. 8, MCM and SET of weight 1 by default) for one minibatch of sets.

        ``clips [B, 2, S, D]`` and ``boxes [B, 2, S, 7]`` are the two sets of B videos, already
        gathered. ``valid [B, 2, S]`` marks the real clips of sets of different sizes (a ragged view:
        each set starts with its real clips, padded to S); ``None``: every clip is real (a fixed view,
        every set holds S clips). Padding takes no part in attention (key padding), is never a query
        of L_MCM, and its targets are left out of every query's candidates, so no loss, gradient or
        real output depends on its values. ``masked``: a bool tensor ``[B, 2, S]`` hides exactly its
        True positions (real clips only; :mod:`vssl.aggregate.masking`); an int (every set full, the
        ``fixed`` mode) hides the first that many positions of every set, and only the visible clips
        are then projected. Returns 0-dim tensors: ``loss`` and each term's ``<name>_loss``
        (unweighted) and ``<name>_top1`` (:mod:`vssl.aggregate.terms`; a term that is off is 0 and
        not computed). ``gather`` collects the keys of every rank under DDP
        (:mod:`vssl.distributed.negatives`); ``None``: the negatives are this minibatch's alone.
        """
        b, _, s, d = clips.shape
        flat_clips = clips.reshape(2 * b, s, d).to(_compute_dtype(self.input_proj.weight, clips.device))
        flat_boxes = boxes.reshape(2 * b, s, -1)
        if not isinstance(masked, Tensor) and valid is not None:   # a count, on sets that may be short
            masked = (torch.arange(s, device=clips.device) < masked).expand(b, 2, s)
        if isinstance(masked, Tensor):
            flat_valid = None if valid is None else valid.reshape(2 * b, s)
            flat_mask = (masked if valid is None else masked & valid).reshape(2 * b, s)  # only real clips are masked
            c_hat, cls = self.encode(flat_clips, flat_boxes, flat_mask if self.cfg.masking else None, flat_valid)
            queries = flat_mask.reshape(-1).nonzero().squeeze(1)
        else:
            c_hat, cls, queries = self._masked_first(flat_clips, flat_boxes, masked if self.cfg.masking else 0)
        return self._objective(flat_clips.reshape(2 * b * s, d), c_hat, cls, queries, b, gather,
                               key_valid=None if valid is None else valid.reshape(-1))

    def _objective(self, clips: Tensor, c_hat: Tensor, cls: Tensor, queries: Tensor, b: int,
                   gather: Gather | None, key_valid: Tensor | None = None) -> dict[str, Tensor]:
        """The weighted sum of the terms that are on, from the encoder's outputs (eq. 8); a term
        that is off reports 0."""
        zero = clips.new_zeros((), dtype=torch.float32)
        out = {key: zero for term in TERMS for key in term.metric_keys}
        encoded = Encoded(clips, c_hat, cls, queries, b, gather, key_valid)
        loss = zero
        for term in self.terms:
            value_key, top1_key = term.metric_keys
            out[value_key], out[top1_key] = term.loss(self, encoded)
            loss = loss + term.weight(self.cfg) * out[value_key]
        out["loss"] = loss
        return out

    def _masked_first(self, clips: Tensor, box: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor]:
        """Encode sets whose first ``m`` positions are masked; the masked rows' flat indices.

        Masked clips' projections would be thrown away, so only the visible ones are projected.
        """
        n, s, _ = clips.shape
        visible = self.input_proj(clips[:, m:])
        tokens = torch.cat((self.msk_token.expand(n, m, -1).to(visible.dtype), visible), dim=1) if m else visible
        c_hat, cls = self._transform(tokens, box)
        own = (torch.arange(n, device=clips.device).unsqueeze(1) * s
               + torch.arange(m, device=clips.device).unsqueeze(0)).reshape(-1)
        return c_hat, cls, own
