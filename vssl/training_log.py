"""TensorBoard event files for the training loops (``--log-dir``), beside the CSV and JSON they keep.

Stage two and the trained probes write what a person watches a run by: the loss terms and
contrastive accuracies (or each probe head's loss) and the learning rate at every optimiser
step, held-out scores per epoch, and the resolved settings as text. They go through
``torch.utils.tensorboard``, whose writer needs the ``tensorboard`` package: an optional extra
(``pip install 'vssl[tensorboard]'``), named in one line when it is missing.

A training loop writes through :class:`TrainingLog`; without ``--log-dir`` it gets
:class:`NoLog`, so the loops never branch on whether they are logged. Per-step values are
handed over as host floats where the loop already reads them (stage two reads them every step
on CPU and every 20 steps on CUDA, :meth:`TrainingLog.steps` takes the steps since the last
read at once), so logging adds no device synchronisation.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

from vssl.errors import VsslError

#: what a missing extra says
MISSING_EXTRA = ("--log-dir writes TensorBoard event files and needs the tensorboard package: "
                 "pip install 'vssl[tensorboard]'")


class TrainingLog(Protocol):
    """Where a training loop's scalars and settings go."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Scalars ``{tag: value}`` at ``step``."""
        ...

    def steps(self, first_step: int, rows: Sequence[Mapping[str, float]]) -> None:
        """Consecutive steps' scalars, the first at ``first_step``."""
        ...

    def text(self, tag: str, text: str) -> None:
        """A text (markdown) entry, e.g. the resolved settings."""
        ...

    def child(self, name: str) -> "TrainingLog":
        """A log in the sub-folder ``name`` (a separate run in TensorBoard's list)."""
        ...

    def close(self) -> None: ...


class NoLog:
    """The log of a run without ``--log-dir``: takes everything, writes nothing."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        pass

    def steps(self, first_step: int, rows: Sequence[Mapping[str, float]]) -> None:
        pass

    def text(self, tag: str, text: str) -> None:
        pass

    def child(self, name: str) -> "NoLog":
        return self

    def close(self) -> None:
        pass


class EventLog:
    """TensorBoard event files in ``log_dir`` (one ``SummaryWriter``, opened on first use).

    ``purge_step``: a resumed run's step; TensorBoard then drops the events an interrupted run
    wrote past it, so the curves show the resumed run once, not both runs overlaid.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.purge_step = purge_step
        self._writer = None
        self._children: list[EventLog] = []

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir), purge_step=self.purge_step)
        return self._writer

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def steps(self, first_step: int, rows: Sequence[Mapping[str, float]]) -> None:
        for i, row in enumerate(rows):
            self.scalars(first_step + i, row)

    def text(self, tag: str, text: str) -> None:
        self.writer.add_text(tag, text, 0)

    def child(self, name: str) -> "EventLog":
        log = EventLog(self.log_dir / name)
        self._children.append(log)
        return log

    def close(self) -> None:
        for log in self._children:
            log.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def open_log(log_dir: str | Path | None, purge_step: int | None = None, write: bool = True) -> TrainingLog:
    """The log of a run: TensorBoard files in ``log_dir``, or :class:`NoLog` without one. The
    extra is checked here, before any training, so a missing package is one line up front, on
    every process of a launch; ``write`` False (a rank other than 0) checks it and writes nothing."""
    if log_dir is None:
        return NoLog()
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard imports it when writing)
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise VsslError(MISSING_EXTRA) from None
    return EventLog(log_dir, purge_step) if write else NoLog()


def settings_text(settings: Mapping[str, Any]) -> str:
    """Settings as a markdown code block (TensorBoard's text tab renders markdown)."""
    body = json.dumps(settings, indent=2, sort_keys=True, default=str)
    return "\n".join("    " + line for line in body.splitlines())


# ---------------------------------------------------------------- the probes' current log

_current: contextvars.ContextVar[TrainingLog] = contextvars.ContextVar("vssl_training_log", default=NoLog())


@contextlib.contextmanager
def logging_to(log: TrainingLog) -> Iterator[TrainingLog]:
    """Make ``log`` the one :func:`current_log` returns inside the block, closed after it.

    A probe row's trainers sit several calls below the runner (each probe's own train function,
    then the shared fit); the runner opens the row's log around the probe's call and the fit
    writes to it, so no probe's signature carries it.
    """
    token = _current.set(log)
    try:
        yield log
    finally:
        _current.reset(token)
        log.close()


def current_log() -> TrainingLog:
    """The log the running probe row writes to (:class:`NoLog` outside :func:`logging_to`)."""
    return _current.get()
