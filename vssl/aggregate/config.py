"""Every setting of stage two in one dataclass, so a run is described by one dict.

Defaults follow SCALE (Sameni et al., ICCV 2023, §3 and Tables 8–11) and, where the paper is
silent, the released implementation (Separius/SCALE, ``src/train.py`` / ``src/scale.py``).
The config is stored in every checkpoint so a run can be resumed, inspected or exported
without the original command line.
"""

from __future__ import annotations

import math
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any, Mapping

from vssl.aggregate.boxes import BOX_ENCODINGS
from vssl.aggregate.masking import MASK_MODES, fixed_count
from vssl.aggregate.terms import TERMS, LossTerm, absent_from_old_runs, term_settings
from vssl.device import PRECISION_CHOICES
from vssl.errors import VsslError
from vssl.settings import Settings, read_toml, setting

#: the most clips per set on a ragged view when --set-size is not given: the released sets
#: (8 of the 16 clips stored per video, ``num_views=8``)
RAGGED_SET_SIZE = 8


#: what a run recorded before a setting existed did, whatever today's default: a checkpoint's
#: config lacking the key reads as this value (so a default may change without changing old runs)
LEGACY_VALUES = {"box_encoding": "absolute", "mask_mode": "fixed"}


@dataclass
class ScaleConfig(*term_settings(), Settings):  # type: ignore[misc]
    """Model, loss, sampling and optimisation settings of the SCALE predictor.

    Each loss term's own settings (temperature, ``<name>_weight``, ...) come from its module
    (:mod:`vssl.aggregate.terms`) through the bases.
    """

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
    # -- losses (eq. 2–8): L = sum of w_term L_term (:mod:`vssl.aggregate.terms`); a term of weight 0
    #    is off: not computed, no head. The former switches are flags and keys that set a weight to
    #    0 (a config or checkpoint written with them still loads); they are not stored.
    use_mcm: InitVar[bool | None] = setting(None, "masked clip modelling loss (--no-mcm: mcm_weight 0)",
                                            flag="--mcm/--no-mcm")
    use_set: InitVar[bool | None] = setting(None, "set contrastive loss (--no-set: set_weight 0)",
                                            flag="--set/--no-set")
    # -- set sampling (§3.2): two disjoint sets per video; None = half of the stored clips
    set_size: int | None = setting(None, "clips per set (default: half of K; on a ragged view at most 8)")
    mask_ratio: float = setting(0.25, "fraction of each set's clips replaced by the MSK token (0: none)")
    mask_mode: str = setting("fixed", "how many clips a set masks: fixed (round(ratio x S), 1..S-1), "
                             "bernoulli (a coin per clip, as released), stochastic (ratio x S randomly "
                             "rounded, as released s_int)")
    # -- inputs: how the stored boxes reach the box embedding (eq. 5); recorded in the run, so its
    #    export and probes read boxes as it was trained (vssl.aggregate.boxes)
    box_encoding: str = setting("absolute", "boxes as SCALE reads them: absolute (as stored: fractions of the "
                                "frame and video, flip 1/0) or released (min-max over each video's clips in "
                                "the view, flip +1/-1, as the released SlowFast datasets)")
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

    @classmethod
    def from_stored(cls, data: dict) -> "ScaleConfig":
        """The config a checkpoint recorded; keys it lacks (older runs) take :data:`LEGACY_VALUES`, and
        the weight of a loss term installed since then 0."""
        return cls.from_dict({**absent_from_old_runs(), **LEGACY_VALUES, **data})

    def __post_init__(self, use_mcm: bool | None, use_set: bool | None) -> None:  # type: ignore[override]
        """Fold the former switches into the weights (off: weight 0), then check as every config."""
        for switch, key in ((use_mcm, "mcm_weight"), (use_set, "set_weight")):
            if switch is False:
                setattr(self, key, 0.0)
        super().__post_init__()

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
            if self._heads_derived:
                bad("width", f"gives width / 32 = {self.heads} heads, which do not divide it: use a multiple of 32 "
                             "or pass --heads")
            bad("heads", f"must divide the width {self.width} (default: width / 32)")
        if not 0.0 <= self.dropout < 1.0:
            bad("dropout", "must be in [0, 1)")
        if not 0.0 <= self.mask_ratio < 1.0:
            bad("mask_ratio", "must be in [0, 1)")
        if self.set_size is not None and self.set_size < 2:
            bad("set_size", "must be at least 2 (one masked clip and one visible clip)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad("lr", "must be a positive number")
        if self.weight_decay < 0 or not 0.0 <= self.warmup < 1.0:
            bad("warmup" if self.weight_decay >= 0 else "weight_decay", "is out of range")
        for term in TERMS:
            term.validate(self)
        if not self.terms:
            raise VsslError(f"{self.SECTION} config: every loss is off ("
                            f"{', '.join(f'{t.weight_key}=0' for t in TERMS)}, or --no-<loss>): nothing to train")
        if self.mask_mode not in MASK_MODES:
            bad("mask_mode", f"must be one of {', '.join(MASK_MODES)}")
        if self.box_encoding not in BOX_ENCODINGS:
            bad("box_encoding", f"must be one of {', '.join(BOX_ENCODINGS)}")
        if self.precision not in PRECISION_CHOICES:
            bad("precision", f"must be one of {', '.join(PRECISION_CHOICES)}")

    # ------------------------------------------------------------------ derived values

    def resolve_set_size(self, num_clips: int | None) -> int:
        """Clips per set for a view of ``num_clips`` clips: the setting, or half of them.

        A ragged view (``num_clips`` None) has no K: sets hold at most ``set_size`` clips (default
        :data:`RAGGED_SET_SIZE`, the released 8 of 16), fewer for a video with fewer than twice that.
        """
        if num_clips is None:
            return RAGGED_SET_SIZE if self.set_size is None else self.set_size
        size = self.set_size if self.set_size is not None else num_clips // 2
        if size < 2 or 2 * size > num_clips:
            raise VsslError(f"set_size {size} needs 2 x {size} clips per video but the view has {num_clips}; "
                            f"pass --set-size between 2 and {num_clips // 2}")
        return size

    @property
    def terms(self) -> tuple[LossTerm, ...]:
        """The loss terms that are on (weight not 0), in :data:`~vssl.aggregate.terms.TERMS` order."""
        return tuple(term for term in TERMS if term.is_on(self))

    @property
    def masking(self) -> bool:
        """Whether a term that is on predicts masked clips (so sets mask some, and the model has an MSK token)."""
        return any(term.masks for term in self.terms)

    @property
    def mcm_on(self) -> bool:
        """Whether L_MCM is part of the objective (its weight not 0)."""
        return self.mcm_weight > 0

    @property
    def set_on(self) -> bool:
        """Whether L_SET is part of the objective (its weight not 0)."""
        return self.set_weight > 0

    def num_masked(self, set_size: int) -> int | None:
        """Masked clips per set in ``fixed`` mode (:func:`~vssl.aggregate.masking.fixed_count`); 0
        when no term masks; None when another mode draws the count per set."""
        if not self.masking:
            return 0
        return fixed_count(self.mask_ratio, set_size) if self.mask_mode == "fixed" else None


# Read access to the former switches, for code written against them: a loss is on when its weight is
# not 0. (Set after the class: the dataclass gives an init-only field's name its default, None.)
ScaleConfig.use_mcm = property(lambda self: self.mcm_on, doc="Former switch of L_MCM: mcm_weight > 0.")
ScaleConfig.use_set = property(lambda self: self.set_on, doc="Former switch of L_SET: set_weight > 0.")


# ---------------------------------------------------------------------- the command's other settings


@dataclass
class AggregateInputs(Settings):
    """What `vssl aggregate` reads: the view (to train on, or to export) and the videos to train on.

    Not part of :class:`ScaleConfig`: a run records them in its meta (``view``, ``split``), and a
    resumed run is checked against them there (:func:`~vssl.aggregate.resume.check_same_data`).
    """

    SECTION = "aggregate"

    view: str = setting("random16", "view to train on / to export")
    split: str = setting("auto", "videos to train on: a split name, 'all', or 'auto' (train when the store has it)")
    log_dir: str | None = setting(None, "also write TensorBoard event files here: losses, contrastive top-1 and "
                                        "learning rate per step, the settings (needs pip install 'vssl[tensorboard]')")

    def train_split(self) -> str | None:
        """The ``split`` argument of :func:`~vssl.aggregate.train` (None: every video)."""
        return None if self.split == "all" else self.split


#: the most clips of one video encoded in one pass by ``--export`` (``--export-max-clips``)
EXPORT_MAX_CLIPS = 1024


@dataclass
class ExportConfig(Settings):
    """Settings of ``vssl aggregate --export`` (the ``[aggregate.export]`` table of a settings file).

    An export runs in fp32 and in batches of 256 videos: the training defaults (bf16 where the GPU
    has it, 512 videos) are for training. ``--batch-size``/``--precision`` (and the same keys in
    ``[aggregate]``) apply to an export too; a key of ``[aggregate.export]`` wins over ``[aggregate]``.
    """

    SECTION = "export"

    name: str | None = setting(None, "run name in the store (default: the run directory's name)")
    max_clips: int = setting(EXPORT_MAX_CLIPS, "with --export on a ragged view: the most clips of a video encoded "
                             "in one pass; a longer video is encoded in windows, its SET token the clip-weighted "
                             "mean of theirs", flag="--export-max-clips")
    batch_size: int = setting(256, "videos per batch (flag: --batch-size)", cli=False)
    precision: str = setting("fp32", "auto, bf16, fp16, fp32 (flag: --precision)", cli=False)
    device: str = setting("auto", "auto, cpu, cuda, cuda:N (flag: --device)", cli=False)

    def validate(self) -> None:
        if self.max_clips < 1:
            raise VsslError(f"--export-max-clips {self.max_clips}: give at least 1")
        if self.batch_size < 1:
            self.bad("batch_size", "must be a positive integer")
        if self.precision not in PRECISION_CHOICES:
            self.bad("precision", f"must be one of {', '.join(PRECISION_CHOICES)}")


#: settings of ScaleConfig that an export reads too (the same flags and keys)
SHARED_WITH_EXPORT = ("batch_size", "precision", "device")


@dataclass(frozen=True)
class AggregateSettings:
    """Everything `vssl aggregate` was given: the model and training, the inputs, the export."""

    scale: ScaleConfig
    inputs: AggregateInputs
    export: ExportConfig


def load_aggregate_settings(config: str | Path | None, overrides: Mapping[str, Any] | None = None,
                            inputs: Mapping[str, Any] | None = None,
                            export: Mapping[str, Any] | None = None) -> AggregateSettings:
    """The three settings of `vssl aggregate` from one TOML file and the flags given.

    The file's ``[aggregate]`` table (or its top-level keys) holds :class:`ScaleConfig` and
    :class:`AggregateInputs` keys; its ``[aggregate.export]`` table :class:`ExportConfig` keys.
    Flags win over the file. An export's batch size, precision and device: the ``--batch-size``/
    ``--precision``/``--device`` flags, else ``[aggregate.export]``, else the same keys of
    ``[aggregate]``, else :class:`ExportConfig`'s defaults.
    """
    table = read_toml(config, ScaleConfig.SECTION) if config is not None else {}
    table = {k.replace("-", "_"): v for k, v in table.items()}
    export_table = table.pop("export", {})
    if not isinstance(export_table, dict):
        raise VsslError(f"config file {config}: 'export' must be a table ([aggregate.export]) of "
                        f"{', '.join(ExportConfig.keys())}")
    own = set(AggregateInputs.keys())
    scale_table = {k: v for k, v in table.items() if k not in own}
    overrides = dict(overrides or {})
    from_scale = {k: scale_table[k] for k in SHARED_WITH_EXPORT if k in scale_table}
    shared_flags = {k: overrides[k] for k in SHARED_WITH_EXPORT if k in overrides}
    return AggregateSettings(
        scale=ScaleConfig.from_table(scale_table, overrides),
        inputs=AggregateInputs.from_table({k: v for k, v in table.items() if k in own}, inputs),
        export=ExportConfig.from_table({**from_scale, **export_table}, {**shared_flags, **(export or {})}))
