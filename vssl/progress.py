"""The one progress display of every stage: a rich bar on stderr, or nothing when quiet.

Long work (extraction, loading a view, training, export, probe training) shows items done,
the rate, ETA and a free-text ``info`` field; ``--quiet`` silences it; results never go
through it (they go to stdout). One module so that every bar looks and behaves the same.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeRemainingColumn)


class _Silent:
    """Same calls as :class:`rich.progress.Progress`, doing nothing."""

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def __getattr__(self, name: str):  # update, advance, remove_task, ...
        return lambda *args, **kwargs: None


def make_progress(quiet: bool, transient: bool = False) -> Progress | _Silent:
    """A rich Progress with several tasks (``add_task(description, total=, info=)``)."""
    if quiet:
        return _Silent()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=Console(stderr=True), transient=transient)


class ProgressBar:
    """One task's bar: ``with ProgressBar("extract", total, quiet) as bar: bar.advance(1, info=...)``."""

    def __init__(self, description: str, total: int, quiet: bool = False, transient: bool = False) -> None:
        self.description, self.total = description, total
        self.progress = make_progress(quiet or total <= 0, transient)
        self.task = 0
        self.done = 0
        self.start = time.perf_counter()

    def __enter__(self) -> "ProgressBar":
        self.progress.__enter__()
        self.task = self.progress.add_task(self.description, total=self.total, info="")
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    @property
    def elapsed(self) -> float:
        return max(time.perf_counter() - self.start, 1e-9)

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.done += n
        self.progress.update(self.task, completed=self.done, **({} if info is None else {"info": info}))

    def expect(self, total: int) -> None:
        """The total, once the work has found out how much there is (e.g. a probe's budget)."""
        self.total = total
        self.progress.update(self.task, total=total)

    def say(self, text: str) -> None:
        """One log line above the bar (stderr); nothing when quiet."""
        if isinstance(self.progress, Progress):
            self.progress.console.print(text, highlight=False, soft_wrap=True)

    def __call__(self, n: int = 1) -> None:
        """A bar is also the ``advance`` callback that loaders take."""
        self.advance(n)
