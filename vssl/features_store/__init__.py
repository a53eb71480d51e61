"""The zarr v3 feature store shared by extraction, aggregation and probing (DESIGN.md)."""

from vssl.errors import StoreError

from .export_npy import NpyExport, export_npy
from .exporters import EXPORTERS
from .exporting import Exporter
from .hdf5 import export_hdf5, import_hdf5
from .info import store_summary
from .rows import COMPRESSIONS, RowGroup
from .schema import (BOX_DIM, BOX_FIELDS, FORMAT_VERSION, STATUS_DONE, STATUS_FAILED, STATUS_PENDING,
                     ASSUMED_CLIPS_PER_VIEW, BackboneSpec, VideoEntry, chunk_videos_for, default_chunk_videos,
                     video_bytes)
from .store import FeatureStore, VideoClips
from .views import LAYOUTS, FixedView, RaggedView, View, ViewRows
from .verify import verify_store

__all__ = [
    "FeatureStore", "View", "FixedView", "RaggedView", "ViewRows", "LAYOUTS", "RowGroup", "BackboneSpec", "VideoEntry", "StoreError",
    "STATUS_PENDING", "STATUS_DONE", "STATUS_FAILED", "BOX_DIM", "BOX_FIELDS", "FORMAT_VERSION",
    "COMPRESSIONS", "default_chunk_videos", "chunk_videos_for", "video_bytes", "ASSUMED_CLIPS_PER_VIEW", "export_hdf5", "import_hdf5",
    "store_summary", "verify_store",
    "export_npy", "NpyExport", "Exporter", "EXPORTERS", "VideoClips",
]
