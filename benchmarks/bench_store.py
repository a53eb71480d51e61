"""Feature-store throughput: random-batch reads vs a numpy memmap, writes, compression.

    python benchmarks/bench_store.py [--videos 20000] [--clips 16] [--dim 768] [--write-doc]

Builds a store of N videos x K clips x D float16 features (standard-normal values, the
distribution of layer-normed ViT outputs) uncompressed (the default) and Blosc-zstd, and
the same data as a .npy memmap; all reads come from the page cache, as in training.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import machine, markdown_table, timeit, write_section  # noqa: E402
from vssl.features_store import BackboneSpec, FeatureStore, VideoEntry  # noqa: E402
from vssl.features_store.info import _disk_bytes  # noqa: E402
from vssl.features_store.synthetic import uniform_boxes  # noqa: E402


def build(path: Path, feats: np.ndarray, compression: str) -> tuple[FeatureStore, float]:
    n, k, d = feats.shape
    spec = BackboneSpec("bench", d, 16, 4, 224, (0.5,) * 3, (0.5,) * 3)
    store = FeatureStore.create(path, spec, [VideoEntry(f"{i}.mp4", i % 400, "train") for i in range(n)])
    store.create_view("v", k, {"sampler": "bench"}, compression=compression)
    boxes = uniform_boxes(store.chunk_videos, k)
    t = time.perf_counter()
    for start, stop in store.chunk_ranges():
        idx = np.arange(start, stop)
        store.write_videos(idx, {"v": (feats[start:stop], boxes[: stop - start])}, [64] * len(idx),
                           [25.0] * len(idx), [None] * len(idx))
    return store, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=20000)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((args.videos, args.clips, args.dim), dtype=np.float32).astype(np.float16)
    nbytes = feats.nbytes
    tmp = Path(tempfile.mkdtemp(prefix="vssl-bench-"))
    try:
        mm_path = tmp / "feats.npy"
        t = time.perf_counter()
        mm = np.lib.format.open_memmap(mm_path, mode="w+", dtype=np.float16, shape=feats.shape)
        mm[:] = feats
        mm.flush()
        del mm
        t_mm_write = time.perf_counter() - t
        mm = np.load(mm_path, mmap_mode="r")
        batches = [rng.choice(args.videos, args.batch, replace=False) for _ in range(20)]
        it = iter(range(10**9))

        def read_with(fn):
            return lambda: fn(batches[next(it) % len(batches)])

        t_mm = timeit(read_with(lambda b: np.ascontiguousarray(mm[np.sort(b)])), repeat=20)
        rows = [["numpy memmap (.npy)", nbytes / t_mm_write / 1e6, t_mm * 1e3, 1.0, 1.0]]
        for compression in ("none", "zstd"):
            store, t_write = build(tmp / f"store-{compression}", feats, compression)
            view = FeatureStore.open(tmp / f"store-{compression}").view("v")
            t_read = timeit(read_with(view.read_features), repeat=20 if compression == "none" else 5)
            assert np.array_equal(view.read_features(batches[0]), feats[batches[0]])
            ratio = nbytes / _disk_bytes(tmp / f"store-{compression}" / "views/v/features", chunks_only=True)
            rows.append([f"vssl store, {compression}", nbytes / t_write / 1e6, t_read * 1e3, t_read / t_mm, ratio])
        header = ["layout", "write MB/s", f"read {args.batch} random videos (ms)", "read time vs memmap",
                  "compression ratio"]
        table = markdown_table(header, rows)
        print(table)
        if args.write_doc:
            write_section("store", f"""## Feature store

`python benchmarks/bench_store.py --videos {args.videos} --write-doc` — {args.videos} videos x {args.clips} clips x
{args.dim}-d float16 ({nbytes / 1e9:.2f} GB), chunks of {store.chunk_videos} videos, page cache warm; {machine()}.

{table}

- Random batches go through a memory-map of the raw chunk files (uncompressed, unsharded arrays),
  not zarr's per-chunk decode path, which measured 20-180x slower than a memmap for the same reads.
- float16 features are close to incompressible (sign/exponent bits are the only redundancy), so the
  default is no compression: zstd+shuffle saves a few percent of disk and costs the fast read path.
  `compression="zstd"` stays available per view for archival.""")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
