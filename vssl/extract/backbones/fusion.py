"""Fold eval-mode BatchNorm into the convolution before it: a frozen backbone's inference rewrite.

A frozen BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``,
so ``bn(conv(x))`` equals one convolution with rescaled weights and a bias. Folding removes a full
read and write of every activation map; on EfficientNet-Lite0 the BatchNorms took about a fifth of
the frozen forward (docs/PERFORMANCE.md). Families name their (conv, BatchNorm) pairs through
:meth:`Backbone.conv_bn_pairs`, since which BatchNorm follows which convolution is architecture,
not something to guess from module order.
"""

from __future__ import annotations

from typing import Iterable

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: (the module holding both, the convolution's attribute name, the BatchNorm's attribute name)
ConvBnPair = tuple[nn.Module, str, str]


def fold_batchnorms(pairs: Iterable[ConvBnPair]) -> int:
    """Replace each ``owner.conv`` by the folded convolution and ``owner.bn`` by an identity.

    Pairs already folded (the BatchNorm is gone) are skipped, so freezing twice is harmless.
    Returns how many pairs were folded.
    """
    folded = 0
    for owner, conv_name, bn_name in list(pairs):  # collected first: folding edits the module tree
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        if conv is None or not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            continue
        if conv.training or bn.training:
            raise ValueError("BatchNorm folding needs eval mode (frozen running statistics)")
        setattr(owner, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(owner, bn_name, nn.Identity())
        folded += 1
    return folded
