"""``dense:S`` moved to :mod:`vssl.extract.view_kinds.dense`; its names stay importable from here."""

from .view_kinds.dense import DenseClips, duration_of, on_screen, timeline

__all__ = ["DenseClips", "duration_of", "on_screen", "timeline"]
