"""A backbone plugin that takes its time, so a test can interrupt a real `vssl extract` mid-run.

Used as ``--backbone tests.slow_backbone:slow_tiny`` (a ``module:factory`` plugin).
"""

from __future__ import annotations

import time

from vssl.extract.backbones.base import InputSpec
from vssl.extract.backbones.tiny import TinyVideoNet

SPEC = InputSpec(frames=4, stride=1, size=32)
#: seconds each batch takes on top of the network
DELAY_S = 0.25


class SlowTinyNet(TinyVideoNet):
    """The tiny net, plus a pause per batch."""

    def forward_features(self, clips):
        time.sleep(DELAY_S)
        return super().forward_features(clips)


def slow_tiny(checkpoint=None, spec: InputSpec = SPEC) -> SlowTinyNet:
    """tiny 3D conv net that sleeps per batch (tests)."""
    return SlowTinyNet(spec=spec)


slow_tiny.spec = SPEC
