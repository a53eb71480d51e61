"""Probe features held where the heads train: gathered on the device, not on the host each step.

A trained probe runs hundreds of epochs over the same few hundred MB of features. Gathering each
minibatch on the host and uploading it makes every step wait on the host and the bus (#17); stage
two keeps its features resident on the GPU for the same reason (``aggregate/data.py``). Here an
array is uploaded once, in its stored dtype, when it fits in ``RESIDENT_FRACTION`` of the free
device memory, and a step's gather is one device-side index; arrays that do not fit are gathered
on the host and uploaded from pinned memory, as before. On the CPU nothing moves: numpy gathers
float16 rows about twice as fast as torch's indexing (0.10 vs 0.22 ms for 1,024 rows of 768).
"""

from __future__ import annotations

import numpy as np
import torch

from vssl.aggregate.data import MEMORY_FRACTION, free_memory_bytes

#: share of the device's free memory the resident features of one probe may take
RESIDENT_FRACTION = MEMORY_FRACTION


def upload(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """float32 copy of host rows ``x`` on ``device`` (through pinned memory on CUDA)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True).float()
    return t.float()


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` on ``device`` in its own dtype (float16 features stay half the size)."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


class ResidentArrays:
    """The arrays one probe's batches gather from, each resident on a device once it is asked for."""

    def __init__(self) -> None:
        self._on: dict[tuple[int, torch.device], tuple[np.ndarray, torch.Tensor | None]] = {}

    def _resident(self, array: np.ndarray, device: torch.device) -> torch.Tensor | None:
        key = (id(array), device)
        if key not in self._on:  # the array is kept with its copy, so its id cannot be reused meanwhile
            if device.type != "cuda":  # the host already holds it: numpy's gather is the fast one here
                copy = None
            elif array.nbytes <= RESIDENT_FRACTION * free_memory_bytes(device):
                copy = to_device(array, device)
            else:
                copy = None
            self._on[key] = (array, copy)
        return self._on[key][1]

    def gather(self, array: np.ndarray, index: np.ndarray, device: torch.device, rows: bool = False) -> torch.Tensor:
        """``array[index]`` as float32 on ``device``: a device-side gather when resident. ``rows``:
        index the array's rows across its leading axes (``array.reshape(-1, D)[index]``)."""
        on_device = self._resident(array, device)
        if on_device is None:
            return upload((array.reshape(-1, array.shape[-1]) if rows else array)[index], device)
        if rows:
            on_device = on_device.view(-1, on_device.shape[-1])
        return on_device[torch.from_numpy(np.asarray(index, dtype=np.int64)).to(on_device.device)].float()

    def is_resident(self, array: np.ndarray, device: torch.device) -> bool:
        return self._resident(array, device) is not None
