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
    split: str = setting("", "split name given to every video of a folder")
    decoder: str = setting("auto", "auto|pyav|decord")
    workers: int = setting(0, "decoding processes (0: in the main process)")
    batch_size: int = setting(32, "clips per backbone batch")
    device: str = setting("auto", "auto|cpu|cuda|cuda:N")
    precision: str = setting("fp32", "fp32|bf16|fp16 (autocast)")
    seed: int = setting(0, "random clips are a function of (seed, video)")
    dtype: str = setting("float16", "stored feature dtype: float16|float32")
    chunk_videos: int | None = setting(None, "videos per store chunk, when creating (default: by size)")
    retry_failed: bool = setting(False, "decode videos that failed before again", flag="--retry-failed")

    def coerce(self) -> None:
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
        for key in ("frames", "stride", "size", "chunk_videos"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                self.bad(key, "must be >= 1")

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
        """What a view records about the run that extracted it (settings that shape its features)."""
        keep = ("backbone", "checkpoint", "views", "frames", "stride", "size", "decoder", "precision", "seed",
                "dtype")
        return {k: v for k, v in self.to_dict().items() if k in keep}


#: Named extraction settings. A recipe fixes the values of a protocol; flags still override.
RECIPES: dict[str, ExtractConfig] = {"default": ExtractConfig()}


def recipe(name: str) -> ExtractConfig:
    """The recipe ``name``; an unknown name is one line listing the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise VsslError(f"--recipe {name!r}: unknown recipe; known: {', '.join(sorted(RECIPES))}") from None
