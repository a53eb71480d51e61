"""The export formats ``vssl store export --format NAME`` offers: one line per format (its module
implements :class:`~vssl.features_store.exporting.Exporter`)."""

from __future__ import annotations

from .export_npy import NpyExporter
from .exporting import Exporter
from .hdf5 import Hdf5Exporter

EXPORTERS: dict[str, Exporter] = {exporter.name: exporter for exporter in (
    Hdf5Exporter(),
    NpyExporter(),
)}
