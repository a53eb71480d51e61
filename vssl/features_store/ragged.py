"""Clips of many videos in memory when their number varies per video: flat rows plus offsets.

A ragged view (``dense:S``) may hold 3 clips of one video and 7000 of the next; padding every
video to the longest would multiply memory by that ratio. :class:`RaggedClips` keeps the real
clips only, video after video (the in-memory twin of the store's ragged layout and of
:meth:`~vssl.features_store.views.ViewRows.flat`), and pads on demand, a batch at a time, grouped
by length (:func:`padded_batches`) so that one long film never pads a batch of short videos.
A fixed view's ``[n, K, ...]`` clips are the case of constant counts (:func:`as_ragged`, no copy),
so a consumer needs one code path for both layouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .schema import BOX_DIM


@dataclass(frozen=True)
class RaggedClips:
    """``n`` videos' clips: video i's are ``flat[offsets[i]:offsets[i + 1]]`` (``flat [R, ...]``)."""

    flat: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_counts(cls, flat: np.ndarray, counts: Sequence[int]) -> "RaggedClips":
        return cls(flat, np.concatenate(([0], np.cumsum(np.asarray(counts, np.int64)))).astype(np.int64))

    @classmethod
    def from_fixed(cls, clips: np.ndarray) -> "RaggedClips":
        """A fixed view's clips ``[n, K, ...]`` as ragged ones with constant counts ``K`` (``flat`` is
        a reshaped view of ``clips``: no copy for a contiguous array)."""
        clips = np.asarray(clips)
        n, k = clips.shape[:2]
        return cls(clips.reshape(n * k, *clips.shape[2:]), np.arange(n + 1, dtype=np.int64) * k)

    def dense(self) -> "np.ndarray | RaggedClips":
        """``[n, K, ...]`` (``flat`` reshaped: no copy) when every video has the same K clips, as a
        fixed view's rows read; else these clips as they are. The inverse of :meth:`from_fixed`: a
        reader keeps one path for both layouts and still hands a fixed view's clips out as an array."""
        counts = self.counts
        if not len(counts) or (counts != counts[0]).any():
            return self
        return self.flat.reshape(len(counts), int(counts[0]), *self.flat.shape[1:])

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def dtype(self) -> np.dtype:
        return self.flat.dtype

    @property
    def shape(self) -> tuple:
        """``(n, most clips, *row shape)``: what a padded copy would be (``shape[-1]`` is D)."""
        return (len(self), int(self.counts.max(initial=0)), *self.flat.shape[1:])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """Flat row indices of the clips of videos ``positions``, video after video."""
        positions = np.asarray(positions, np.int64).reshape(-1)
        counts = self.counts[positions]
        starts = np.repeat(self.offsets[positions] - np.cumsum(counts) + counts, counts)
        return starts + np.arange(int(counts.sum()))

    def __getitem__(self, positions) -> "RaggedClips":
        """The videos ``positions`` (an index array, in its order) as a new :class:`RaggedClips`."""
        positions = np.asarray(positions, np.int64).reshape(-1)
        return RaggedClips.from_counts(self.flat[self.rows(positions)], self.counts[positions])

    def padded(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[b, W, ...]`` zero-padded to the most clips among videos ``positions``, and the mask of
        real clips ``[b, W]``."""
        positions = np.asarray(positions, np.int64).reshape(-1)
        counts = self.counts[positions]
        width = int(counts.max(initial=0))
        mask = np.arange(width)[None, :] < counts[:, None]
        out = np.zeros((len(positions), width, *self.flat.shape[1:]), self.flat.dtype)
        out[mask] = self.flat[self.rows(positions)]
        return out, mask

    def mean(self) -> np.ndarray:
        """Per-video mean over its clips, ``[n, ...]`` float32 (float64 sums; a video without clips: 0)."""
        return segment_mean(self.flat.astype(np.float64), self.counts).astype(np.float32)


def as_ragged(clips: "np.ndarray | RaggedClips") -> RaggedClips:
    """``clips`` as :class:`RaggedClips`: a fixed view's ``[n, K, ...]`` array is the ragged case
    with constant counts, so a consumer has one code path for both layouts."""
    return clips if isinstance(clips, RaggedClips) else RaggedClips.from_fixed(clips)


def token_means(clips: np.ndarray) -> np.ndarray:
    """``[c, *clip_shape]`` -> ``[c, D]`` float32: a clip of one vector as it is, a token view's clip (a
    grid of tokens) as the mean of its tokens: the one vector per clip that retrieval, search and the
    report's map compare (one function, so they agree bit for bit)."""
    clips = np.asarray(clips)
    if clips.ndim < 2:
        raise ValueError(f"clips must be [c, D] or [c, tokens..., D], got shape {tuple(clips.shape)}")
    if clips.ndim == 2:
        return clips.astype(np.float32)
    return clips.reshape(len(clips), -1, clips.shape[-1]).astype(np.float32).mean(axis=1)


def segment_mean(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean of each run of ``counts[i]`` consecutive rows of ``rows`` (0 for an empty run)."""
    counts = np.asarray(counts, np.int64)
    sums = np.zeros((len(counts), *rows.shape[1:]), rows.dtype)
    real = counts > 0
    if real.any():                                        # reduceat over the non-empty runs only
        starts = (np.cumsum(counts) - counts)[real]
        sums[real] = np.add.reduceat(rows, starts, axis=0)
    return sums / np.maximum(counts, 1).reshape(-1, *([1] * (rows.ndim - 1)))


def padded_batches(lengths: Sequence[int], batch_size: int, clips_per_item: int = 64) -> list[list[int]]:
    """Items (by position) grouped shortest first into batches of at most ``batch_size`` items and
    ``batch_size x clips_per_item`` padded clips, so a long video never pads a batch of short ones
    (one item alone may exceed the budget: it is never split here)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    budget, out, group = batch_size * clips_per_item, [], []
    for i in order:                                       # ascending: the newest item is the longest
        if group and (len(group) >= batch_size or (len(group) + 1) * lengths[i] > budget):
            out.append(group)
            group = []
        group.append(i)
    return out + ([group] if group else [])


def iter_clips(view, rows: np.ndarray, batch_size: int = 256):
    """Videos ``rows`` of a view read in batches of similar length (:func:`padded_batches`): yields
    (positions in ``rows``, their clips, their boxes) as :class:`RaggedClips`, so reading a long
    film never pads a batch of short videos to its length."""
    rows = np.asarray(rows, np.int64)
    for group in padded_batches(view.counts(rows).tolist(), batch_size):
        f, b, offsets = view.read(rows[group]).flat()
        yield np.asarray(group, np.int64), RaggedClips(f, offsets), RaggedClips(b, offsets)


def read_clips(view, rows: np.ndarray, batch_size: int = 256) -> tuple[RaggedClips, RaggedClips]:
    """Every clip and box of videos ``rows`` of a view, in the order of ``rows`` (no rows: no clips,
    each still of the view's ``clip_shape``, so a consumer sees the same trailing shape)."""
    feats: list = [None] * len(rows)
    boxes: list = [None] * len(rows)
    for group, f, b in iter_clips(view, rows, batch_size):
        for k, j in enumerate(group.tolist()):
            feats[j] = f.flat[f.offsets[k]:f.offsets[k + 1]]
            boxes[j] = b.flat[b.offsets[k]:b.offsets[k + 1]]
    counts = [len(x) for x in feats]
    if not rows.size:
        return (RaggedClips.from_counts(np.zeros((0, *view.clip_shape), view.dtype), []),
                RaggedClips.from_counts(np.zeros((0, BOX_DIM), np.float32), []))
    return RaggedClips.from_counts(np.concatenate(feats), counts), RaggedClips.from_counts(np.concatenate(boxes), counts)
