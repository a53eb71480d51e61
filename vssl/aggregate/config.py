"""Every setting of stage two in one dataclass, so a run is described by one dict.

Defaults follow SCALE (Sameni et al., ICCV 2023, §3 and Tables 8–11) and, where the paper is
silent, the released implementation (Separius/SCALE, ``src/train.py`` / ``src/scale.py``).
The config is stored in every checkpoint so a run can be resumed, inspected or exported
without the original command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vssl.device import PRECISION_CHOICES
from vssl.errors import VsslError
from vssl.settings import Settings, setting


@dataclass
class ScaleConfig(Settings):
    """Model, loss, sampling and optimisation settings of the SCALE predictor."""

    SECTION = "aggregate"

    # -- model (official defaults: hidden 256, 2 layers, heads = width // 32, MLP ratio 2, dropout 0.1)
    width: int = setting(256, "transformer width")
    layers: int = setting(2, "transformer layers")
    heads: int | None = setting(None, "attention heads (default: width / 32, as released)")
    mlp_ratio: float = setting(2.0, "transformer MLP ratio")
    dropout: float = setting(0.1, "dropout")
    # -- contrastive heads (eq. 1; no batch norm). Prediction/SET heads: 2 layers of 4096,
    #    target head: 3 layers of 2048, GELU, no bias, projection dim 128.
    proj_dim: int = setting(128, "contrastive projection dim")
    pred_hidden: int = setting(4096, "hidden width of prediction/SET heads")
    pred_layers: int = setting(2, "layers of prediction/SET heads")
    target_hidden: int = setting(2048, "hidden width of the target head")
    target_layers: int = setting(3, "layers of the target head")
    # -- losses (eq. 2–8): tau 0.2 for both, L = L_MCM + L_SET
    mcm_temperature: float = setting(0.2, "MCM InfoNCE temperature")
    set_temperature: float = setting(0.2, "SET InfoNCE temperature")
    use_mcm: bool = setting(True, "masked clip modelling loss", flag="--mcm/--no-mcm")
    use_set: bool = setting(True, "set contrastive loss", flag="--set/--no-set")
    # -- set sampling (§3.2): two disjoint sets per video; None = half of the stored clips
    set_size: int | None = setting(None, "clips per set (default: half of K)")
    mask_ratio: float = setting(0.25, "fraction of each set's clips replaced by the MSK token")
    # -- optimisation: AdamW 3e-4, wd 1e-4 (none on biases/norms/tokens), 5% warmup, per-step cosine
    epochs: int = setting(500, "training epochs")
    batch_size: int = setting(512, "videos per step")
    lr: float = setting(3e-4, "peak learning rate")
    weight_decay: float = setting(1e-4, "AdamW weight decay (not on biases, norms, tokens)")
    warmup: float = setting(0.05, "fraction of steps of linear warmup")
    # -- run
    seed: int = setting(42, "seed of initialisation and set sampling")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N")
    precision: str = setting("auto", "auto, bf16, fp16, fp32")
    checkpoint_every: int = setting(10, "epochs between checkpoints")
    # 0 = decide from free RAM / GPU memory; otherwise the most bytes the view may take in memory
    max_memory_bytes: int = setting(0, "most bytes the view may take in memory (0: auto)")

    def derive(self) -> None:
        # heads = width / 32 as in the released model (``scale.py``), unless set; to_dict()
        # keeps it unset so that a copy with another width derives its own.
        self._heads_derived = self.heads is None
        if self.heads is None:
            self.heads = max(1, self.width // 32)

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self._heads_derived:
            d["heads"] = None
        return d

    # ------------------------------------------------------------------ checks

    def validate(self) -> None:
        """Reject settings that cannot train, naming the key and what it should be."""
        bad = self.bad
        for key in ("width", "layers", "proj_dim", "pred_hidden", "pred_layers", "target_hidden",
                    "target_layers", "epochs", "batch_size", "checkpoint_every"):
            if getattr(self, key) < 1:
                bad(key, "must be a positive integer")
        if self.heads < 1:
            bad("heads", "must be a positive integer")
        if self.max_memory_bytes < 0:
            bad("max_memory_bytes", "must be >= 0 (0: decide from free memory)")
        if self.width % self.heads:
            bad("heads", f"must divide the width {self.width} (default: width / 32)")
        if not 0.0 <= self.dropout < 1.0:
            bad("dropout", "must be in [0, 1)")
        if not 0.0 <= self.mask_ratio < 1.0:
            bad("mask_ratio", "must be in [0, 1)")
        if self.set_size is not None and self.set_size < 2:
            bad("set_size", "must be at least 2 (one masked clip and one visible clip)")
        for key in ("mcm_temperature", "set_temperature", "lr"):
            if not (getattr(self, key) > 0 and math.isfinite(getattr(self, key))):
                bad(key, "must be a positive number")
        if self.weight_decay < 0 or not 0.0 <= self.warmup < 1.0:
            bad("warmup" if self.weight_decay >= 0 else "weight_decay", "is out of range")
        if not (self.use_mcm or self.use_set):
            bad("use_set", "and use_mcm are both off: nothing to train")
        if self.precision not in PRECISION_CHOICES:
            bad("precision", f"must be one of {', '.join(PRECISION_CHOICES)}")

    # ------------------------------------------------------------------ derived values

    def resolve_set_size(self, num_clips: int) -> int:
        """Clips per set for a view of ``num_clips`` clips: the setting, or half of them."""
        size = self.set_size if self.set_size is not None else num_clips // 2
        if size < 2 or 2 * size > num_clips:
            raise VsslError(f"set_size {size} needs 2 x {size} clips per video but the view has {num_clips}; "
                            f"pass --set-size between 2 and {num_clips // 2}")
        return size

    def num_masked(self, set_size: int) -> int:
        """Masked clips per set: round(mask_ratio x set_size), at least one, at most set_size - 1."""
        if not self.use_mcm:
            return 0
        return min(max(1, int(round(self.mask_ratio * set_size))), set_size - 1)
