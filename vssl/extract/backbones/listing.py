"""What `vssl backbones` shows: one row per registered or plugin backbone.

The embedding width comes from each registry entry: the published width of fixed
architectures, ``None`` where the checkpoint decides (ViT-S/B/L...) or a plugin does not say.
``verified`` is what a test shows for the backbone (:mod:`.verified`), ``None`` when nothing does.
``tokens`` is what token views it gives (:attr:`~.registry.BackboneEntry.tokens`), ``None`` if unknown.
"""

from __future__ import annotations

from typing import Any

from .base import IMAGENET_MEAN, IMAGENET_STD, KINETICS_MEAN, KINETICS_STD
from .registry import family_aliases, list_backbones
from .verified import verification


def backbone_rows() -> list[dict[str, Any]]:
    """Name, other names it answers to (:func:`~.registry.family_aliases`), family, input spec, embedding
    width (or None), whether a checkpoint is needed, what is verified."""
    rows = []
    aliases = family_aliases()
    for entry in list_backbones():
        verified = verification(entry.name)
        rows.append({"name": entry.name, "aliases": [a for a, name in aliases.items() if name == entry.name],
                     "family": entry.family, "spec": entry.spec.to_dict(),
                     "embed_dim": entry.clip_dim(),
                     "needs_checkpoint": entry.needs_checkpoint, "description": entry.description,
                     "tokens": entry.tokens or None,
                     "verified": verified.to_dict() if verified else None})
    return rows


def describe_norm(mean: list[float], std: list[float]) -> str:
    """"imagenet"/"kinetics" for the usual statistics, else the numbers (short, for the table)."""
    pair = (tuple(round(m, 3) for m in mean), tuple(round(v, 3) for v in std))
    for label, (m, v) in (("imagenet", (IMAGENET_MEAN, IMAGENET_STD)), ("kinetics", (KINETICS_MEAN, KINETICS_STD))):
        if pair == (tuple(round(x, 3) for x in m), tuple(round(x, 3) for x in v)):
            return label
    text = [f"{x:.3g}" for x in (*mean, *std)]
    return f"{text[0]}/{text[3]}" if len(set(text[:3])) == 1 and len(set(text[3:])) == 1 else ",".join(text)
