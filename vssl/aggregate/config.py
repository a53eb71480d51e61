"""Every setting of stage two in one dataclass, so a run is described by one dict.

Defaults follow SCALE (Sameni et al., ICCV 2023, §3 and Tables 8–11) and, where the paper is
silent, the released implementation (Separius/SCALE, ``src/train.py`` / ``src/scale.py``).
The config is stored in every checkpoint so a run can be resumed, inspected or exported
without the original command line.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from vssl.errors import VsslError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport
    import tomli as tomllib

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class ScaleConfig:
    """Model, loss, sampling and optimisation settings of the SCALE predictor."""

    # -- model (official defaults: hidden 256, 2 layers, heads = width // 32, MLP ratio 2, dropout 0.1)
    width: int = 256
    layers: int = 2
    heads: int = 8
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    # -- contrastive heads (eq. 1; no batch norm). Prediction/SET heads: 2 layers of 4096,
    #    target head: 3 layers of 2048, GELU, no bias, projection dim 128.
    proj_dim: int = 128
    pred_hidden: int = 4096
    pred_layers: int = 2
    target_hidden: int = 2048
    target_layers: int = 3
    # -- losses (eq. 2–8): tau 0.2 for both, L = L_MCM + L_SET
    mcm_temperature: float = 0.2
    set_temperature: float = 0.2
    use_mcm: bool = True
    use_set: bool = True
    # -- set sampling (§3.2): two disjoint sets per video; None = half of the stored clips
    set_size: int | None = None
    mask_ratio: float = 0.25
    # -- optimisation: AdamW 3e-4, wd 1e-4 (none on biases/norms/tokens), 5% warmup, per-step cosine
    epochs: int = 500
    batch_size: int = 512
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup: float = 0.05
    # -- run
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"
    checkpoint_every: int = 10
    # 0 = decide from free RAM / GPU memory; otherwise the most bytes the view may take in memory
    max_memory_bytes: int = 0

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks

    def validate(self) -> None:
        """Reject settings that cannot train, naming the key and what it should be."""
        def bad(key: str, why: str) -> None:
            raise VsslError(f"aggregate config: {key}={getattr(self, key)!r} {why}")

        for f in fields(self):  # types first: a TOML typo must not surface as a traceback later
            value, kind = getattr(self, f.name), f.type
            if "int" in kind and "float" not in kind and value is not None and (
                    isinstance(value, bool) or not isinstance(value, int)):
                bad(f.name, "must be an integer")
            if "float" in kind and (isinstance(value, bool) or not isinstance(value, (int, float))):
                bad(f.name, "must be a number")
            if kind == "bool" and not isinstance(value, bool):
                bad(f.name, "must be true or false")
            if kind == "str" and not isinstance(value, str):
                bad(f.name, "must be a string")
        for key in ("width", "layers", "heads", "proj_dim", "pred_hidden", "pred_layers", "target_hidden",
                    "target_layers", "epochs", "batch_size", "checkpoint_every"):
            if getattr(self, key) < 1:
                bad(key, "must be a positive integer")
        if self.max_memory_bytes < 0:
            bad("max_memory_bytes", "must be >= 0 (0: decide from free memory)")
        if self.width % self.heads:
            bad("heads", f"must divide the width {self.width}")
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
        if self.precision not in PRECISIONS:
            bad("precision", f"must be one of {', '.join(PRECISIONS)}")

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

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON/TOML friendly) of every setting."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ScaleConfig":
        """Build from a dict; unknown keys are an error naming them (typos must not pass silently)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise VsslError(f"aggregate config: unknown key(s) {', '.join(unknown)}; "
                            f"known keys: {', '.join(sorted(names))}")
        return cls(**dict(data))

    @classmethod
    def from_toml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> "ScaleConfig":
        """Load a TOML file (top-level keys or an ``[aggregate]`` table) then apply ``overrides``.

        Dashes are accepted in keys (``set-size``) to match the CLI flags.
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise VsslError(f"config file {path} does not exist; pass an existing TOML file to --config") from None
        except tomllib.TOMLDecodeError as exc:
            raise VsslError(f"config file {path} is not valid TOML ({exc}); fix the syntax") from None
        if isinstance(data.get("aggregate"), dict):
            data = data["aggregate"]
        merged = {k.replace("-", "_"): v for k, v in data.items()}
        merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(merged)

    def replace(self, **changes: Any) -> "ScaleConfig":
        """Copy with some settings changed (ignores ``None`` values, as left-out CLI flags)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
