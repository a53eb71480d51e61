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
from vssl.aggregate.losses import info_nce, symmetric_info_nce
from vssl.distributed.negatives import Gather

BOX_DIM = 7  # (t0, y0, x0, t1, y1, x1, flip) as stored in the feature store


def _compute_dtype(weight: Tensor, device: torch.device) -> torch.dtype:
    """The dtype a linear layer computes in: the autocast dtype when autocast is on, else the weights'."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight.dtype


def make_head(in_dim: int, out_dim: int, hidden: int, layers: int) -> nn.Sequential:
    """MLP head of eq. 1 as released: bias-free linears with GELU between, no batch norm."""
    dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Linear(dims[i], dims[i + 1], bias=False))
        if i < layers - 1:
            mods.append(nn.GELU())
    return nn.Sequential(*mods)


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


class ScaleModel(nn.Module):
    """SCALE predictor and its contrastive heads; ``in_dim`` is D of the store's view."""

    def __init__(self, cfg: ScaleConfig, in_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        width = cfg.width
        self.input_proj = nn.Linear(in_dim, width)
        # eq. 5: P = MLP(box); as released: 7 -> 2H -> H with ReLU (the flip flag is one of the 7)
        self.box_mlp = nn.Sequential(nn.Linear(BOX_DIM, 2 * width), nn.ReLU(), nn.Linear(2 * width, width))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        # Without MCM (flag off or weight 0) nothing is ever masked, so there is no MSK token to train.
        self.msk_token = nn.Parameter(torch.zeros(1, 1, width)) if cfg.mcm_on else None
        self.blocks = nn.ModuleList(Block(width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(width)
        # Heads exist only for the losses that are on, so an ablation has no dead parameters.
        self.pred_head = make_head(width, cfg.proj_dim, cfg.pred_hidden, cfg.pred_layers) if cfg.mcm_on else None
        self.target_head = (make_head(in_dim, cfg.proj_dim, cfg.target_hidden, cfg.target_layers)
                            if cfg.mcm_on else None)
        self.set_head = make_head(width, cfg.proj_dim, cfg.pred_hidden, cfg.pred_layers) if cfg.set_on else None

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
        """L = w_MCM L_MCM + w_SET L_SET (eq. 8, both weights 1 by default) for one minibatch.

        ``features [B, K, D]`` and ``boxes [B, K, 7]`` are the stored clips of B videos; ``sets
        [B, 2, S]`` the clip indices of the two disjoint sets (:func:`~vssl.aggregate.sampling.sample_sets`).
        ``num_masked``: an int masks the first that many positions of every set (``fixed`` mode);
        a bool tensor ``[B, 2, S]`` masks exactly its True positions (:func:`~vssl.aggregate.masking.draw_masks`).
        Returns 0-dim tensors: ``loss``, ``mcm_loss``, ``set_loss`` (unweighted), ``mcm_top1``,
        ``set_top1`` (a loss that is off is 0 and not computed).
        ``gather`` collects the keys of every rank under DDP (:mod:`vssl.distributed.negatives`);
        ``None``: the negatives are this minibatch's alone.
        """
        cfg = self.cfg
        b, _, d = features.shape
        s = sets.shape[-1]
        idx = sets.reshape(b, 2 * s)
        clips = features.gather(1, idx.unsqueeze(-1).expand(-1, -1, d)).view(2 * b, s, d)   # C, both sets
        box = boxes.gather(1, idx.unsqueeze(-1).expand(-1, -1, boxes.shape[-1])).view(2 * b, s, -1)
        clips = clips.to(_compute_dtype(self.input_proj.weight, clips.device))  # one cast of the float16 batch
        if isinstance(num_masked, Tensor):
            c_hat, cls, queries = self._masked_by_tensor(clips, box, num_masked.reshape(2 * b, s))
        else:
            c_hat, cls, queries = self._masked_first(clips, box, num_masked if cfg.mcm_on else 0)

        return self._objective(clips.reshape(2 * b * s, d), c_hat, cls, queries, b, gather)

    def set_losses(self, clips: Tensor, boxes: Tensor, valid: Tensor, masked: Tensor, *,
                   gather: Gather | None = None) -> dict[str, Tensor]:
        """Eq. 8 on sets of different sizes (a ragged view: each video's sets drawn from its own clips).

        ``clips [B, 2, S, D]`` and ``boxes [B, 2, S, 7]`` are the two sets of B videos, already
        gathered and padded to S; ``valid [B, 2, S]`` marks the real clips (each set starts with its
        real clips); ``masked [B, 2, S]`` the clips MCM hides (real ones only). Padding takes no part
        in attention (key padding), is never a query of L_MCM, and its targets are left out of every
        query's candidates, so no loss, gradient or real output depends on its values. Returns what
        :meth:`pretrain_losses` returns; with every clip real and the same masks, the same losses.
        """
        b, _, s, d = clips.shape
        masked = masked & valid                      # only real clips are ever masked (and predicted)
        flat_clips = clips.reshape(2 * b, s, d).to(_compute_dtype(self.input_proj.weight, clips.device))
        flat_valid = valid.reshape(2 * b, s)
        flat_mask = masked.reshape(2 * b, s)
        c_hat, cls = self.encode(flat_clips, boxes.reshape(2 * b, s, -1),
                                 flat_mask if self.cfg.mcm_on else None, flat_valid)
        queries = flat_mask.reshape(-1).nonzero().squeeze(1)
        return self._objective(flat_clips.reshape(2 * b * s, d), c_hat, cls, queries, b, gather,
                               key_valid=flat_valid.reshape(-1))

    def _objective(self, clips: Tensor, c_hat: Tensor, cls: Tensor, queries: Tensor, b: int,
                   gather: Gather | None, key_valid: Tensor | None = None) -> dict[str, Tensor]:
        """The weighted sum of the losses that are on, from the encoder's outputs (eq. 6–8)."""
        cfg = self.cfg
        zero = clips.new_zeros((), dtype=torch.float32)
        out = {"mcm_loss": zero, "set_loss": zero, "mcm_top1": zero, "set_top1": zero}
        loss = zero
        if cfg.mcm_on:
            out["mcm_loss"], out["mcm_top1"] = self._mcm(clips, c_hat, queries, gather, key_valid)
            loss = loss + cfg.mcm_weight * out["mcm_loss"]
        if cfg.set_on:
            # eq. 7: CLS of set one vs CLS of set two across the videos of the minibatch (eq. 3, symmetric).
            z = self.set_head(cls).view(b, 2, -1)
            out["set_loss"], out["set_top1"] = symmetric_info_nce(z[:, 0], z[:, 1], cfg.set_temperature,
                                                                   gather=gather)
            loss = loss + cfg.set_weight * out["set_loss"]
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

    def _masked_by_tensor(self, clips: Tensor, box: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode sets with a per-clip ``mask [2B, S]`` (any count per set, 0 to S, as released)."""
        c_hat, cls = self.encode(clips, box, mask if self.cfg.mcm_on else None)
        return c_hat, cls, mask.reshape(-1).nonzero().squeeze(1)

    def _mcm(self, clips: Tensor, c_hat: Tensor, own: Tensor, gather: Gather | None,
             key_valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Eq. 6: each masked Ĉ (flat row ``own``) must pick its own original clip among all 2·B·S
        clips of the minibatch; the other clips of its video (both sets) are the hard negatives.

        Only masked rows are queries, so unmasked rows never count; ``key_valid`` (bool per row)
        leaves padding rows out of the candidates (a ragged batch). With no masked row (a coin
        can give that) the loss is 0 and still connected to the heads and the key gather, so every
        rank runs the same collectives and DDP sees every parameter used.
        """
        targets = self.target_head(clips)
        preds = self.pred_head(c_hat.reshape(-1, c_hat.shape[-1])[own])
        loss, top1 = info_nce(preds, targets, self.cfg.mcm_temperature, own, gather=gather, key_valid=key_valid)
        if own.numel() == 0:
            loss = torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss))
            top1 = torch.zeros_like(top1)
        if key_valid is not None and gather is not None:
            # Ragged sets: ranks hold different numbers of queries, so each rank's mean is weighted
            # by its share of them; the ranks' mean is then the mean over the global batch's queries.
            per_rank = gather(loss.new_tensor([float(own.numel())]))[0]
            weight = own.numel() * per_rank.numel() / per_rank.sum().clamp(min=1.0)
            loss, top1 = loss * weight, top1 * weight
        return loss, top1
