"""Errors a user can cause and fix.

Every exception derived from :class:`VsslError` is rendered by the CLI as one line
(no traceback) and exits with code 2; anything else is a bug and keeps its traceback.
"""


class VsslError(Exception):
    """A problem with the user's input (file, flag, store, checkpoint) that they can fix."""


class StoreError(VsslError):
    """The feature store is missing, of another kind, or incompatible with the request."""


class CheckpointError(VsslError):
    """A checkpoint file cannot be read or does not match the requested backbone."""
