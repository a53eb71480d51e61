"""Stage two: the SCALE predictor trained with MCM + SET on stored clip embeddings (SCALE §3).

Public API (the probes build on it): :class:`ScaleConfig`, :class:`ScaleModel`
(``encode(features, boxes, mask=None) -> (clips_out, set_token)``), :func:`train`,
:func:`load_run` and :func:`export`.
"""

import importlib

# Lazy (PEP 562): `vssl --help` reads ScaleConfig without importing torch.
_HOMES = {"load_run": "checkpoint", "ScaleConfig": "config", "aggregate_group": "export", "export": "export",
          "info_nce": "losses", "symmetric_info_nce": "losses", "ScaleModel": "model", "sample_sets": "sampling",
          "RunSummary": "train", "TrainingDiverged": "train", "train": "train"}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"vssl.aggregate.{_HOMES[name]}"), name)
    raise AttributeError(name)
