"""What a stage-two loss term is: its settings, the parameters it adds to the model, its loss.

SCALE's objective is a weighted sum of terms (eq. 8: L = w_MCM L_MCM + w_SET L_SET). Each term is
one module here declaring everything the rest of stage two needs from it, so a new term is that
module plus one line in :data:`vssl.aggregate.terms.TERMS`:

- ``Settings``: a dataclass of its settings (declared with :func:`vssl.settings.setting`), which
  :class:`~vssl.aggregate.config.ScaleConfig` inherits, so they are config keys, TOML keys and
  flags, stored in every checkpoint. One of them is ``<name>_weight``: the term's weight in the
  total loss, and its one off-switch (0: the term is not computed and has no parameters).
- ``tokens``/``heads``: the parameters it adds to :class:`~vssl.aggregate.model.ScaleModel`,
  under fixed attribute names (the checkpoint's keys), built only when the term is on;
- ``loss``: its value and top-1 accuracy from the encoder's outputs (:class:`Encoded`);
- ``name``/``title``: its metric keys (``<name>_loss``, ``<name>_top1``), progress label and the
  name in the run summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from vssl.distributed.negatives import Gather

if TYPE_CHECKING:  # the model reads the terms; a term only reads the model's parts
    from vssl.aggregate.model import ScaleModel


def make_head(in_dim: int, out_dim: int, hidden: int, layers: int) -> nn.Sequential:
    """MLP head of eq. 1 as released: bias-free linears with GELU between, no batch norm."""
    dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Linear(dims[i], dims[i + 1], bias=False))
        if i < layers - 1:
            mods.append(nn.GELU())
    return nn.Sequential(*mods)


@dataclass(frozen=True)
class Encoded:
    """One minibatch of ``2 x videos`` sets (two per video) after the encoder, as every term reads it.

    ``clips [2·B·S, D]``: the sets' stored clips, flat, set by set; ``c_hat [2B, S, H]``: the refined
    clips Ĉ; ``cls [2B, H]``: the CLS outputs (set one and set two of each video in turn);
    ``masked``: flat indices (into ``clips``) of the clips hidden behind the MSK token;
    ``key_valid`` (bool per flat clip, None: all real): padding of sets of different sizes, never a
    candidate of any loss; ``gather``: collects every rank's keys under DDP (None: one process).
    """

    clips: Tensor
    c_hat: Tensor
    cls: Tensor
    masked: Tensor
    videos: int
    gather: Gather | None = None
    key_valid: Tensor | None = None


class LossTerm:
    """One term of the stage-two objective (see the module docstring)."""

    #: metric keys ``<name>_loss``/``<name>_top1``, the progress label, the weight key ``<name>_weight``
    name: ClassVar[str]
    #: how the run summary names it (``MCM``)
    title: ClassVar[str]
    #: dataclass of its settings, inherited by ScaleConfig
    Settings: ClassVar[type]
    #: whether the term needs some clips masked (the model then has an MSK token)
    masks: ClassVar[bool] = False
    #: attribute names of the parameters it adds (``tokens`` first, then ``heads``): None on a model
    #: where the term is off, and what a probe drops from a trained model (pre-training only)
    parts: ClassVar[tuple[str, ...]] = ()

    @property
    def weight_key(self) -> str:
        return f"{self.name}_weight"

    @property
    def metric_keys(self) -> tuple[str, str]:
        return f"{self.name}_loss", f"{self.name}_top1"

    def weight(self, cfg: Any) -> float:
        return float(getattr(cfg, self.weight_key))

    def is_on(self, cfg: Any) -> bool:
        """Whether the term is part of the objective: its weight is not 0."""
        return self.weight(cfg) > 0

    def validate(self, cfg: Any) -> None:
        """Reject settings of this term that cannot train (``cfg.bad`` names the key)."""
        if not (self.weight(cfg) >= 0 and math.isfinite(self.weight(cfg))):
            cfg.bad(self.weight_key, "must be a number >= 0 (0: that loss is off)")

    def tokens(self, cfg: Any, width: int) -> dict[str, nn.Parameter]:
        """Learnable tokens of the encoder's input, created before the transformer blocks."""
        return {}

    def heads(self, cfg: Any, in_dim: int) -> dict[str, nn.Module]:
        """Heads over the encoder's outputs, created after the final LayerNorm."""
        return {}

    def loss(self, model: "ScaleModel", enc: Encoded) -> tuple[Tensor, Tensor]:
        """(unweighted loss, top-1 accuracy) as 0-dim tensors on the device."""
        raise NotImplementedError


def check_temperature(cfg: Any, key: str) -> None:
    """An InfoNCE temperature must be a positive finite number."""
    value = getattr(cfg, key)
    if not (value > 0 and math.isfinite(value)):
        cfg.bad(key, "must be a positive number")
