"""Stage two: the SCALE predictor trained with MCM + SET on stored clip embeddings (SCALE §3).

Public API (the probes build on it): :class:`ScaleConfig`, :class:`ScaleModel`
(``encode(features, boxes, mask=None, valid=None) -> (clips_out, set_token)``; ``valid``: the real
clips of padded sets of a ragged view), :func:`train`,
:func:`load_run` and :func:`export`.
"""

from vssl.aggregate.checkpoint import load_run
from vssl.aggregate.config import ScaleConfig
from vssl.aggregate.exporting import aggregate_group, export
from vssl.aggregate.losses import info_nce, symmetric_info_nce
from vssl.aggregate.model import ScaleModel
from vssl.aggregate.sampling import sample_sets
from vssl.aggregate.training import RunSummary, TrainingDiverged, train

__all__ = ["ScaleConfig", "ScaleModel", "train", "load_run", "export", "aggregate_group", "RunSummary",
           "TrainingDiverged", "info_nce", "symmetric_info_nce", "sample_sets"]
