"""The evaluation kinds' shared grid (``uniform``, ``segment``): T temporal positions x S square crops."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import SamplerSpec


@dataclass(frozen=True)
class GridClips(SamplerSpec):
    """The evaluation kinds' shared grid: ``TxS`` clips, T temporal positions x S crops, time-major.

    Not registered; ``uniform`` and ``segment`` subclass it and differ only in where a
    temporal position's frames lie (both use :func:`square_crops`).
    """

    temporal: int = 1  # T
    spatial: int = 1  # S

    @property
    def num_clips(self) -> int:
        return self.temporal * self.spatial

    @property
    def default_name(self) -> str:
        return f"{self.kind}{self.temporal}x{self.spatial}"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "temporal": self.temporal, "spatial": self.spatial}
