"""A rich progress bar on stderr (items/s, ETA, current losses), or a silent stand-in for ``quiet``."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeRemainingColumn)


class _Silent:
    """Same calls as :class:`rich.progress.Progress`, doing nothing."""

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def __getattr__(self, name):  # update, advance, remove_task, ...
        return lambda *args, **kwargs: None


def make_progress(quiet: bool):
    """Progress bar for long loops; ``quiet`` silences it."""
    if quiet:
        return _Silent()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=Console(stderr=True), transient=False)
