"""The contract every backbone meets.

A backbone is a frozen ``nn.Module`` that maps a batch of normalized clips shaped
``(B, C, T, H, W)`` (float, already ``(x/255 - mean) / std``) to one embedding per clip,
shaped ``(B, embed_dim)``. Families whose reference code wants another layout (Hugging
Face's ``(B, T, C, H, W)``, per-frame image models) permute inside ``forward``, so the
extraction pipeline never needs to know. The :class:`InputSpec` travels with the model
(as timm's ``pretrained_cfg`` does) so a clip is always sampled and normalized the way
the backbone was trained.

Built-in families split ``forward`` into three steps so that pooling lives in one place
(:mod:`.pooling`) and is recorded with the features: ``forward_features`` (everything before
pooling), the pooling named by ``pooling``, and ``forward_head`` (a norm some checkpoints apply
after pooling). Plugins may simply override ``forward``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator

import torch
from torch import nn

from vssl.errors import VsslError

from .fusion import ConvBnPair, fold_batchnorms
from .pooling import pool

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """How to cut and normalize a clip for a backbone.

    ``frames`` frames are taken ``stride`` frames apart and resized to ``size`` x ``size``;
    pixel values in [0, 1] are normalized with ``mean``/``std`` per RGB channel.
    """

    frames: int = 16
    stride: int = 4
    size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def with_overrides(self, **overrides: Any) -> "InputSpec":
        """Return a copy with the non-``None`` overrides applied (CLI flags override the family)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        for key in ("mean", "std"):
            if key in changes:
                changes[key] = tuple(float(x) for x in changes[key])
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Backbone(nn.Module):
    """Base class for frozen clip encoders.

    Attributes set by every subclass before use:
    ``embed_dim`` (output width), ``spec`` (:class:`InputSpec`), ``family`` (registry family name).
    ``pooling`` names how ``forward_features`` becomes one embedding (a key of
    :data:`.pooling.POOLINGS`); a plugin that overrides ``forward`` may leave it empty.
    """

    embed_dim: int
    spec: InputSpec
    family: str
    pooling: str = ""
    #: conv families: the memory format their convolutions run fastest in (``torch.channels_last``
    #: for 2-D, ``torch.channels_last_3d`` for 3-D); weights and inputs are put in it when frozen.
    #: Measured on EfficientNet-Lite0, 128 px, 2 CPU threads: 1.32x fp32 NCHW (docs/PERFORMANCE.md).
    memory_format: torch.memory_format | None = None

    def __init__(self, embed_dim: int, spec: InputSpec, family: str) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.spec = spec
        self.family = family

    @classmethod
    def arch_from_state_dict(cls, sd: dict[str, torch.Tensor], spec: InputSpec, source: str,
                             **hints: Any) -> dict[str, Any]:
        """Constructor arguments a (converted) checkpoint implies; ``hints`` come from the file's
        config or the user (e.g. ``num_heads``). Default: nothing to infer, hints pass through."""
        return dict(hints)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features before pooling (tokens ``(B, N, D)`` or a map ``(B, C, ...)``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_features or forward")

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """What follows pooling (a checkpoint's ``fc_norm``); identity by default."""
        return pooled

    def token_grid(self, features: torch.Tensor) -> torch.Tensor:
        """``forward_features``' output -> the final patch tokens on their grid, ``(B, T, H, W, D)``, as the
        family's reference model returns them (its last hidden state, less CLS and register tokens).

        A conv family's tokens are its last feature map, channels last (an image map has ``T`` = 1);
        a token family overrides this. A plugin that only overrides ``forward`` has no grid.
        """
        if self.pooling == "avgpool" and features.dim() in (4, 5):
            grid = features if features.dim() == 5 else features.unsqueeze(2)
            return grid.permute(0, 2, 3, 4, 1)
        raise VsslError(f"backbone family {self.family!r} gives no token grid (no token_grid for its "
                        f"{self.pooling or 'own'} pooling); extract pooled views only")

    def forward_tokens(self, x: torch.Tensor, layers: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One pass of the encoder -> ``(embedding (B, embed_dim), token grid (B, T, H, W, D))`` per block
        output asked for: the last ``layers`` blocks, the last block last (its embedding is ``forward``'s).

        A family that can read its intermediate blocks overrides this for ``layers`` > 1.
        """
        if layers != 1:
            raise VsslError(f"backbone family {self.family!r} gives its last block's output only; "
                            "drop --layers")
        features = self.forward_features(self._in_memory_format(x))
        return [(self.forward_head(pool(features, self.pooling)), self.token_grid(features))]

    def _in_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory format the family's convolutions run fastest in (unchanged without one)."""
        if self.memory_format is not None and x.dim() == (4 if self.memory_format == torch.channels_last else 5):
            x = x.contiguous(memory_format=self.memory_format)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(pool(self.forward_features(self._in_memory_format(x)), self.pooling))

    def conv_bn_pairs(self) -> Iterator[ConvBnPair]:
        """(owner, conv attribute, BatchNorm attribute) for every BatchNorm that directly follows a
        convolution, for :meth:`freeze` to fold; conv families override it."""
        return iter(())

    def freeze(self) -> "Backbone":
        """Eval mode, no gradients (backbones are never trained by vssl), BatchNorms folded into their
        convolutions, conv weights in their fast memory format."""
        self.eval()
        for module in list(self.modules()):
            if isinstance(module, Backbone):
                fold_batchnorms(module.conv_bn_pairs())
                if module.memory_format is not None:
                    module.to(memory_format=module.memory_format)
        for p in self.parameters():
            p.requires_grad_(False)
        return self


def runs_convolutions(model: nn.Module) -> bool:
    """Whether ``model`` contains a conv family (one that declares a fast memory format): the runs
    where cuDNN's algorithm search pays."""
    return any(isinstance(m, Backbone) and m.memory_format is not None for m in model.modules())
