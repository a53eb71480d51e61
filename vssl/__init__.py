"""vssl: frozen-feature video representation learning (SCALE-style clip aggregation).

``vssl.embed(videos, backbone=..., views=...)`` gives clip features of files in no store
(:func:`vssl.extract.embedding.embed`, the engine ``vssl extract`` writes stores with).
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["embed"]


def __getattr__(name: str) -> Any:
    # Lazy: ``import vssl`` stays light (no torch) for the CLI's start and the store's readers.
    if name == "embed":
        from vssl.extract.embedding import embed

        return embed
    raise AttributeError(f"module 'vssl' has no attribute {name!r}")
