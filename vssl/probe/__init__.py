"""Stage three: frozen features in, accuracy out (SCALE §4.1, DINO's k-NN).

One evaluation per module: :mod:`.knn` (training-free, DINO's weighted vote), :mod:`.linear`
and :mod:`.mlp` (per-clip heads ensembled over a video's clips), :mod:`.transformer`
(SCALE's architecture from random init, and SCALE_ft), :mod:`.scale` (SCALE's aggregated
features), :mod:`.attentive` (V-JEPA 2's attentive probe over a video's tokens), :mod:`.retrieval`
(test videos query the training videos: R@k, mAP), :mod:`.lowshot`,
:mod:`.metrics`, :mod:`.report`. :mod:`.registry` lists every probe
(one entry each; :func:`register_probe` adds one) and :mod:`.run` loops over (probe, feature source)
rows for ``vssl probe``.
"""

from .attentive import AttentiveConfig
from .knn import KnnConfig
from .linear import LinearConfig
from .mlp import MlpConfig
from .registry import PROBES, Probe, get_probe, register_probe, unregister_probe
from .report import ProbeResult, Report
from .retrieval import RetrievalConfig, RetrievalResult
from .run import ProbeRequest, run_probes
from .transformer import FinetuneConfig, TransformerConfig

__all__ = ["AttentiveConfig", "KnnConfig", "LinearConfig", "MlpConfig", "TransformerConfig", "FinetuneConfig",
           "ProbeRequest", "ProbeResult", "Report", "run_probes", "PROBES", "Probe", "get_probe", "register_probe",
           "unregister_probe", "RetrievalConfig", "RetrievalResult"]
