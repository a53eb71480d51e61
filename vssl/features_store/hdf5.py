"""HDF5 export/import: the same tree of groups, arrays and attributes, values exact.

HDF5 attributes cannot hold nested dicts, so each node's zarr attributes travel as one JSON
string (``zarr_attrs``); each dataset also records its zarr chunking and compression so the
import rebuilds an identical store. Data moves chunk by chunk along N (bounded memory). The file is
written under a temporary name and renamed into place (:mod:`.exporting`).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import zarr

from vssl.errors import StoreError

from .exporting import atomic_file
from .rows import compressors_for
from .store import FeatureStore

ATTRS = "zarr_attrs"


def _compression_of(array: zarr.Array) -> str:
    return "zstd" if array.compressors else "none"


def _h5_chunks(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...] | None:
    """HDF5 chunks for a zarr array: zarr's, clipped to the shape (HDF5 refuses chunks larger than
    the data, e.g. a store of fewer videos than one chunk); contiguous for an empty array. The
    zarr chunking itself travels in the ``zarr_chunks`` attribute."""
    if 0 in shape or not shape:
        return None
    return tuple(max(1, min(c, s)) for c, s in zip(chunks, shape))


def _copy_to_h5(node: zarr.Group, out: h5py.Group) -> None:
    out.attrs[ATTRS] = json.dumps(dict(node.attrs))
    for name in sorted(node.array_keys()):
        arr = node[name]
        is_str = np.dtype(arr.dtype).kind in "OTU"
        dtype = h5py.string_dtype("utf-8") if is_str else np.dtype(arr.dtype)
        ds = out.create_dataset(name, shape=arr.shape, dtype=dtype, chunks=_h5_chunks(arr.shape, arr.chunks))
        ds.attrs[ATTRS] = json.dumps(dict(arr.attrs))
        ds.attrs["zarr_chunks"] = list(arr.chunks)
        ds.attrs["zarr_compression"] = _compression_of(arr)
        ds.attrs["zarr_fill_value"] = json.dumps("" if is_str else arr.fill_value.item())
        step = arr.chunks[0]
        for start in range(0, arr.shape[0], step):
            block = np.asarray(arr[start:start + step])
            ds[start:start + step] = [str(v) for v in block.tolist()] if is_str else block
    for name in sorted(node.group_keys()):
        _copy_to_h5(node[name], out.create_group(name))


def export_hdf5(store: FeatureStore, output: str | Path) -> Path:
    """Write ``store`` to the HDF5 file ``output`` (refuses to overwrite; written whole or not at all)."""
    output = Path(output)
    if output.exists():
        raise StoreError(f"{output} already exists; choose another output file")
    try:
        with atomic_file(output) as partial, h5py.File(partial, "w") as f:
            _copy_to_h5(store.root, f)
    except OSError as exc:  # disk full, read-only or forbidden target: no half-written file is left
        raise StoreError(f"cannot write {output} ({' '.join(str(exc).split())}); free space or choose a "
                         "writable place and export again") from None
    return output


class Hdf5Exporter:
    """``--format hdf5`` (:class:`~vssl.features_store.exporting.Exporter`): the whole store in one file,
    which :func:`import_hdf5` turns back into the same store."""

    name = "hdf5"
    per_view = False

    def export(self, store: FeatureStore, output: Path, view: str | None) -> str:
        return f"wrote {export_hdf5(store, output)}"


def _copy_from_h5(node: h5py.Group, out: zarr.Group) -> None:
    for name, item in node.items():
        attrs = json.loads(item.attrs.get(ATTRS, "{}"))
        if isinstance(item, h5py.Group):
            _copy_from_h5(item, out.create_group(name, attributes=attrs))
            continue
        is_str = h5py.check_string_dtype(item.dtype) is not None
        chunks = tuple(int(c) for c in item.attrs.get("zarr_chunks", item.chunks or item.shape))
        fill = json.loads(item.attrs.get("zarr_fill_value", "0"))
        arr = out.create_array(name, shape=item.shape, chunks=chunks, dtype=str if is_str else item.dtype,
                               fill_value=fill, attributes=attrs,
                               compressors=compressors_for(item.attrs.get("zarr_compression", "none")))
        step = chunks[0] if chunks else 1
        for start in range(0, item.shape[0], step):
            block = item.asstr()[start:start + step] if is_str else item[start:start + step]
            arr[start:start + step] = np.array(list(block), dtype=str) if is_str else block


def import_hdf5(source: str | Path, store_path: str | Path) -> FeatureStore:
    """Rebuild a feature store at ``store_path`` from an export made by :func:`export_hdf5`."""
    source, store_path = Path(source), Path(store_path)
    if not source.is_file():
        raise StoreError(f"HDF5 file not found: {source}")
    if store_path.exists() and (not store_path.is_dir() or any(store_path.iterdir())):
        raise StoreError(f"{store_path} already exists and is not empty; choose another store directory")
    try:
        f = h5py.File(source, "r")
    except OSError as exc:
        raise StoreError(f"{source} is not a readable HDF5 file ({exc})") from None
    with f:
        root_attrs = json.loads(f.attrs.get(ATTRS, "{}"))
        if "vssl_format" not in root_attrs:
            raise StoreError(f"{source} is not a vssl store export (no vssl_format in its root attributes)")
        root = zarr.open_group(str(store_path), mode="w-", zarr_format=3, attributes=root_attrs)
        _copy_from_h5(f, root)
    return FeatureStore.open(store_path)
