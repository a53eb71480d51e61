"""Where training batches come from: one resident tensor, or the store when that does not fit.

The fast path keeps the whole view (features in float16, boxes in float32) in one tensor on
the training device (the GPU when it fits) and gathers each batch by index there: no
DataLoader, no per-sample Python work. A view larger than the memory budget is read batch
by batch from the store's memory-mapped chunks on a background thread, pinned and copied
asynchronously, and gives the same batches (hence the same run) as the resident path.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch
from torch import Tensor

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


class BatchSource:
    """Batches ``(features [B,K,D], boxes [B,K,7])`` on the device for positions of ``rows``."""

    resident: bool = False

    def __init__(self, view: View, rows: np.ndarray, device: torch.device) -> None:
        self.view = view
        self.rows = np.asarray(rows, dtype=np.int64)
        self.device = device

    def __len__(self) -> int:
        return int(self.rows.size)

    def prefetch(self, positions: Tensor) -> None:  # pragma: no cover - overridden where useful
        """Hint: ``positions`` will be asked for next."""

    def get(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def close(self) -> None:
        """Release background workers."""


class ResidentSource(BatchSource):
    """The whole view in one tensor on the device; batches are index gathers."""

    resident = True

    def __init__(self, view: View, rows: np.ndarray, device: torch.device,
                 progress: Callable[[int], None] | None = None) -> None:
        super().__init__(view, rows, device)
        feats = torch.empty((len(self.rows), view.num_clips, view.dim), dtype=torch.float16
                            if view.dtype == np.float16 else torch.float32, device=device)
        boxes = torch.empty((len(self.rows), view.num_clips, BOX_DIM), dtype=torch.float32, device=device)
        step = max(1, view.chunk_videos)
        for start in range(0, len(self.rows), step):
            sel = self.rows[start:start + step]
            f, b = view.read(sel)
            feats[start:start + len(sel)] = torch.from_numpy(np.ascontiguousarray(f)).to(device)
            boxes[start:start + len(sel)] = torch.from_numpy(np.ascontiguousarray(b)).to(device)
            if progress is not None:
                progress(len(sel))
        view.release_maps()  # a sequential scan: its chunk maps are not read again
        self.features, self.boxes = feats, boxes

    def get(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        positions = positions.to(self.device, non_blocking=True)
        return self.features.index_select(0, positions), self.boxes.index_select(0, positions)


class StreamingSource(BatchSource):
    """Reads each batch from the store (memory-mapped chunks) one batch ahead on a thread."""

    def __init__(self, view: View, rows: np.ndarray, device: torch.device) -> None:
        super().__init__(view, rows, device)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vssl-batches")
        self._pending: dict[bytes, Future] = {}
        self._pin = device.type == "cuda"

    def _load(self, positions: np.ndarray) -> tuple[Tensor, Tensor]:
        f, b = self.view.read(self.rows[positions])
        feats, boxes = torch.from_numpy(np.ascontiguousarray(f)), torch.from_numpy(np.ascontiguousarray(b))
        if self._pin:
            feats, boxes = feats.pin_memory(), boxes.pin_memory()
        return feats, boxes

    def prefetch(self, positions: Tensor) -> None:
        pos = positions.cpu().numpy()
        key = pos.tobytes()
        if key not in self._pending:
            self._pending[key] = self._pool.submit(self._load, pos)

    def get(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        pos = positions.cpu().numpy()
        fut = self._pending.pop(pos.tobytes(), None)
        feats, boxes = fut.result() if fut is not None else self._load(pos)
        return feats.to(self.device, non_blocking=True), boxes.to(self.device, non_blocking=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def open_source(view: View, rows: np.ndarray, device: torch.device, max_memory_bytes: int = 0,
                progress: Callable[[int], None] | None = None) -> BatchSource:
    """Resident source when the view's rows fit the budget (``max_memory_bytes`` or half the free
    memory of the device), else the streaming source."""
    need = len(rows) * view.num_clips * (view.dim * np.dtype(view.dtype).itemsize + BOX_DIM * 4)
    budget = max_memory_bytes or int(MEMORY_FRACTION * free_memory_bytes(device))
    if need <= budget:
        return ResidentSource(view, rows, device, progress)
    return StreamingSource(view, rows, device)
