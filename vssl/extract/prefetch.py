"""Where decoded videos come from: DataLoader worker processes, or one decode-ahead thread.

With ``--workers 0`` (the default) a plain DataLoader decodes each video only when the backbone
asks for it, so decoding and the model take turns and the run costs their sum. A single thread
that decodes the next videos while the model runs overlaps the two at no IPC cost: FFmpeg and
torch's kernels both run outside the GIL. Measured on EfficientNet-Lite0 (docs/PERFORMANCE.md,
"Stage one's speed goal"). ``--workers N`` keeps N decoding processes, for machines with the cores.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset

#: items decoded ahead of the one the backbone is on (bounds memory: a plan, or a part of at most
#: ``clips.PART_CLIPS`` clips)
DECODE_AHEAD = 2


def stream_ahead(stream: Iterable[Any], depth: int = DECODE_AHEAD, pin: bool = False) -> Iterator[Any]:
    """The items of ``stream`` in order, up to ``depth`` of them produced ahead by one thread.

    Extraction's stream of plans and clip parts: the bounded queue keeps memory at ``depth``
    items whatever the videos' lengths.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in stream:
                item = _pinned(item) if pin else item
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            items.put(exc)

    thread = threading.Thread(target=produce, name="vssl-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # the consumer stopped early (error, interrupt): let the producer end
        stop.set()
        while thread.is_alive():
            try:
                items.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.1)


def decoded_items(dataset: IterableDataset, workers: int, pin: bool,
                  worker_init: Callable[[int], None]) -> Iterable[Any]:
    """Items of ``dataset`` in order: ``workers`` decoding processes, or the decode-ahead thread for 0."""
    if workers == 0:
        return stream_ahead(dataset, pin=pin)
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity,
                      pin_memory=pin, worker_init_fn=worker_init, prefetch_factor=2, persistent_workers=False)


def _pinned(item: Any) -> Any:
    """Clip tensors in page-locked memory, so the copy to the GPU can be asynchronous."""
    if isinstance(item, dict):
        return {k: _pinned(v) for k, v in item.items()}
    return item.pin_memory() if isinstance(item, torch.Tensor) else item


def _identity(item: Any) -> Any:
    return item
