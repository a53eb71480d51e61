"""SlowOnly ResNet-50 as trained by ρBYOL in pySlowFast (Feichtenhofer et al. 2021).

Architecture (SlowFast paper, Table 1 "Slow" pathway; pySlowFast ``ResNet`` with
``_TEMPORAL_KERNEL_BASIS["slow"]``): stem conv 1x7x7 stride (1,2,2) + BN + ReLU + max-pool
1x3x3 stride (1,2,2); bottleneck stages res2..res5 with (3, 4, 6, 3) blocks, widths
64/128/256/512 (x4 out), spatial stride 2 on the 3x3 conv "b" of the first block of res3..res5,
temporal kernel 3 only in conv "a" of res4/res5; no conv bias; BatchNorm eps 1e-5. The clip
embedding is the global average of res5 (2048-d). The 16x4 and 8x8 variants share weights'
shapes; only the input spec differs.

Module names are pySlowFast's (``s2.pathway0_res0.branch2.a``, ``…a_bn``, ``…branch1``), so the
``.pyth`` files load after removing the ``backbone.`` (or ``backbone_hist.``) prefix;
:func:`adapt_slowonly` also converts pytorchvideo's ``slow_r50`` names.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

from .base import KINETICS_MEAN, KINETICS_STD, Backbone, InputSpec
from .builder import Adapted
from .checkpoints import (KeyMap, LoadedCheckpoint, StateDict, apply_key_map, drop_keys, register_recogniser,
                          rename_keys, select_prefix, wrong_layout)
from .registry import register_family

SLOWONLY_8X8 = InputSpec(frames=8, stride=8, size=224, mean=KINETICS_MEAN, std=KINETICS_STD)
SLOWONLY_16X4 = InputSpec(frames=16, stride=4, size=224, mean=KINETICS_MEAN, std=KINETICS_STD)
DEPTHS = (3, 4, 6, 3)
TEMPORAL_KERNEL_A = (1, 1, 3, 3)  # conv "a" of res2..res5
BN_EPS = 1e-5
LAYOUTS = "pySlowFast .pyth (model_state, backbone./backbone_hist. prefix), pytorchvideo slow_r50"


def _conv_bn(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> tuple[nn.Conv3d, nn.BatchNorm3d]:
    pad = tuple(k // 2 for k in kernel)
    return nn.Conv3d(cin, cout, kernel, stride, pad, bias=False), nn.BatchNorm3d(cout, eps=BN_EPS)


class Bottleneck(nn.Module):
    """pySlowFast ``ResBlock`` with ``BottleneckTransform``: a (Tx1x1) -> b (1x3x3, strided) -> c (1x1x1)."""

    def __init__(self, cin: int, inner: int, cout: int, temporal_k: int, stride: int) -> None:
        super().__init__()
        if cin != cout or stride != 1:
            self.branch1, self.branch1_bn = _conv_bn(cin, cout, (1, 1, 1), (1, stride, stride))
        else:
            self.branch1 = self.branch1_bn = None
        self.branch2 = nn.Module()
        b = self.branch2
        b.a, b.a_bn = _conv_bn(cin, inner, (temporal_k, 1, 1), (1, 1, 1))
        b.b, b.b_bn = _conv_bn(inner, inner, (1, 3, 3), (1, stride, stride))
        b.c, b.c_bn = _conv_bn(inner, cout, (1, 1, 1), (1, 1, 1))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.branch2
        y = self.relu(b.a_bn(b.a(x)))
        y = self.relu(b.b_bn(b.b(y)))
        y = b.c_bn(b.c(y))
        shortcut = x if self.branch1 is None else self.branch1_bn(self.branch1(x))
        return self.relu(shortcut + y)

    def conv_bn_pairs(self) -> Iterator[tuple[nn.Module, str, str]]:
        b = self.branch2
        yield from ((b, "a", "a_bn"), (b, "b", "b_bn"), (b, "c", "c_bn"))
        if self.branch1 is not None:
            yield (self, "branch1", "branch1_bn")


class SlowOnlyR50(Backbone):
    """SlowOnly R50 trunk; forward returns the global average of res5 (B, 2048)."""

    pooling = "avgpool"
    memory_format = torch.channels_last_3d

    def __init__(self, spec: InputSpec = SLOWONLY_8X8, width: int = 64, depths: tuple[int, ...] = DEPTHS) -> None:
        super().__init__(embed_dim=width * 32, spec=spec, family="slowonly")
        self.s1 = nn.Module()
        self.s1.pathway0_stem = nn.Module()
        stem = self.s1.pathway0_stem
        stem.conv, stem.bn = _conv_bn(3, width, (1, 7, 7), (1, 2, 2))
        stem.conv.padding = (0, 3, 3)
        self.pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        cin = width
        for stage, (n, tk) in enumerate(zip(depths, TEMPORAL_KERNEL_A)):
            inner = width * 2 ** stage
            cout = inner * 4
            module = nn.Module()
            for i in range(n):
                stride = 2 if (i == 0 and stage > 0) else 1
                setattr(module, f"pathway0_res{i}", Bottleneck(cin, inner, cout, tk, stride))
                cin = cout
            setattr(self, f"s{stage + 2}", module)
        self.depths = depths
        self.relu = nn.ReLU(inplace=True)

    @classmethod
    def arch_from_state_dict(cls, sd: StateDict, spec: InputSpec, source: str) -> dict[str, Any]:
        """Only the stem width varies between files (the depths are the R50's)."""
        return {"width": sd["s1.pathway0_stem.conv.weight"].shape[0]}

    def forward_features(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> res5 feature map (B, 2048, T, H/32, W/32)."""
        stem = self.s1.pathway0_stem
        x = self.pool(self.relu(stem.bn(stem.conv(clips))))
        for stage, n in enumerate(self.depths):
            module = getattr(self, f"s{stage + 2}")
            for i in range(n):
                x = getattr(module, f"pathway0_res{i}")(x)
        return x

    features = forward_features  # the name callers used before forward_features

    def conv_bn_pairs(self) -> Iterator[tuple[nn.Module, str, str]]:
        yield (self.s1.pathway0_stem, "conv", "bn")
        for module in self.modules():
            if isinstance(module, Bottleneck):
                yield from module.conv_bn_pairs()


# pytorchvideo create_resnet / slow_r50 names -> pySlowFast names.
_PTV_RENAMES = [
    (r"^blocks\.0\.conv\.", "s1.pathway0_stem.conv."),
    (r"^blocks\.0\.norm\.", "s1.pathway0_stem.bn."),
    (r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch1_conv\.", lambda m: f"s{int(m[1]) + 1}.pathway0_res{m[2]}.branch1."),
    (r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch1_norm\.", lambda m: f"s{int(m[1]) + 1}.pathway0_res{m[2]}.branch1_bn."),
    (r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.conv_([abc])\.",
     lambda m: f"s{int(m[1]) + 1}.pathway0_res{m[2]}.branch2.{m[3]}."),
    (r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.norm_([abc])\.",
     lambda m: f"s{int(m[1]) + 1}.pathway0_res{m[2]}.branch2.{m[3]}_bn."),
]
# Training-only state: classification/projection heads, ρBYOL's predictor, MoCo queues, kNN memory.
_TRAINING_ONLY = (r"(.*\.)?head\.", r"head_hist\.", r"predictor", r"queue_x", r"queue_ptr", r"knn_mem\.",
                  r"blocks\.5\.", r"iter$", r"ptr$")


def adapt_slowonly(ckpt: LoadedCheckpoint, key_map: KeyMap | None = None) -> Adapted:
    """pySlowFast (plain or ρBYOL's ``backbone.``/``backbone_hist.``) or pytorchvideo -> our names."""
    sd = apply_key_map(ckpt.tensors, key_map)
    notes = []
    for prefix in ("backbone.", "backbone_hist."):  # the online network first, the momentum one if alone
        if f"{prefix}s1.pathway0_stem.conv.weight" in sd:
            sd = select_prefix(sd, prefix)
            notes.append(f"under {prefix}")
            break
    sd = drop_keys(sd, _TRAINING_ONLY)
    if "blocks.0.conv.weight" in sd:
        sd = rename_keys(sd, _PTV_RENAMES)
        notes.append("pytorchvideo names")
    if "s1.pathway0_stem.conv.weight" not in sd:
        raise wrong_layout(ckpt, "slowonly", LAYOUTS, sd)
    return Adapted(sd, notes=tuple(notes))


register_recogniser("slowonly", "slowonly-r50", lambda keys: any(
    k.endswith("pathway0_stem.conv.weight") for k in keys) or ("blocks.0.conv.weight" in keys and any(
        "res_blocks" in k for k in keys)))
register_family("slowonly-r50", model_cls=SlowOnlyR50, adapter=adapt_slowonly, spec=SLOWONLY_8X8, family="slowonly",
                embed_dim=2048, description="ρBYOL SlowOnly ResNet-50 8x8 (pySlowFast .pyth, pytorchvideo slow_r50),"
                " res5 avg 2048-d")
register_family("slowonly-r50-16x4", model_cls=SlowOnlyR50, adapter=adapt_slowonly, spec=SLOWONLY_16X4,
                family="slowonly", embed_dim=2048,
                description="ρBYOL SlowOnly ResNet-50 16x4 (same weights' shapes, 16 frames stride 4)")
