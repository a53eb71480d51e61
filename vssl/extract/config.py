"""Every setting of stage one in one dataclass: flags, TOML keys and the store's record of a run.

``vssl extract`` builds its options from these fields (:mod:`vssl.settings`), ``--config
FILE.toml`` reads them (top-level keys or an ``[extract]`` table), and each view records the
settings it was extracted with. A recipe is a named ``ExtractConfig`` (:data:`RECIPES`): the
values a published protocol used, which flags and config keys still override.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vssl.device import PRECISION_CHOICES
from vssl.errors import VsslError
from vssl.settings import Settings, setting

DECODERS = ("auto", "pyav", "decord")
DTYPES = ("float16", "float32")


@dataclass
class ExtractConfig(Settings):
    """How clips are cut, embedded and stored (the inputs and the output store are arguments)."""

    SECTION = "extract"

    backbone: str = setting("tiny", "registry name or package.module:factory")
    checkpoint: str | None = setting(None, "checkpoint file or directory")
    # (PATTERN, REPLACEMENT) pairs or "PATTERN=REPLACEMENT" strings; the CLI takes --key-map
    key_map: tuple = setting((), "regex renames of checkpoint keys", cli=False)
    views: str = setting("uniform:5x3", "comma-separated [NAME=]KIND:ARGS, e.g. random:16,uniform:5x3")
    frames: int | None = setting(None, "frames per clip (default: the backbone's, 16)")
    stride: int | None = setting(None, "frame stride in a clip (default: the backbone's, 4)")
    size: int | None = setting(None, "clip side in pixels (default: the backbone's)")
    fps: float | None = setting(None, "time base: choose frames by time at this rate, whatever the file's "
                                      "(default: the file's own frames)")
    mean: tuple[float, ...] | None = setting(None, "input mean per RGB channel, overriding the backbone's "
                                                   "(repeatable; one value = all channels)")
    std: tuple[float, ...] | None = setting(None, "input std per RGB channel, overriding the backbone's "
                                                  "(repeatable; one value = all channels)")
    # which RECIPES entry these settings started from (set by --recipe, recorded in each view)
    recipe: str | None = setting(None, "the recipe these settings come from", cli=False)
    split: str = setting("", "split name given to every video of a folder")
    decoder: str = setting("auto", "auto|pyav|decord")
    workers: int = setting(0, "decoding processes (0: in the main process)")
    batch_size: int = setting(32, "clips per backbone batch")
    device: str = setting("auto", "auto|cpu|cuda|cuda:N")
    # auto: bf16 autocast where the CPU or GPU has native bf16, fp16 on older GPUs, else fp32 (the
    # rule stage two uses); bf16 features keep probe accuracy (docs/PERFORMANCE.md)
    precision: str = setting("auto", "auto|fp32|bf16|fp16 (autocast)")
    seed: int = setting(0, "random clips are a function of (seed, video)")
    dtype: str = setting("float16", "stored feature dtype: float16|float32")
    chunk_videos: int | None = setting(None, "videos per store chunk, when creating (default: by size)")
    # token views beside the pooled ones, from the same clips in the same pass (vssl.extract.feature_sets)
    tokens: str | None = setting(None, "also store each clip's patch tokens pooled to T'xH'xW' (e.g. 2x4x4) or "
                                       "full, as the view <view>.tokens<T'>x<H'>x<W'>")
    layers: int = setting(1, "also store the outputs of the last N blocks (views <view>.layer-<k>, k = 2..N)")
    retry_failed: bool = setting(False, "decode videos that failed before again", flag="--retry-failed")

    def coerce(self) -> None:
        for key in ("mean", "std"):
            value = getattr(self, key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):  # TOML `mean = 0.45`
                value = (value,)
            if isinstance(value, (list, tuple)) and len(value) == 1:  # --mean 0.45: the same for the three channels
                value = tuple(value) * 3
            setattr(self, key, value)
        if isinstance(self.views, (list, tuple)):  # the Python API also takes a list of view specs
            self.views = ",".join(self.views)
        if self.checkpoint is not None:
            self.checkpoint = str(self.checkpoint)  # a Path from the Python API

    def validate(self) -> None:
        if self.batch_size < 1:
            raise VsslError("--batch-size must be >= 1 and --workers >= 0")
        if self.workers < 0:
            raise VsslError("--batch-size must be >= 1 and --workers >= 0")
        if self.precision not in PRECISION_CHOICES:
            raise VsslError(f"--precision {self.precision!r}: choose fp32, bf16 or fp16")
        if self.decoder not in DECODERS:
            self.bad("decoder", f"must be one of {', '.join(DECODERS)}")
        if self.dtype not in DTYPES:
            self.bad("dtype", f"must be one of {', '.join(DTYPES)}")
        if self.fps is not None and self.fps <= 0:
            self.bad("fps", "must be > 0")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != 3:
                self.bad(key, "takes one value or three (R, G, B)")
        if self.std is not None and min(self.std) <= 0:
            self.bad("std", "must be > 0")
        for key in ("frames", "stride", "size", "chunk_videos", "layers"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                self.bad(key, "must be >= 1")
        if self.tokens is not None:
            from .tokens import TokenGrid

            TokenGrid.parse(self.tokens)

    def key_map_pairs(self) -> list[tuple[str, str]] | None:
        """The checkpoint key renames as (pattern, replacement) pairs, or None."""
        from .backbones import parse_key_map

        if not self.key_map:
            return None
        pairs: list[tuple[str, str]] = []
        for item in self.key_map:
            pairs += parse_key_map([item]) if isinstance(item, str) else [tuple(item)]  # type: ignore[list-item]
        return pairs

    def record(self) -> dict[str, Any]:
        """What a view records about the run that extracted it (settings that shape its features; extraction
        records ``precision`` as resolved, the one the rows were computed in, never ``auto``)."""
        keep = ("backbone", "checkpoint", "views", "frames", "stride", "size", "decoder", "precision", "seed",
                "dtype", "fps", "mean", "std", "recipe", "key_map")
        # key renames are recorded when given: `vssl search` loads the checkpoint again with them
        return {k: v for k, v in self.to_dict().items() if k in keep and (k != "key_map" or v)}


#: Settings one view may not mix: a view resumed with another recipe, time base or
#: normalisation would hold features of two protocols (the spec and the backbone identity
#: already refuse other frames, stride, size and crops).
RECIPE_KEYS = ("recipe", "fps", "mean", "std")


def recipe_of(record: dict[str, Any] | None) -> dict[str, Any]:
    """The recipe settings of a view's stored ``extract`` record; views written before recipes = none."""
    record = dict(record or {})
    out = {k: record.get(k) for k in RECIPE_KEYS}
    out["mean"] = list(out["mean"]) if out["mean"] is not None else None
    out["std"] = list(out["std"]) if out["std"] is not None else None
    if out["recipe"] == "default":
        out["recipe"] = None
    return out


#: Named extraction settings. A recipe fixes the values of a protocol; flags still override.
RECIPES: dict[str, ExtractConfig] = {
    "default": ExtractConfig(),
    # SCALE's released pipeline (Separius/SCALE src/extract_features.py over SlowFast's datasets):
    # 16 frames, stride 4 (configs/linear_k400_16x4.yaml) on a 30-fps time base (SlowFast's
    # DATA.TARGET_FPS default), 16 `lin` training clips (TRAIN_CROP_NUM_TEMPORAL 16), 5x3
    # evaluation clips placed as decoder_orig.get_start_end_idx places them (TEST.NUM_ENSEMBLE_VIEWS
    # 5 x NUM_SPATIAL_CROPS 3), SlowFast's DATA.MEAN/STD 0.45/0.225. The released test crops were
    # 256 px (TEST_CROP_SIZE); one store has one size, so run the evaluation view with --size 256 in
    # its own store for that resolution (the crop regions are the same).
    "scale": ExtractConfig(views="random:16:crop=lin:place=slowfast,uniform:5x3:place=slowfast", frames=16,
                           stride=4, size=224, fps=30.0, mean=(0.45,) * 3, std=(0.225,) * 3, recipe="scale"),
    # the same for SSv2 (the released ssv2 dataset: stride 2, no horizontal flip, which would
    # swap "left" and "right" classes; 2 temporal x 3 spatial evaluation clips)
    "scale-ssv2": ExtractConfig(views="random:16:crop=lin:place=slowfast:flip=0,uniform:2x3:place=slowfast",
                                frames=16, stride=2, size=224, fps=30.0, mean=(0.45,) * 3, std=(0.225,) * 3,
                                recipe="scale-ssv2"),
}


def recipe(name: str) -> ExtractConfig:
    """The recipe ``name``; an unknown name is one line listing the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise VsslError(f"--recipe {name!r}: unknown recipe; known: {', '.join(sorted(RECIPES))}") from None
