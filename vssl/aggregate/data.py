"""Stage two's feeds, where training batches come from: one resident tensor, or the store when
that does not fit. (A probe's feature *source* is another thing: :mod:`vssl.probe.sources`.)

The fast path keeps the whole view (features in float16, boxes in float32) in one tensor on
the training device (the GPU when it fits) and gathers each batch by index there: no
DataLoader, no per-sample Python work. A view larger than the memory budget is read batch
by batch from the store's memory-mapped chunks on a background thread, pinned and copied
asynchronously, and gives the same batches (hence the same run) as the resident path.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from vssl.aggregate.boxes import encode_boxes, encode_flat
from vssl.features_store import BOX_DIM, View

# Fraction of free memory the resident copy may take; the rest is left for activations.
MEMORY_FRACTION = 0.5


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's free bytes, or the host's available RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


class BatchFeed:
    """Batches (:class:`RaggedBatch`: the videos' clips as flat rows) on the device for positions of
    ``videos`` (the view's video indices).

    Boxes are handed out in the run's ``box_encoding`` (:mod:`vssl.aggregate.boxes`), applied per
    video over all its clips in the view as they are read; the store keeps them absolute.
    A fixed view is a ragged one whose videos all hold K clips: its feeds hand out the same
    batches, and :meth:`counts_of` says None (every count is K, so sets need no padding).
    """

    resident: bool = False
    #: clip counts differ by video: positions are read on the host (:meth:`counts_of`)
    ragged: bool = False

    def __init__(self, view: View, videos: np.ndarray, device: torch.device, box_encoding: str = "absolute") -> None:
        self.view = view
        self.videos = np.asarray(videos, dtype=np.int64)
        self.device = device
        self.box_encoding = box_encoding

    def __len__(self) -> int:
        return int(self.videos.size)

    def prefetch(self, positions: Tensor) -> None:  # pragma: no cover - overridden where useful
        """Hint: ``positions`` will be asked for next."""

    def get(self, positions: Tensor) -> "RaggedBatch":
        raise NotImplementedError

    def counts_of(self, positions: Tensor) -> np.ndarray | None:
        """Clips per video at ``positions`` (host array); None when every video has the view's K."""
        return None

    def close(self) -> None:
        """Release background workers."""


class ResidentFeed(BatchFeed):
    """The whole view in one tensor on the device; batches are index gathers."""

    resident = True

    def __init__(self, view: View, videos: np.ndarray, device: torch.device,
                 progress: Callable[[int], None] | None = None, box_encoding: str = "absolute") -> None:
        super().__init__(view, videos, device, box_encoding)
        feats = torch.empty((len(self.videos), view.num_clips, view.dim), dtype=torch.float16
                            if view.dtype == np.float16 else torch.float32, device=device)
        boxes = torch.empty((len(self.videos), view.num_clips, BOX_DIM), dtype=torch.float32, device=device)
        step = max(1, view.chunk_videos)
        for start in range(0, len(self.videos), step):
            sel = self.videos[start:start + step]
            f, b = view.read(sel)
            b = encode_boxes(b, box_encoding)
            feats[start:start + len(sel)] = torch.from_numpy(np.ascontiguousarray(f)).to(device)
            boxes[start:start + len(sel)] = torch.from_numpy(np.ascontiguousarray(b)).to(device)
            if progress is not None:
                progress(len(sel))
        view.release_maps()  # a sequential scan: its chunk maps are not read again
        self.features, self.boxes = feats, boxes

    def get(self, positions: Tensor) -> "RaggedBatch":
        """The whole view's clips as rows; the batch's videos start at ``position x K`` (no copy)."""
        k = self.view.num_clips
        starts = positions.to(self.device, non_blocking=True) * k
        return RaggedBatch(self.features.view(-1, self.view.dim), self.boxes.view(-1, BOX_DIM), starts)


class StreamingFeed(BatchFeed):
    """Reads each batch from the store (memory-mapped chunks) one batch ahead on a thread."""

    def __init__(self, view: View, videos: np.ndarray, device: torch.device, box_encoding: str = "absolute") -> None:
        super().__init__(view, videos, device, box_encoding)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vssl-batches")
        self._pending: dict[bytes, Future] = {}
        self._pin = device.type == "cuda"

    def _load(self, positions: np.ndarray) -> tuple[Tensor, Tensor]:
        f, b = self.view.read(self.videos[positions])
        b = encode_boxes(b, self.box_encoding)
        feats, boxes = torch.from_numpy(np.ascontiguousarray(f)), torch.from_numpy(np.ascontiguousarray(b))
        if self._pin:
            feats, boxes = feats.pin_memory(), boxes.pin_memory()
        return feats, boxes

    def prefetch(self, positions: Tensor) -> None:
        pos = positions.cpu().numpy()
        key = pos.tobytes()
        if key not in self._pending:
            self._pending[key] = self._pool.submit(self._load, pos)

    def get(self, positions: Tensor) -> "RaggedBatch":
        pos = positions.cpu().numpy()
        fut = self._pending.pop(pos.tobytes(), None)
        feats, boxes = fut.result() if fut is not None else self._load(pos)
        n, k = feats.shape[:2]
        return RaggedBatch(feats.to(self.device, non_blocking=True).view(n * k, -1),
                           boxes.to(self.device, non_blocking=True).view(n * k, -1),
                           torch.arange(n, device=self.device) * k)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class RaggedBatch:
    """Some videos of a view on the device: their clips as flat rows, video by video.

    ``features [R, D]`` and ``boxes [R, 7]`` hold at least these videos' clips (a resident feed
    hands out its whole view); video i's clips are rows ``starts[i] .. starts[i] + counts[i] - 1``
    (on a fixed view every count is K).
    """

    features: Tensor
    boxes: Tensor
    starts: Tensor

    def sets(self, idx: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The clips ``[B, 2, S, D]`` and boxes ``[B, 2, S, 7]`` of sets ``idx [B, 2, S]`` (clip
        indices within each video, :mod:`vssl.aggregate.sampling`), zero where ``valid`` is False:
        padding never carries a stored value (``valid`` None: every set is full)."""
        rows = (self.starts.to(idx.device)[:, None, None] + idx).reshape(-1)
        clips, boxes = self.features.index_select(0, rows), self.boxes.index_select(0, rows)
        if valid is not None:
            keep = valid.reshape(-1, 1)
            clips, boxes = torch.where(keep, clips, 0), torch.where(keep, boxes, 0)
        return clips.view(*idx.shape, -1), boxes.view(*idx.shape, -1)


class RaggedFeed(BatchFeed):
    """Batches of a ragged view (a variable number of clips per video) as :class:`RaggedBatch`.

    Resident: every clip of the training videos in one flat tensor on the device (no padding;
    a batch is its videos' row offsets). Streaming: each batch's videos read from the store one
    batch ahead on a thread, as :class:`StreamingFeed`. Positions are host tensors: the clip
    counts decide the batch's set sizes before anything runs on the device.
    """

    ragged = True

    def __init__(self, view: View, videos: np.ndarray, device: torch.device, resident: bool,
                 progress: Callable[[int], None] | None = None, box_encoding: str = "absolute") -> None:
        super().__init__(view, videos, device, box_encoding)
        self.resident = resident
        self.counts = view.counts(self.videos)
        self._pin = device.type == "cuda"
        if resident:
            self._load_all(progress)
        else:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vssl-batches")
            self._pending: dict[bytes, Future] = {}

    def _load_all(self, progress: Callable[[int], None] | None) -> None:
        view, total = self.view, int(self.counts.sum())
        dtype = torch.float16 if view.dtype == np.float16 else torch.float32
        self.features = torch.empty((total, view.dim), dtype=dtype, device=self.device)
        self.boxes = torch.empty((total, BOX_DIM), dtype=torch.float32, device=self.device)
        offsets = np.concatenate(([0], np.cumsum(self.counts)))
        self.starts = torch.from_numpy(offsets[:-1]).to(self.device)
        step = max(1, view.chunk_videos)
        for start in range(0, len(self.videos), step):
            f, b, offs = view.read(self.videos[start:start + step]).flat()
            b = encode_flat(b, offs, self.box_encoding)
            lo, hi = int(offsets[start]), int(offsets[min(start + step, len(self.videos))])
            self.features[lo:hi] = torch.from_numpy(np.ascontiguousarray(f)).to(self.device)
            self.boxes[lo:hi] = torch.from_numpy(np.ascontiguousarray(b)).to(self.device)
            if progress is not None:
                progress(len(self.videos[start:start + step]))

    def _load(self, positions: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        f, b, offsets = self.view.read(self.videos[positions]).flat()
        b = encode_flat(b, offsets, self.box_encoding)
        feats, boxes = torch.from_numpy(np.ascontiguousarray(f)), torch.from_numpy(np.ascontiguousarray(b))
        if self._pin:
            feats, boxes = feats.pin_memory(), boxes.pin_memory()
        return feats, boxes, torch.from_numpy(offsets[:-1])

    def prefetch(self, positions: Tensor) -> None:
        if not self.resident:
            pos = positions.cpu().numpy()
            if pos.tobytes() not in self._pending:
                self._pending[pos.tobytes()] = self._pool.submit(self._load, pos)

    def counts_of(self, positions: Tensor) -> np.ndarray:
        return self.counts[positions.cpu().numpy()]

    def get(self, positions: Tensor) -> RaggedBatch:
        if self.resident:
            return RaggedBatch(self.features, self.boxes, self.starts[positions.to(self.device)])
        pos = positions.cpu().numpy()
        fut = self._pending.pop(pos.tobytes(), None)
        feats, boxes, starts = fut.result() if fut is not None else self._load(pos)
        return RaggedBatch(feats.to(self.device, non_blocking=True), boxes.to(self.device, non_blocking=True),
                           starts.to(self.device))

    def close(self) -> None:
        if not self.resident:
            self._pool.shutdown(wait=True, cancel_futures=True)


def open_feed(view: View, videos: np.ndarray, device: torch.device, max_memory_bytes: int = 0,
                progress: Callable[[int], None] | None = None, box_encoding: str = "absolute") -> BatchFeed:
    """Resident feed when the view's rows fit the budget (``max_memory_bytes`` or half the free
    memory of the device), else the streaming feed; a ragged view's feed either way. Boxes
    come in ``box_encoding`` (the run's)."""
    clips = int(view.counts(videos).sum()) if view.num_clips is None else len(videos) * view.num_clips
    need = clips * (view.dim * np.dtype(view.dtype).itemsize + BOX_DIM * 4)
    budget = max_memory_bytes or int(MEMORY_FRACTION * free_memory_bytes(device))
    if view.num_clips is None:
        return RaggedFeed(view, videos, device, need <= budget, progress, box_encoding)
    if need <= budget:
        return ResidentFeed(view, videos, device, progress, box_encoding)
    return StreamingFeed(view, videos, device, box_encoding)
