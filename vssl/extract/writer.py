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
        # set by the thread as it ends: Thread.join cannot be waited on again after a Ctrl-C interrupted
        # it (Python 3.11 then takes the thread for finished, bpo-45274)
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vssl-store-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
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
        finally:
            self._ended.set()

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
        self._finish()
        self._raise_pending()

    def _finish(self) -> None:
        """Let the queued writes finish, then end the thread.

        A Ctrl-C while waiting does not cut the chunk being written short: the thread is a daemon,
        killed wherever it is when the interpreter exits, which leaves that chunk to be redone by the
        rerun (or aborts in native code). The wait goes on, then the interrupt goes up; a second
        Ctrl-C stops waiting (the store's write order keeps even that consistent).
        """
        try:
            self._calls.put(_STOP)
            self._ended.wait()
        except KeyboardInterrupt:
            self._calls.put(_STOP)  # again, in case the first was not queued; the thread ends at the first
            self._ended.wait()
            raise

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        # the run is failing already: let the queued writes finish (they are whole chunks), keep its error
        self._finish()
