"""Batching of probe inputs: clip-level samples (ensembled per video) and whole clip sets.

Features stay in memory in their stored dtype (float16 by default: half the memory of a
float32 copy at Kinetics scale) and are converted per minibatch.

With a :class:`~vssl.probe.data.TrainView` the minibatches come from it, each video giving a
fresh random subset of ``clips`` of its clips (a new draw every epoch for clip heads, every
step for set models: released SCALE's ``split_in_half``, src/train.py:74-87, used per step in
src/eval.py:88); :meth:`predict`, so selection and test, reads the evaluation view.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from vssl.device import autocast
from vssl.features_store.ragged import RaggedClips, as_ragged, padded_batches, segment_mean

from .data import TrainView
from .resident import ResidentArrays, upload
from .task import task_of, torch_labels


def random_clips(n: int, available: int, keep: int, gen: torch.Generator) -> np.ndarray:
    """For each of ``n`` videos, ``keep`` distinct clip indices out of ``available``, in random order."""
    return torch.rand(n, available, generator=gen).argsort(dim=1)[:, :keep].numpy()


_to = upload  # host rows that are built per batch (padded sets, random picks): uploaded as they are


class ClipInputs:
    """One sample per clip with its video's label; a video's score is the mean of its clips'
    softmax outputs (SCALE §4.1's linear baseline: per-clip heads ensembled over the clips).

    A fixed view's ``[n, K, D]`` clips are held as the ragged case with constant counts
    (:func:`~vssl.features_store.ragged.as_ragged`): one code path for both layouts.
    """

    def __init__(self, features: np.ndarray | RaggedClips, labels: np.ndarray, eval_block: int = 256,
                 train_view: TrainView | None = None):
        self.clips = as_ragged(features)          # [n, K, D] held as constant counts, or a ragged view's
        self.labels = torch_labels(labels)        # class indices, multi-hot or values (.task)
        self.train_view = train_view
        # the clips training reads: the training view's when given, else the evaluated ones (one
        # object for the instance's life: resident copies are keyed by it)
        self.train_clips = self.clips if train_view is None else as_ragged(train_view.features)
        self.resident = ResidentArrays()          # features gathered on the device (resident.py)
        self.eval_block = eval_block

    @property
    def samples_per_video(self) -> int:
        """Clips a training video gives an epoch: the training view's draw, else the most it holds."""
        return self.train_view.clips if self.train_view is not None else self.clips.shape[1]

    def num_samples(self, positions: np.ndarray) -> int:
        """Clips an epoch over videos ``positions`` trains on: their clips, or the clips drawn per
        video of the training view."""
        if self.train_view is None:
            return int(self.clips.counts[positions].sum())
        return len(positions) * self.train_view.clips

    def clip_rows(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every training clip of the videos ``positions`` as rows ``[m, D]`` (stored dtype: all
        clips of the training view, or of the evaluated view) and each row's label."""
        clips = self.train_clips
        return clips.flat[clips.rows(positions)], np.repeat(self.labels[positions], clips.counts[positions], 0)

    def _epoch_rows(self, positions: np.ndarray, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """An epoch's samples in random order: (flat row, video position) of every clip of the
        videos, or of this epoch's random subset of each video's clips in the training view."""
        clips = self.train_clips
        if self.train_view is None:
            rows, video = clips.rows(positions), np.repeat(positions, clips.counts[positions])
        else:                                     # a fixed view: K clips per video, ``clips`` drawn
            k = int(clips.counts[0]) if len(clips) else 0
            chosen = positions[:, None] * k + random_clips(len(positions), k, self.train_view.clips, gen)
            rows, video = chosen.reshape(-1), np.repeat(positions, self.train_view.clips)
        order = torch.randperm(len(rows), generator=gen).numpy()
        return rows[order], video[order]

    def batches(self, positions: np.ndarray, batch_size: int, gen: torch.Generator,
                device: torch.device) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
        flat = self.train_clips.flat
        rows, video = self._epoch_rows(positions, gen)
        for s in batch_starts(len(rows), batch_size):
            keep = np.argsort(rows[s:s + batch_size], kind="stable")   # sorted gathers are faster
            r, v = rows[s:s + batch_size][keep], video[s:s + batch_size][keep]
            yield (self.resident.gather(flat, r, device),), labels_on(self.labels[v], device)

    def predict(self, model: nn.Module, positions: np.ndarray, device: torch.device,
                precision: str = "fp32") -> np.ndarray:
        """A video's score: the mean of its clips' softmax (sigmoid, value) outputs, ``[n, G, C]``
        (float64 sums, in blocks of rows bounded however long the videos)."""
        with torch.no_grad():       # a block, not the decorator: mutmut skips decorated functions (docs/MUTATION.md)
            model.eval()
            clips, block = self.clips, self.eval_block * 64
            rows, counts = clips.rows(positions), clips.counts[positions]
            video = torch.from_numpy(np.repeat(np.arange(len(positions)), counts))
            sums = None
            for s in range(0, len(rows), block):
                with autocast(device, precision):
                    logits = model(self.resident.gather(clips.flat, rows[s:s + block], device))
                probs = task_of(self.labels).activate(logits.float()).cpu()
                if sums is None:
                    sums = torch.zeros((len(positions), *probs.shape[1:]), dtype=torch.float64)
                sums.index_add_(0, video[s:s + block], probs.double())
            model.train()
            if sums is None:
                return np.zeros((0, 0, 0), dtype=np.float32)
            divisor = np.maximum(counts, 1).reshape(-1, *([1] * (sums.ndim - 1)))
            return (sums.numpy() / divisor).astype(np.float32)


class SetInputs:
    """One sample per video: all its clips (and their boxes) go through a set model together.

    ``per_clip``: the model scores every clip (a head on [C_i ⊕ SET], SCALE §4.1) and returns
    logits ``[B*K, G, C]``, clip after clip of each video; training then gives each clip its
    video's label (cross-entropy per clip, as the per-clip linear probe and the released
    ``LinearOnTop`` train) and a video's score is the mean of its clips' softmaxes. Otherwise
    the model returns one ``[B, G, C]`` per video (a head on the CLS output).

    A fixed view is the ragged case with constant counts (:func:`~vssl.features_store.ragged.as_ragged`):
    a batch of sets is padded to its longest, and the model gets the mask of real clips only when
    some clip is padding (a batch of full sets, as every batch of a fixed view, needs none).
    """

    def __init__(self, features: np.ndarray | RaggedClips, boxes: np.ndarray | RaggedClips, labels: np.ndarray,
                 eval_block: int = 128, per_clip: bool = False, train_view: TrainView | None = None):
        self.features, self.boxes = features, boxes
        self.clips, self.clip_boxes = as_ragged(features), as_ragged(boxes)
        self.labels = torch_labels(labels)
        self.train_view = train_view
        self.samples_per_video = 1             # a minibatch counts videos, whatever the head
        self.resident = ResidentArrays()
        self.eval_block = eval_block
        self.per_clip = per_clip

    def like(self, features: np.ndarray | RaggedClips, boxes: np.ndarray | RaggedClips,
             labels: np.ndarray) -> "SetInputs":
        """Other videos (e.g. the test split) batched and scored the same way."""
        return SetInputs(features, boxes, labels, self.eval_block, self.per_clip)

    def batches(self, positions, batch_size, gen, device):
        order = positions[torch.randperm(len(positions), generator=gen).numpy()]
        for s in batch_starts(len(order), batch_size):
            r = np.sort(order[s:s + batch_size])
            # per clip: each clip carries its video's label (padding is no sample: SetGrid drops it)
            k = (self.clips.counts[r] if self.train_view is None else self.train_view.clips) if self.per_clip else 1
            y = np.repeat(self.labels[r], k, axis=0)
            yield self._sets(r, gen, device), labels_on(y, device)

    def _sets(self, r: np.ndarray, gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The clip sets of videos ``r``: every clip (:meth:`_padded`), or a fresh subset of the
        training view's."""
        tv = self.train_view
        if tv is None:
            return self._padded(r, device)
        pick = random_clips(len(r), tv.features.shape[1], tv.clips, gen)
        return _to(tv.features[r[:, None], pick], device), _to(tv.boxes[r[:, None], pick], device)

    def _padded(self, r: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Features ``[b, W, D]`` and boxes of videos ``r`` padded to the most clips among them (gathered
        on the device where resident), with the mask of real clips ``[b, W]`` when some are padding."""
        counts = self.clips.counts[r]
        width = int(counts.max(initial=0))
        mask = np.arange(width)[None, :] < counts[:, None]
        full = bool(mask.all())
        valid = None if full else torch.from_numpy(mask).to(device)
        sets = tuple(self._pad(clips, r, width, valid, device) for clips in (self.clips, self.clip_boxes))
        return sets if full else (*sets, valid)

    def _pad(self, clips: RaggedClips, r: np.ndarray, width: int, valid: torch.Tensor | None,
             device: torch.device) -> torch.Tensor:
        rows = self.resident.gather(clips.flat, clips.rows(r), device)
        if valid is None:
            return rows.reshape(len(r), width, *rows.shape[1:])
        out = rows.new_zeros((len(r), width, *rows.shape[1:]))
        out[valid] = rows
        return out

    def predict(self, model, positions, device, precision: str = "fp32"):
        """Videos batched by length (:func:`padded_batches`); per clip, a video's score is the mean of
        its clips' softmax outputs."""
        with torch.no_grad():       # a block, not the decorator: mutmut skips decorated functions (docs/MUTATION.md)
            model.eval()
            out: list[np.ndarray | None] = [None] * len(positions)
            counts = self.clips.counts[positions]
            for group in padded_batches(counts.tolist(), self.eval_block):
                with autocast(device, precision):
                    logits = model(*self._padded(positions[group], device))
                probs = task_of(self.labels).activate(logits.float()).cpu().numpy()
                if self.per_clip:                           # [clips, G, C] -> mean over each video's
                    probs = segment_mean(probs.astype(np.float64), counts[group]).astype(np.float32)
                for j, p in zip(group, probs):
                    out[j] = p
            model.train()
            return np.stack(out)


def batch_starts(n: int, batch_size: int) -> range:
    """Batch starts; a last batch of a single sample is dropped (batch norm cannot train on it)."""
    stop = n - 1 if n > batch_size and n % batch_size == 1 else n
    return range(0, stop, batch_size)


def labels_on(y: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(y)).to(device, non_blocking=device.type == "cuda")
