"""Store writes off the main thread: the main thread keeps the backbone fed while a chunk is written.

One writer thread, so the store still has one writer per chunk and chunks are written whole and in
the order they finish (DESIGN.md). The queue holds at most ``depth`` chunks, which bounds memory and
makes a slow disk slow the run down instead of filling RAM. A write that fails (disk full, read-only
store) is raised again, unchanged, on the main thread at the next ``submit`` or at ``close``, so the
command reports it as it would a write on the main thread; chunks after the failed one are not written,
and the rerun resumes from the store's done flags.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

_STOP = object()


class BackgroundWriter:
    """Runs submitted write calls one at a time, in order, on one thread."""

    def __init__(self, depth: int = 2) -> None:
        self._calls: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="vssl-store-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            call = self._calls.get()
            if call is _STOP:
                return
            if self._error is None:  # after a failure nothing more is written; the rerun redoes it
                fn, args = call
                try:
                    fn(*args)
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread unchanged
                    self._error = exc

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` (waits while ``depth`` writes are queued); raises an earlier write's error."""
        self._raise_pending()
        self._calls.put((fn, args))

    def close(self) -> None:
        """Wait for every queued write; raise the first one's error, if any."""
        self._calls.put(_STOP)
        self._thread.join()
        self._raise_pending()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        # the run is failing already: let the queued writes finish (they are whole chunks), keep its error
        self._calls.put(_STOP)
        self._thread.join()
