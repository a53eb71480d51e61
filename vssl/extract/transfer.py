"""Host <-> device traffic of extraction batches, so that neither the GPU nor the main thread waits on a copy.

On CUDA (#17): a batch spanning several videos is joined into page-locked memory, because a
``non_blocking`` copy from ordinary memory is synchronous; the pinned blocks come from torch's caching
host allocator, which hands a block out again only once the copies that read it have finished, so it
is the reusable buffer without a hand-kept event per slot. Uploads run on their own stream, so the
next batch's copy overlaps the current forward; results come back through a pinned copy and an event,
and the batcher reads them one batch later (``Batcher`` in embedding.py), when the GPU is already busy
with the next batch. On CPU every step is the plain synchronous one, through the same calls, so the
CPU tests run the same sequencing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch


@dataclass
class HostCopy:
    """A batch's features on their way to the host; :meth:`numpy` waits for them."""

    tensor: torch.Tensor
    ready: Any = None  # a torch.cuda.Event recorded after the copy, or None when already on the host

    def numpy(self) -> np.ndarray:
        if self.ready is not None:
            self.ready.synchronize()
        return self.tensor.numpy()


class Transfers:
    """The copies of one extraction run on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.upload_stream = torch.cuda.Stream(device) if self.cuda else None

    def join(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """One batch from the clip slices of consecutive videos (pinned on CUDA)."""
        if len(parts) == 1:
            return parts[0]
        if not self.cuda:
            return torch.cat(parts)
        out = torch.empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype,
                          pin_memory=True)
        return torch.cat(parts, out=out)

    def upload(self, clips: torch.Tensor) -> torch.Tensor:
        """``clips`` on the device; on CUDA copied on the upload stream, ordered before later compute."""
        if not self.cuda:
            return clips.to(self.device)
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.upload_stream):
            on_device = clips.to(self.device, non_blocking=True)
        compute.wait_stream(self.upload_stream)
        on_device.record_stream(compute)  # the allocator must not reuse it before the forward is done
        return on_device

    def download(self, features: torch.Tensor) -> HostCopy:
        """float32 host copy of ``features``; on CUDA asynchronous, into pinned memory."""
        features = features.float()
        if not self.cuda:
            return HostCopy(features)
        host = torch.empty(features.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(features, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(self.device))
        return HostCopy(host, ready)
