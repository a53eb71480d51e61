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
from vssl.features_store.ragged import RaggedClips, padded_batches, segment_mean

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
    """

    def __init__(self, features: np.ndarray | RaggedClips, labels: np.ndarray, eval_block: int = 256,
                 train_view: TrainView | None = None):
        self.features = features                  # [n, K, D], or a ragged view's RaggedClips
        self.labels = torch_labels(labels)        # class indices, multi-hot or values (.task)
        self.train_view = train_view
        self.resident = ResidentArrays()          # features gathered on the device (resident.py)
        self.samples_per_video = features.shape[1] if train_view is None else train_view.clips
        self.eval_block = eval_block

    def num_samples(self, positions: np.ndarray) -> int:
        """Clips an epoch over videos ``positions`` trains on (a ragged view: their real clips)."""
        if self.train_view is None and isinstance(self.features, RaggedClips):
            return int(self.features.counts[positions].sum())
        return len(positions) * self.samples_per_video

    def clip_rows(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every training clip of the videos ``positions`` as rows ``[m, D]`` (stored dtype: all
        clips of the training view, or a ragged view's real clips) and each row's label."""
        if self.train_view is None and isinstance(self.features, RaggedClips):
            clips = self.features
            return clips.flat[clips.rows(positions)], np.repeat(self.labels[positions], clips.counts[positions], 0)
        source = self.features if self.train_view is None else self.train_view.features
        k = source.shape[1]
        return source[positions].reshape(-1, source.shape[-1]), np.repeat(self.labels[positions], k, axis=0)

    def batches(self, positions: np.ndarray, batch_size: int, gen: torch.Generator,
                device: torch.device) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
        if self.train_view is None and isinstance(self.features, RaggedClips):
            yield from self._ragged_batches(positions, batch_size, gen, device)
            return
        source = self.features if self.train_view is None else self.train_view.features
        k = source.shape[1]                       # clips stored per video in the view trained on
        if self.train_view is None:
            order = torch.randperm(len(positions) * k, generator=gen).numpy()
            rows = positions[order // k] * k + order % k
        else:                                     # this epoch's random subset of each video's clips
            chosen = positions[:, None] * k + random_clips(len(positions), k, self.train_view.clips, gen)
            rows = chosen.reshape(-1)[torch.randperm(chosen.size, generator=gen).numpy()]
        for s in _starts(len(rows), batch_size):
            r = np.sort(rows[s:s + batch_size])      # sorted gathers are faster; order inside a batch is irrelevant
            yield (self.resident.gather(source, r, device, rows=True),), _to_labels(self.labels[r // k], device)

    def _ragged_batches(self, positions, batch_size, gen, device):
        """Every real clip of the videos, shuffled, each with its video's label (a ragged view)."""
        clips = self.features
        rows = clips.rows(positions)
        video = np.repeat(positions, clips.counts[positions])
        order = torch.randperm(len(rows), generator=gen).numpy()
        rows, video = rows[order], video[order]
        for s in _starts(len(rows), batch_size):
            keep = np.argsort(rows[s:s + batch_size], kind="stable")   # sorted gathers are faster
            r, v = rows[s:s + batch_size][keep], video[s:s + batch_size][keep]
            yield (self.resident.gather(clips.flat, r, device),), _to_labels(self.labels[v], device)

    def predict(self, model: nn.Module, positions: np.ndarray, device: torch.device,
                precision: str = "fp32") -> np.ndarray:
        with torch.no_grad():       # a block, not the decorator: mutmut skips decorated functions (docs/MUTATION.md)
            if isinstance(self.features, RaggedClips):
                return self._predict_ragged(model, positions, device, precision)
            model.eval()
            out = []
            for s in range(0, len(positions), self.eval_block):
                x = self.resident.gather(self.features, positions[s:s + self.eval_block], device)
                b, k, d = x.shape
                with autocast(device, precision):
                    logits = model(x.reshape(b * k, d))
                probs = task_of(self.labels).activate(logits.float())
                out.append(probs.reshape(b, k, *probs.shape[1:]).mean(1).cpu().numpy())
            model.train()
            return np.concatenate(out) if out else np.zeros((0, 0, 0), dtype=np.float32)


    def _predict_ragged(self, model, positions, device, precision: str) -> np.ndarray:
        """A video's score: the mean of its real clips' softmax (sigmoid, value) outputs (never a padding row)."""
        with torch.no_grad():       # a block, not the decorator: mutmut skips decorated functions (docs/MUTATION.md)
            model.eval()
            clips = self.features
            rows = clips.rows(positions)
            parts = []
            for s in range(0, len(rows), self.eval_block * 64):    # bounded, however long the videos
                with autocast(device, precision):
                    logits = model(self.resident.gather(clips.flat, rows[s:s + self.eval_block * 64], device))
                parts.append(task_of(self.labels).activate(logits.float()).cpu().numpy())
            model.train()
            if not parts:
                return np.zeros((0, 0, 0), dtype=np.float32)
            return segment_mean(np.concatenate(parts).astype(np.float64), clips.counts[positions]).astype(np.float32)


class SetInputs:
    """One sample per video: all its clips (and their boxes) go through a set model together.

    ``per_clip``: the model scores every clip (a head on [C_i ⊕ SET], SCALE §4.1) and returns
    logits ``[B*K, G, C]``, clip after clip of each video; training then gives each clip its
    video's label (cross-entropy per clip, as the per-clip linear probe and the released
    ``LinearOnTop`` train) and a video's score is the mean of its clips' softmaxes. Otherwise
    the model returns one ``[B, G, C]`` per video (a head on the CLS output).
    """

    def __init__(self, features: np.ndarray, boxes: np.ndarray, labels: np.ndarray, eval_block: int = 128,
                 per_clip: bool = False, train_view: TrainView | None = None):
        self.features, self.boxes = features, boxes
        self.labels = torch_labels(labels)
        self.train_view = train_view
        self.samples_per_video = 1             # a minibatch counts videos, whatever the head
        self.resident = ResidentArrays()
        self.eval_block = eval_block
        self.per_clip = per_clip

    def like(self, features: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> "SetInputs":
        """Other videos (e.g. the test split) batched and scored the same way."""
        return SetInputs(features, boxes, labels, self.eval_block, self.per_clip)

    def batches(self, positions, batch_size, gen, device):
        order = positions[torch.randperm(len(positions), generator=gen).numpy()]
        ragged = self.train_view is None and isinstance(self.features, RaggedClips)
        clips = self.features.shape[1] if self.train_view is None else self.train_view.clips
        for s in _starts(len(order), batch_size):
            r = np.sort(order[s:s + batch_size])
            # per clip: each real clip carries its video's label (padding is no sample: SetGrid drops it)
            k = (self.features.counts[r] if ragged else clips) if self.per_clip else 1
            y = np.repeat(self.labels[r], k, axis=0)
            yield self._sets(r, gen, device), _to_labels(y, device)

    def _sets(self, r: np.ndarray, gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The clip sets of videos ``r``: every clip, or a fresh subset of the training view's.
        A ragged view's sets are padded to the longest in ``r``, with the mask of real clips."""
        tv = self.train_view
        if tv is None and isinstance(self.features, RaggedClips):
            f, valid = self.features.padded(r)
            b, _ = self.boxes.padded(r)
            return _to(f, device), _to(b, device), torch.from_numpy(valid).to(device)
        if tv is None:
            return self.resident.gather(self.features, r, device), self.resident.gather(self.boxes, r, device)
        pick = random_clips(len(r), tv.features.shape[1], tv.clips, gen)
        return _to(tv.features[r[:, None], pick], device), _to(tv.boxes[r[:, None], pick], device)

    def predict(self, model, positions, device, precision: str = "fp32"):
        with torch.no_grad():       # a block, not the decorator: mutmut skips decorated functions (docs/MUTATION.md)
            if isinstance(self.features, RaggedClips):
                return self._predict_ragged(model, positions, device, precision)
            model.eval()
            out = []
            for s in range(0, len(positions), self.eval_block):
                r = positions[s:s + self.eval_block]
                with autocast(device, precision):
                    logits = model(self.resident.gather(self.features, r, device),
                                   self.resident.gather(self.boxes, r, device))
                probs = task_of(self.labels).activate(logits.float())
                if self.per_clip:                           # [B*K, G, C] -> mean over each video's K clips
                    probs = probs.reshape(len(r), -1, *probs.shape[1:]).mean(1)
                out.append(probs.cpu().numpy())
            model.train()
            return np.concatenate(out)


    def _predict_ragged(self, model, positions, device, precision: str) -> np.ndarray:
        """Videos batched by length (:func:`padded_batches`), each set with its padding mask; per clip,
        a video's score is the mean of its real clips' softmax outputs."""
        model.eval()
        out: list[np.ndarray | None] = [None] * len(positions)
        counts = self.features.counts[positions]
        for group in padded_batches(counts.tolist(), self.eval_block):
            r = positions[group]
            f, valid = self.features.padded(r)
            b, _ = self.boxes.padded(r)
            with autocast(device, precision):
                logits = model(_to(f, device), _to(b, device), torch.from_numpy(valid).to(device))
            probs = task_of(self.labels).activate(logits.float()).cpu().numpy()
            if self.per_clip:                           # [real clips, G, C] -> mean over each video's
                probs = segment_mean(probs.astype(np.float64), counts[group]).astype(np.float32)
            for j, p in zip(group, probs):
                out[j] = p
        model.train()
        return np.stack(out)


def _starts(n: int, batch_size: int) -> range:
    """Batch starts; a last batch of a single sample is dropped (batch norm cannot train on it)."""
    stop = n - 1 if n > batch_size and n % batch_size == 1 else n
    return range(0, stop, batch_size)


def _to_labels(y: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(y)).to(device, non_blocking=device.type == "cuda")
