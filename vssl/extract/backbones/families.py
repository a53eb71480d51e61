"""Imports every built-in backbone family so that their factories register themselves."""

from . import tiny  # noqa: F401
