"""L_SET, set contrast (SCALE §3.2, eq. 7): the CLS output of a video's first set must pick the CLS
output of its second set among the minibatch's videos, and back (symmetric InfoNCE, eq. 3). Head as
released: 2 layers of 4096, projection dim 128, no bias, no batch norm (eq. 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from vssl.aggregate.losses import symmetric_info_nce
from vssl.aggregate.terms.base import Encoded, LossTerm, check_temperature, make_head
from vssl.settings import setting


@dataclass
class SETSettings:
    """Settings of L_SET (tau 0.2 and weight 1, eq. 8)."""

    set_temperature: float = setting(0.2, "SET InfoNCE temperature")
    set_weight: float = setting(1.0, "weight of L_SET in the total loss (0: off, as --no-set)")


class SetContrast(LossTerm):
    name = "set"
    title = "SET"
    Settings = SETSettings
    parts = ("set_head",)

    def validate(self, cfg: Any) -> None:
        super().validate(cfg)
        check_temperature(cfg, "set_temperature")

    def heads(self, cfg: Any, in_dim: int) -> dict[str, nn.Module]:
        return {"set_head": make_head(cfg.width, cfg.proj_dim, cfg.pred_hidden, cfg.pred_layers)}

    def loss(self, model: Any, enc: Encoded) -> tuple[Tensor, Tensor]:
        z = model.set_head(enc.cls).view(enc.videos, 2, -1)
        return symmetric_info_nce(z[:, 0], z[:, 1], model.cfg.set_temperature, gather=enc.gather)
