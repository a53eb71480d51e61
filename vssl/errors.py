"""Errors a user can cause and fix.

Every exception derived from :class:`VsslError` is rendered by the CLI as one line
(no traceback) and exits with code 2; anything else is a bug: one line naming it and the file
being processed (:func:`working_on`), its traceback in a log, exit code 1.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


class VsslError(Exception):
    """A problem with the user's input (file, flag, store, checkpoint) that they can fix."""


class StoreError(VsslError):
    """The feature store is missing, of another kind, or incompatible with the request."""


class CheckpointError(VsslError):
    """A checkpoint file cannot be read or does not match the requested backbone."""


#: how a note naming the file being processed starts (:func:`working_on`)
FILE_NOTE = "while processing "


@contextmanager
def working_on(kind: str, path: str | os.PathLike) -> Iterator[None]:
    """Name the file being processed on an unexpected exception passing through (an exception note).

    A command ends an unexpected exception in one line; "ValueError: cannot reshape array" alone
    does not say which of a collection's videos, a checkpoint's files or a store's chunk files to
    look at. The innermost ``working_on`` names the file; user errors (:class:`VsslError`) name
    their file in their message already and pass unchanged.
    """
    try:
        yield
    except VsslError:
        raise
    except Exception as exc:
        if not file_note(exc):
            exc.add_note(f"{FILE_NOTE}{kind} {path}")
        raise


def file_note(exc: BaseException) -> str:
    """The note :func:`working_on` attached to ``exc`` ("while processing video a.mp4"), or ""."""
    return next((n for n in getattr(exc, "__notes__", ()) if n.startswith(FILE_NOTE)), "")


def with_file(message: str, exc: BaseException) -> str:
    """``message``, then the file ``exc`` was processing in parentheses when a note names one."""
    note = file_note(exc)
    return f"{message} ({note})" if note else message
