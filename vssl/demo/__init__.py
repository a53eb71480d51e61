"""`vssl demo`: the whole pipeline on a procedural dataset, offline, in minutes on a CPU."""

from .dataset import CLASSES, LONG_RANGE_CLASSES, generate_dataset, render_video, sample_specs

__all__ = ["CLASSES", "LONG_RANGE_CLASSES", "generate_dataset", "render_video", "sample_specs"]
