"""Exports out of a store: the protocol every format implements, and the rules they share.

A format is one module with one class implementing :class:`Exporter`, and one line in
:data:`vssl.features_store.exporters.EXPORTERS` (``vssl store export --format NAME`` finds it there).
A format that writes one view video by video reads it with :meth:`FeatureStore.iter_videos` (one
video in memory at a time, usable videos only). What every format must get right lives here, once:

- a file appears whole or not at all: it is written under a temporary name beside its place and
  renamed into it (:func:`atomic_file`, :func:`write_file_atomically`), so a killed export or a full
  disk never leaves half a file under the real name;
- a directory export is resumable and refuses to mix stores: ``DIR/vssl-export.json`` (the marker)
  records the store, its creation id and the view; a non-empty directory without a marker, or with
  the marker of another store or view, is refused (:class:`ExportDirectory`).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Protocol

from vssl.errors import StoreError, working_on

from .store import FeatureStore

MARKER = "vssl-export.json"


class Exporter(Protocol):
    """One export format."""

    #: the ``--format`` value
    name: str
    #: True: exports one view (``--view`` names it); False: the whole store
    per_view: bool

    def export(self, store: FeatureStore, output: Path, view: str | None) -> str:
        """Write ``store`` (its view ``view`` when :attr:`per_view`) to ``output``; returns the line the
        command prints (what was written)."""
        ...


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the file at; renamed to ``path`` when the block ends,
    removed when it raises (a failed write leaves nothing)."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_file_atomically(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` (folders made as needed) through :func:`atomic_file`."""
    with working_on("export file", path):  # an OSError from write() names no file
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            f.write(data)


class ExportDirectory:
    """The directory a per-view export writes into: claimed with a marker, written file by file."""

    def __init__(self, directory: str | Path, store: FeatureStore, view: str, format_name: str) -> None:
        self.path = Path(directory)
        self.format_name = format_name
        # the store's creation id: a store made anew at the same path must not keep the old one's files
        self.identity = {"store": str(Path(store.path).resolve()), "view": view, "store_id": store.store_id}

    def claim(self, record: Mapping) -> None:
        """Refuse a directory that is not empty and not an export of the same store and view; then write
        the marker (the identity plus ``record``, e.g. the backbone)."""
        self._check()
        self.path.mkdir(parents=True, exist_ok=True)
        write_file_atomically(self.path / MARKER, json.dumps({**self.identity, **record}, indent=2).encode())

    def _check(self) -> None:
        directory = self.path
        if directory.exists() and not directory.is_dir():
            raise StoreError(f"{directory} is a file; give a directory to export into")
        if not directory.exists() or not any(directory.iterdir()):
            return
        try:
            found = json.loads((directory / MARKER).read_text())
        except (OSError, ValueError):
            raise StoreError(f"{directory} is not empty and is not a vssl {self.format_name} export; choose an "
                             "empty or new directory") from None
        if {k: found.get(k) for k in self.identity} != self.identity:
            raise StoreError(f"{directory} holds an export of {found.get('store')} view '{found.get('view')}' "
                             f"(store id {found.get('store_id')}); export this view into another directory")

    def write(self, relative: str, data: bytes | memoryview) -> None:
        """Write the file ``relative`` (to the directory) whole, or not at all."""
        write_file_atomically(self.path / relative, data)

    def remove(self, relative: str) -> bool:
        """Remove the file ``relative`` if it is there (an earlier export's); whether it was."""
        path = self.path / relative
        if path.is_file():
            path.unlink()
            return True
        return False
