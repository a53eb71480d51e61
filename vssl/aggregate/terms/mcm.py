"""L_MCM, masked clip modelling (SCALE §3.1, eq. 6): each masked clip's refined output Ĉ must pick
its own stored clip among every clip of the minibatch (the other clips of its video, both sets,
are the hard negatives). Heads as released: a prediction head on Ĉ (2 layers of 4096) and a target
head on the stored clip (3 layers of 2048), projection dim 128, no bias, no batch norm (eq. 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vssl.aggregate.losses import info_nce
from vssl.aggregate.terms.base import Encoded, LossTerm, check_temperature, make_head
from vssl.settings import setting


@dataclass
class MCMSettings:
    """Settings of L_MCM (tau 0.2 and weight 1, eq. 8)."""

    mcm_temperature: float = setting(0.2, "MCM InfoNCE temperature")
    mcm_weight: float = setting(1.0, "weight of L_MCM in the total loss (0: off, as --no-mcm)")


class MaskedClipModelling(LossTerm):
    name = "mcm"
    title = "MCM"
    Settings = MCMSettings
    masks = True
    parts = ("msk_token", "pred_head", "target_head")

    def validate(self, cfg: Any) -> None:
        super().validate(cfg)
        check_temperature(cfg, "mcm_temperature")
        if self.is_on(cfg) and cfg.mask_ratio == 0.0:
            cfg.bad("mask_ratio", "masks no clip, so MCM has nothing to predict; pass --no-mcm (or a ratio > 0)")

    def tokens(self, cfg: Any, width: int) -> dict[str, nn.Parameter]:
        return {"msk_token": nn.Parameter(torch.zeros(1, 1, width))}

    def heads(self, cfg: Any, in_dim: int) -> dict[str, nn.Module]:
        return {"pred_head": make_head(cfg.width, cfg.proj_dim, cfg.pred_hidden, cfg.pred_layers),
                "target_head": make_head(in_dim, cfg.proj_dim, cfg.target_hidden, cfg.target_layers)}

    def loss(self, model: Any, enc: Encoded) -> tuple[Tensor, Tensor]:
        """Eq. 6 with the masked rows as queries and every clip as a key.

        Only masked rows are queries, so unmasked rows never count; ``key_valid`` leaves padding rows
        out of the candidates (a ragged batch). With no masked row (a coin can give that) the loss is
        0 and still connected to the heads and the key gather, so every rank runs the same
        collectives and DDP sees every parameter used.
        """
        own, gather, key_valid = enc.masked, enc.gather, enc.key_valid
        targets = model.target_head(enc.clips)
        preds = model.pred_head(enc.c_hat.reshape(-1, enc.c_hat.shape[-1])[own])
        loss, top1 = info_nce(preds, targets, model.cfg.mcm_temperature, own, gather=gather, key_valid=key_valid)
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
