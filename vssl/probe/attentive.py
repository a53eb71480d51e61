"""The attentive probe: V-JEPA 2's frozen-encoder evaluation, on cached features.

A small cross-attention classifier (:class:`~vssl.probe.attentive_pooler.AttentiveClassifier`:
self-attention blocks over the tokens, then a cross-attention block from a learned query, then a
linear head) reads *all* the tokens of a video at once. As released (facebookresearch/vjepa2
``evals/video_classification_frozen``):

- the input of one view of a video is the concatenation of the tokens of its clips
  (``modelcustom/vit_encoder_multiclip.py`` ``ClipAggregation``: segment after segment); on a token
  view (``clip_shape (T'·H'·W', D)``) a clip gives its pooled grid, on a plain view (one vector per
  clip) the clip itself is one token: an attentive pool over a video's clips;
- an evaluation view ``uniform:TxS`` is T segments x S crops (clip ``t * S + s``): crop s of every
  segment is one view of the video, each view is a sample when training (``eval.py``
  ``run_one_epoch`` sums the views' losses) and a video's score is the mean of its views'
  softmaxes; a ragged view (``dense``) is one view, padded in a batch and masked (``valid``);
- the optional temporal position (``use_pos_embed``, off as released) is the fixed 1-D sin-cos
  embedding of the clip's place in the view, added to each of its tokens (released: of its frame);
- 20 heads, lr {5e-3, 3e-3, 1e-3, 3e-4, 1e-4} x wd {0.01, 0.1, 0.4, 0.8}, trained side by side in
  one pass (:class:`~vssl.probe.train.GridHeads`), AdamW, no warm-up, a per-step cosine from the
  lr to 0 with constant weight decay (``configs/eval/vitl/ssv2.yaml``: ``start_lr = lr``,
  ``final_lr 0``, ``final_weight_decay = weight_decay``, ``warmup 0``), 20 epochs, bf16.

What differs, and why (docs/REPRODUCING.md, "V-JEPA 2"): selection of the head and epoch is on a
held-out part of the training split, then the chosen head is refit on the whole split
(:func:`~vssl.probe.train.fit`), never on the test split as ``eval.py`` reports its best head; the
budget counts optimizer steps (``min_steps``) so a small split converges; augmentation is a cached
training view (``--train-view``: a fresh random subset of a video's cached clips per step) instead
of re-encoding augmented frames; biases and norms get no weight decay (:func:`vssl.optim.param_groups`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from vssl.device import autocast
from vssl.errors import VsslError
from vssl.features_store.ragged import RaggedClips, as_ragged

from .data import TrainView
from .inputs import batch_starts, labels_on, random_clips
from .resident import ResidentArrays
from .task import task_of, torch_labels
from .train import FitResult, GridHeads, TrainConfig, fit, probe_precision

#: tokens one evaluation batch holds at most (samples x padded tokens), so a long film is scored alone
EVAL_TOKENS = 1 << 15


@dataclass(frozen=True)
class AttentiveConfig(TrainConfig):
    """The released attentive probe: its 20-head grid, schedule and architecture.

    ``num_heads`` must divide the feature width: on a width it does not divide the probe uses the
    largest divisor of the width below it (:func:`heads_for`; recorded as ``heads_used``).
    ``checkpoint`` (``--attentive-from``): evaluate this released probe instead of training one
    (``checkpoint_head``: which of a vjepa2 checkpoint's heads; its heads count is the released 16,
    a transformers checkpoint's is its config's).
    """

    lrs: tuple[float, ...] = (5e-3, 3e-3, 1e-3, 3e-4, 1e-4)
    weight_decays: tuple[float, ...] = (0.01, 0.1, 0.4, 0.8)
    epochs: int = 20
    batch_size: int = 256          # released: 4 videos per GPU on 64 GPUs (ssv2.yaml)
    warmup: float = 0.0            # released: start_lr = lr, no warm-up
    depth: int = 4                 # probe blocks: depth - 1 self-attention, then the cross-attention one
    num_heads: int = 16
    mlp_ratio: float = 4.0
    use_pos_embed: bool = False    # released default: off
    # not released: a fixed 3-D sin-cos embedding of each token's cell on the stored grid, added to it; for
    # encoders whose tokens do not carry their place (a conv net's map; measured: docs/PERFORMANCE.md)
    token_positions: bool = False
    checkpoint: str | None = None  # a released probe to evaluate (no training)
    checkpoint_head: int = 0       # which head of a vjepa2 checkpoint's list of classifiers
    # padded tokens a training micro-batch holds at most (a sample longer than that alone); a step's
    # gradients accumulate over its micro-batches, so the step is the whole batch's and only the memory
    # is the micro-batch's: 256 videos x 2 segments of a ViT-L's 1,568 tokens, times 20 heads, do not fit
    # one device (released: 4 videos per GPU on 64 GPUs)
    step_tokens: int = 4096

    def validate(self) -> None:
        super().validate()
        if self.step_tokens < 1:
            raise VsslError(f"attentive probe: step_tokens {self.step_tokens}: use at least 1")
        if self.depth < 1 or self.num_heads < 1 or self.mlp_ratio <= 0:
            raise VsslError(f"attentive probe: depth {self.depth}, num_heads {self.num_heads} and mlp_ratio "
                            f"{self.mlp_ratio}: use depth and num_heads of at least 1 and a positive mlp_ratio")


def heads_for(num_heads: int, width: int) -> int:
    """The attention heads a probe of ``width`` uses: ``num_heads`` when it divides the width, else the
    largest divisor of the width below it (a head's width must be whole; 16 heads of a 768- or
    1024-wide encoder are kept, a tiny test width of 12 gets 12)."""
    return max(h for h in range(1, min(num_heads, width) + 1) if width % h == 0)


def sincos_positions(n: int, dim: int) -> torch.Tensor:
    """The fixed 1-D sin-cos embedding ``[n, dim]`` of positions 0..n-1 (MAE's
    ``get_1d_sincos_pos_embed``, which the released ``use_pos_embed`` adds: sines of half the
    dimensions, then cosines, frequencies 1 / 10000^(2i/dim)); an odd ``dim`` ends with a zero."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / max(half, 1))
    angle = torch.arange(n, dtype=torch.float64)[:, None] * omega[None, :]
    out = torch.zeros(n, dim, dtype=torch.float64)
    out[:, :half], out[:, half:2 * half] = angle.sin(), angle.cos()
    return out.float()


def grid_positions(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """``[T'·H'·W', dim]``: each cell of a t-major token grid as three 1-D sin-cos embeddings
    (:func:`sincos_positions`) of its t, h and w, side by side in equal even parts of ``dim`` (the rest 0)."""
    part = dim // 6 * 2
    t, h, w = grid
    axes = [sincos_positions(n, part) for n in grid]
    cells = torch.cartesian_prod(torch.arange(t), torch.arange(h), torch.arange(w))
    out = torch.zeros(len(cells), dim)
    for a, table in enumerate(axes):
        out[:, a * part:(a + 1) * part] = table[cells[:, a]]
    return out


def token_clips(features: np.ndarray | RaggedClips) -> RaggedClips:
    """A view's clips as tokens: ``flat [R, T, D]`` (a plain view's clip is one token, ``T = 1``)."""
    clips = as_ragged(features)
    if clips.flat.ndim == 2:
        return RaggedClips(clips.flat[:, None, :], clips.offsets)
    if clips.flat.ndim != 3:
        raise VsslError(f"the attentive probe reads clips of one vector or of tokens [T, D]; these clips are "
                        f"{tuple(clips.flat.shape[1:])}")
    return clips


class TokenInputs:
    """The attentive probe's samples: one view of a video = the concatenated tokens of its clips.

    A fixed view of ``crops`` S gives S samples per video (crop s: clips s, S + s, 2S + s, ...), a
    ragged one a sample per video; a training view gives one per video and step, ``clips`` of its
    clips drawn afresh (kept in stored order). Tokens are held in their stored dtype and gathered
    per batch (:class:`~vssl.probe.resident.ResidentArrays`: on the device where they fit).
    """

    def __init__(self, features: np.ndarray | RaggedClips, labels: np.ndarray, crops: int = 1,
                 train_view: TrainView | None = None, pos_embed: bool = False, step_tokens: int = 4096,
                 cell_positions: torch.Tensor | None = None):
        self.clips = token_clips(features)
        self.cell_positions = cell_positions  # [tokens per clip, D] added to every clip's tokens (token_positions)
        self.step_tokens = step_tokens
        self.labels = torch_labels(labels)
        self.crops = crops
        self.train_view = train_view
        self.train_clips = None if train_view is None else token_clips(train_view.features)
        self.pos_embed = pos_embed
        self.resident = ResidentArrays()
        if crops < 1 or np.any(self.clips.counts % crops):
            raise VsslError(f"the probed view has {crops} crops per position but some videos hold a number of "
                            "clips that is not a multiple of it; re-extract the view")

    def like(self, features: np.ndarray | RaggedClips, labels: np.ndarray, crops: int) -> "TokenInputs":
        """Other videos (the test split) as samples of the same kind."""
        return TokenInputs(features, labels, crops, pos_embed=self.pos_embed, cell_positions=self.cell_positions)

    @property
    def tokens_per_clip(self) -> int:
        return int(self.clips.flat.shape[1])

    def num_samples(self, positions: np.ndarray) -> int:
        """Samples an epoch over videos ``positions`` trains on: each crop's view, or one draw per video."""
        return len(positions) * (1 if self.train_view is not None else self.crops)

    def describe(self) -> str:
        """What one sample is, for the row's params: the evaluated one, and the training one when it differs."""
        clips = "a video's clips" + (f" of one crop ({self.crops} crops averaged)" if self.crops > 1 else "")
        text = f"{self.tokens_per_clip} token(s) per clip x {clips}, concatenated"
        if self.train_view is not None:
            text += f"; training: {self.train_view.clips} random clips of {self.train_view.name}"
        return text

    # ------------------------------------------------------------------ samples

    def _view_rows(self, videos: np.ndarray, crops: np.ndarray) -> list[np.ndarray]:
        """Flat rows of each (video, crop) sample: the crop's clips in time order."""
        offsets = self.clips.offsets
        return [np.arange(offsets[v] + s, offsets[v + 1], self.crops) for v, s in zip(videos, crops)]

    def _assemble(self, flat: np.ndarray, rows: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, ...]:
        """Samples ``[b, L·T, D]`` from their clips' rows (``T`` tokens per clip), padded to the most
        clips among them with the mask of real tokens ``[b, L·T]`` when their lengths differ."""
        lengths = np.array([len(r) for r in rows])
        width, t = int(lengths.max(initial=0)), flat.shape[1]
        got = self.resident.gather(flat, np.concatenate(rows), device)            # [m, T, D] float32
        valid = None
        if (lengths == width).all():
            x = got.reshape(len(rows), width, t, -1)
        else:
            mask = torch.from_numpy(np.arange(width)[None, :] < lengths[:, None]).to(device)
            x = got.new_zeros((len(rows), width, t, got.shape[-1]))
            x[mask] = got
            valid = mask.repeat_interleave(t, dim=1)
        if self.pos_embed:
            x = x + sincos_positions(width, x.shape[-1]).to(device)[None, :, None, :]
        if self.cell_positions is not None:
            x = x + self.cell_positions.to(device)[None, None]
        x = x.reshape(len(rows), width * t, -1)
        return (x,) if valid is None else (x, valid)

    def batches(self, positions: np.ndarray, batch_size: int, gen: torch.Generator,
                device: torch.device) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
        if self.train_view is not None:
            yield from self._view_batches(positions, batch_size, gen, device)
            return
        videos, crops = np.repeat(positions, self.crops), np.tile(np.arange(self.crops), len(positions))
        order = torch.randperm(len(videos), generator=gen).numpy()
        for s in batch_starts(len(order), batch_size):
            pick = order[s:s + batch_size]
            yield (self._assemble(self.clips.flat, self._view_rows(videos[pick], crops[pick]), device),
                   labels_on(self.labels[videos[pick]], device))

    def _view_batches(self, positions: np.ndarray, batch_size: int, gen: torch.Generator,
                      device: torch.device) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
        """A step's videos, each with a fresh random subset of its training-view clips."""
        clips, draw = self.train_clips, self.train_view.clips
        k = int(clips.counts[0]) if len(clips) else 0
        order = positions[torch.randperm(len(positions), generator=gen).numpy()]
        for s in batch_starts(len(order), batch_size):
            r = order[s:s + batch_size]
            picked = np.sort(random_clips(len(r), k, draw, gen), axis=1) + r[:, None] * k
            yield self._assemble(clips.flat, list(picked), device), labels_on(self.labels[r], device)

    def micro_batches(self, xs: tuple[torch.Tensor, ...], y: torch.Tensor) -> list[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
        """A training batch in parts of at most ``step_tokens`` padded tokens (one sample at least), for
        :func:`~vssl.probe.train.step_parts` to accumulate over."""
        per = max(1, self.step_tokens // max(1, xs[0].shape[1]))
        return [(tuple(x[s:s + per] for x in xs), y[s:s + per]) for s in range(0, len(y), per)]

    def predict(self, model: nn.Module, positions: np.ndarray, device: torch.device,
                precision: str = "fp32") -> np.ndarray:
        """A video's score ``[n, G, C]``: the mean over its views of their softmax (sigmoid, value)
        outputs; views batched by length, at most :data:`EVAL_TOKENS` padded tokens a batch."""
        with torch.no_grad():       # a block, not the decorator: mutmut skips decorated functions (docs/MUTATION.md)
            model.eval()
            videos = np.repeat(np.arange(len(positions)), self.crops)
            crops = np.tile(np.arange(self.crops), len(positions))
            lengths = self.clips.counts[positions[videos]] // self.crops
            sums = None
            for group in _length_groups(lengths, self.tokens_per_clip):
                xs = self._assemble(self.clips.flat, self._view_rows(positions[videos[group]], crops[group]), device)
                with autocast(device, precision):
                    logits = model(*xs)
                probs = task_of(self.labels).activate(logits.float()).cpu().double()
                if sums is None:
                    sums = torch.zeros((len(positions), *probs.shape[1:]), dtype=torch.float64)
                sums.index_add_(0, torch.from_numpy(videos[group]), probs)
            model.train()
            if sums is None:
                return np.zeros((0, 0, 0), dtype=np.float32)
            return (sums.numpy() / self.crops).astype(np.float32)


def _length_groups(lengths: np.ndarray, tokens_per_clip: int) -> list[np.ndarray]:
    """Sample positions shortest first, in groups of at most :data:`EVAL_TOKENS` padded tokens (a
    sample longer than that alone)."""
    order = np.argsort(lengths, kind="stable")
    groups, group = [], []
    for i in order:
        if group and (len(group) + 1) * int(lengths[i]) * tokens_per_clip > EVAL_TOKENS:
            groups.append(np.asarray(group))
            group = []
        group.append(i)
    return groups + ([np.asarray(group)] if group else [])


def cell_table(cfg: AttentiveConfig, grid: tuple[int, int, int] | None, clips: RaggedClips) -> torch.Tensor | None:
    """The cell positions ``token_positions`` adds (None when off); a view without a token grid refused."""
    if not cfg.token_positions:
        return None
    if grid is None or int(np.prod(grid)) != clips.flat.shape[1]:
        raise VsslError("token_positions adds where each token of a clip lies on its grid: probe a token view "
                        "(vssl extract --tokens), or leave token_positions off")
    return grid_positions(grid, int(clips.flat.shape[-1]))


def attentive_grid(width: int, num_classes: int, cfg: AttentiveConfig):
    """A builder for :func:`~vssl.probe.train.fit`: one attentive classifier per grid point."""
    from .attentive_pooler import AttentiveClassifier

    heads = heads_for(cfg.num_heads, width)

    def build(grid):
        return GridHeads([AttentiveClassifier(width, num_classes, num_heads=heads, depth=cfg.depth,
                                              mlp_ratio=cfg.mlp_ratio) for _ in grid])
    return build


def train_attentive(features: np.ndarray | RaggedClips, labels: np.ndarray, train_pos: np.ndarray,
                    num_classes: int, cfg: AttentiveConfig = AttentiveConfig(), advance=None,
                    train_view: TrainView | None = None, crops: int = 1,
                    grid: tuple[int, int, int] | None = None) -> tuple[FitResult, TokenInputs]:
    """Train the grid of attentive probes on the videos at ``train_pos`` (on ``train_view``'s clips
    when given; selection reads ``features``) and refit the chosen one on all of them. ``grid``: the
    token view's cells, for ``token_positions``."""
    if cfg.use_pos_embed and train_view is not None and not train_view.time_ordered:
        raise VsslError(f"use_pos_embed adds each clip's place in time, but --train-view {train_view.name} stores its "
                        "clips in the order they were drawn, not in time: train on the probed view, or leave "
                        "use_pos_embed off")
    inputs = TokenInputs(features, labels, crops, train_view, cfg.use_pos_embed, cfg.step_tokens,
                         cell_table(cfg, grid, token_clips(features)))
    return fit(inputs, train_pos, attentive_grid(inputs.clips.flat.shape[-1], num_classes, cfg), cfg, advance), inputs


def released_probe(cfg: AttentiveConfig, width: int, num_classes: int) -> nn.Module:
    """The released probe of ``cfg.checkpoint`` as a grid of one head (its logits ``[B, 1, C]``)."""
    from .attentive_pooler import load_attentive

    return GridHeads([load_attentive(cfg.checkpoint, embed_dim=width, num_classes=num_classes,
                                     head=cfg.checkpoint_head)]).eval()


def evaluate_released(cfg: AttentiveConfig, inputs: TokenInputs, classes: list[str],
                      device: torch.device) -> np.ndarray:
    """Scores ``[n, C]`` of the released probe on every video of ``inputs`` (no training), column ``c`` the
    store's class ``classes[c]`` (:func:`released_order`)."""
    model = released_probe(cfg, inputs.clips.flat.shape[-1], len(classes)).to(device)
    precision = probe_precision(cfg.precision, device)
    scores = inputs.predict(model, np.arange(len(inputs.labels)), device, precision)[:, 0]
    return scores[:, released_order(cfg.checkpoint, classes)]


def released_order(checkpoint: str, classes: list[str]) -> list[int]:
    """For each of the store's classes, the released probe's output that scores it: by name where the
    checkpoint names its classes (a transformers ``id2label``), else the store's sorted classes are taken
    as the probe's class ids 0..C-1 (a vjepa2 file names none: label the videos by id, in its order)."""
    from .attentive_pooler import released_classes

    names = released_classes(checkpoint)
    if names is None:
        return list(range(len(classes)))
    missing = [c for c in classes if c not in names]
    if missing:
        raise VsslError(f"--attentive-from {checkpoint} names its {len(names)} classes (id2label) and the store's "
                        f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} are not among them; label the "
                        "videos with the probe's class names")
    return [names.index(c) for c in classes]


def chosen_head(result: FitResult) -> str:
    """The selected head of the grid in words (the report's ``head``)."""
    if result.lr is None:
        return "—"
    return f"lr {result.lr:g}, wd {result.weight_decay:g}, {result.epochs} epoch(s)"


__all__ = ["AttentiveConfig", "TokenInputs", "heads_for", "sincos_positions", "train_attentive",
           "evaluate_released", "chosen_head"]
