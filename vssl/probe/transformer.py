"""Set-level probes built on SCALE's architecture (SCALE §4.1): Transformer and SCALE_ft.

Both are one model, :class:`SetClassifier`: SCALE's encoder over all clips of a video (with
their boxes) and a linear softmax head, trained supervised on the frozen backbone's stored
features. They differ in one thing only, so that SCALE_ft − Transformer measures pretraining:
``transformer`` starts the encoder from random init, ``scale_ft`` from a pretrained run
(``vssl aggregate``). Architecture, head, input handling, grid and epochs are the same config
(:class:`FinetuneConfig` is :class:`TransformerConfig` under another name); with a ``--scale``
run the transformer row takes the run's architecture (:func:`match_architecture`).

The head is the paper's "linear softmax head on the concatenation" [C_i ⊕ SET] per clip,
softmax averaged over the video's clips (released ``LinearOnTop`` in ``eval.py``). vssl's
earlier head on the CLS output alone was dropped: on the demo's store (36 test videos, seeds
0-2) it scored 81.5 / 82.4 mean top-1 (Transformer / SCALE_ft) against 83.3 / 84.2 for this one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from vssl.aggregate.boxes import check_box_encoding, encode_boxes
from vssl.errors import VsslError
from vssl.features_store.ragged import as_ragged

from .data import TrainView
from .inputs import SetInputs
from .train import FitResult, GridHeads, TrainConfig, fit


@dataclass(frozen=True)
class TransformerConfig(TrainConfig):
    """Settings of both set probes (Transformer and SCALE_ft): grid, architecture, head, inputs.

    The grid is the union of the two rows' former grids (random init liked 1e-3, fine-tuning
    1e-4), selected on held-out training videos. ``width``/``layers``/``heads``/``mlp_ratio``
    build the random-init encoder when no SCALE run is given; with one, both rows use the run's.
    """

    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3)
    weight_decays: tuple[float, ...] = (1e-4,)
    epochs: int = 20               # ~11 s per epoch and grid point at UCF-101 scale on 1 CPU core in bf16
    batch_size: int = 64
    width: int = 256
    layers: int = 2
    heads: int | None = None       # None: width / 32, as released
    mlp_ratio: float = 2.0
    dropout: float = 0.1           # set on both encoders (released eval.py sets its --dropout on the run)
    standardize: bool = True       # inputs scaled by the training clips' per-dim mean/std, in both rows
    # boxes as the encoder reads them (vssl.aggregate.boxes): None = the --scale run's (both rows),
    # absolute without a run
    box_encoding: str | None = None

    def architecture(self):
        """The ScaleConfig of a random-init encoder with this config's shape."""
        from vssl.aggregate import ScaleConfig

        return ScaleConfig(width=self.width, layers=self.layers, heads=self.heads,
                           mlp_ratio=self.mlp_ratio, dropout=self.dropout, seed=self.seed)


@dataclass(frozen=True)
class FinetuneConfig(TransformerConfig):
    """SCALE_ft's settings: the transformer's, field for field (only the initialisation differs)."""


def match_architecture(cfg: TransformerConfig, run_cfg: Any) -> TransformerConfig:
    """``cfg`` with the shape of a SCALE run's encoder and the box encoding it was trained with, so a
    random-init transformer is the run's architecture reading the same boxes (and the row's params
    say what both rows trained). A box encoding asked for that is not the run's is refused: the
    pretrained box embedding only knows the run's."""
    if cfg.box_encoding not in (None, run_cfg.box_encoding):
        raise VsslError(f"--box-encoding {cfg.box_encoding}: the --scale run was trained with box encoding "
                        f"{run_cfg.box_encoding!r}; leave --box-encoding out (the run's is used) or give "
                        f"{run_cfg.box_encoding}")
    return replace(cfg, width=run_cfg.width, layers=run_cfg.layers, heads=run_cfg.heads, mlp_ratio=run_cfg.mlp_ratio,
                   box_encoding=run_cfg.box_encoding)


def box_encoding_of(cfg: TransformerConfig) -> str:
    """The box encoding a set probe reads: the config's (the run's, see :func:`match_architecture`),
    else absolute (the stored boxes)."""
    return check_box_encoding(cfg.box_encoding or "absolute")


def encoded_boxes(boxes, cfg: TransformerConfig):
    """A split's boxes (``[n, K, 7]`` or a ragged view's) as the set probes' encoder reads them: each
    video's encoded over all its clips in the view (:mod:`vssl.aggregate.boxes`)."""
    return encode_boxes(boxes, box_encoding_of(cfg))


def encoded_view(view: TrainView | None, cfg: TransformerConfig) -> TrainView | None:
    """The training view with its boxes encoded over each video's clips in that view (the released
    training item: all of a video's training clips), before a step draws its subset."""
    if view is None or view.boxes is None:
        return view
    return replace(view, boxes=encoded_boxes(view.boxes, cfg))


def head_input(cfg: TransformerConfig) -> str:
    """What the head sees, as the report's ``input`` param."""
    clip = "standardized C_i" if cfg.standardize else "C_i"
    return f"[{clip}, SET] per clip"


class SetClassifier(nn.Module):
    """SCALE encoder -> head per clip on [x_i ⊕ SET] -> logits [B, K, C].

    ``standardize`` (mean, std per feature dim, from the training clips) is applied to the input
    inside the model, so the statistics travel with it to evaluation, and both the encoder and
    the head see the standardized clips x_i. A randomly initialised transformer needs it: frozen
    clip embeddings often differ from each other by ~1% of their norm, which its input
    projection otherwise barely sees (the demo's event-order classes stay at chance without it).
    A pretrained encoder was trained on raw clips, so ``fold`` rewrites its input projection
    W c + b as W' x + b' with W' = W diag(std), b' = b + W mean: the same function at the start
    of fine-tuning, in the standardized coordinates both rows train in.
    """

    def __init__(self, encoder: nn.Module, in_dim: int, num_classes: int,
                 standardize: tuple[torch.Tensor, torch.Tensor] | None = None, fold: bool = False,
                 dropout: float | None = None):
        super().__init__()
        encoder.drop_pretraining()  # the loss terms' heads and tokens: the two rows' models then match
        if dropout is not None:
            set_dropout(encoder, dropout)
        width = encoder.cfg.width
        self.encoder = encoder
        self.head = nn.Linear(in_dim + width, num_classes)
        self.standardize = standardize is not None
        if standardize is not None:
            mean, std = standardize[0].float(), standardize[1].float()
            self.register_buffer("in_mean", mean)
            self.register_buffer("in_std", std)
            if fold:
                _fold_standardization(encoder.input_proj, mean, std)

    def forward(self, features: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``valid [B, K]`` (a ragged view's padded sets): the real clips; padding is left out of
        attention, and its rows of the output are meaningless (:class:`SetGrid` drops them)."""
        x = features.float()
        if self.standardize:
            x = (x - self.in_mean) / self.in_std
        _, cls = self.encoder.encode(x, boxes, valid=valid)
        k = x.shape[1]
        return self.head(torch.cat([x, cls.float()[:, None].expand(-1, k, -1)], dim=-1))   # [B, K, C]


@torch.no_grad()
def _fold_standardization(proj: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make ``proj`` take standardized inputs (x - mean) / std and give what it gave on raw ones."""
    proj.bias.add_(proj.weight @ mean.to(proj.weight.dtype))
    proj.weight.mul_(std.to(proj.weight.dtype)[None, :])


def set_dropout(encoder: nn.Module, p: float) -> None:
    """Set every dropout rate of a SCALE encoder (its modules' ``p``, attention's ``dropout``)."""
    from vssl.aggregate.dropout import Dropout
    from vssl.aggregate.model import Attention

    for module in encoder.modules():
        if isinstance(module, (Dropout, nn.Dropout)):
            module.p = p
        elif isinstance(module, Attention):
            module.dropout = p


class SetGrid(GridHeads):
    """The grid of set classifiers; per-clip logits [B, G, K, C] become [B*K, G, C] (see SetInputs),
    or, given the mask of real clips (a ragged view), [real clips, G, C]: padding is never a sample."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = super().forward(*inputs)
        if out.ndim == 4:
            b, g, k, c = out.shape
            out = out.transpose(1, 2)
            out = out[inputs[2]] if len(inputs) == 3 else out.reshape(b * k, g, c)
        return out


def clip_statistics(features: np.ndarray, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over every (real) clip of the videos at ``positions`` (float64 sums)."""
    clips = as_ragged(features)
    x = np.asarray(clips.flat[clips.rows(positions)], dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    return torch.from_numpy(mean), torch.from_numpy(np.maximum(std, 1e-6 * max(std.max(), 1e-12)))


def _fit_set(encoder: Callable[[], nn.Module], fold: bool, features: np.ndarray, boxes: np.ndarray,
             labels: np.ndarray, train_pos: np.ndarray, num_classes: int, cfg: TransformerConfig,
             advance, train_view: TrainView | None = None) -> tuple[FitResult, SetInputs]:
    """Both rows' training: the same model and data handling around ``encoder()``."""
    cfg.validate()
    stats = clip_statistics(features, train_pos) if cfg.standardize else None
    d = features.shape[-1]

    def build(grid):
        return SetGrid([SetClassifier(encoder(), d, num_classes, stats, fold, cfg.dropout)
                        for _ in grid])

    inputs = SetInputs(features, boxes, labels, per_clip=True, train_view=train_view)
    return fit(inputs, train_pos, build, cfg, advance), inputs


def train_transformer(features: np.ndarray, boxes: np.ndarray, labels: np.ndarray, train_pos: np.ndarray,
                      num_classes: int, cfg: TransformerConfig = TransformerConfig(),
                      advance=None, train_view: TrainView | None = None) -> tuple[FitResult, SetInputs]:
    """Transformer: SCALE's architecture from random init, supervised, on the videos at ``train_pos``."""
    from vssl.aggregate import ScaleModel

    arch, d = cfg.architecture(), features.shape[-1]
    return _fit_set(lambda: ScaleModel(arch, d), False, features, boxes, labels, train_pos, num_classes, cfg,
                    advance, train_view)


def train_finetune(pretrained: nn.Module, width: int, features: np.ndarray, boxes: np.ndarray,
                   labels: np.ndarray, train_pos: np.ndarray, num_classes: int,
                   cfg: FinetuneConfig = FinetuneConfig(), advance=None,
                   train_view: TrainView | None = None) -> tuple[FitResult, SetInputs]:
    """SCALE_ft: a copy of the pretrained SCALE predictor (``width`` wide), fine-tuned with the head."""
    if pretrained.cfg.width != width:
        raise VsslError(f"the pretrained SCALE model is {pretrained.cfg.width} wide, not {width}")
    return _fit_set(lambda: copy.deepcopy(pretrained), True, features, boxes, labels, train_pos, num_classes,
                    cfg, advance, train_view)
