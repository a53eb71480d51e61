"""Subprocess writer for the store's crash and concurrency tests.

    python tests/store_writer.py STORE SHARD_I SHARD_N [--pause SECONDS]

Writes, chunk by chunk, deterministic rows (a function of the video index only) into the
pending videos of view `v` of STORE that fall in shard SHARD_I of SHARD_N; every 7th video
fails. ``--pause`` sleeps between the view-data write and the status write of each chunk,
widening the window in which a SIGKILL lands mid-block.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vssl.features_store import FeatureStore  # noqa: E402

K, D = 4, 8


def rows_for(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats = np.stack([np.random.default_rng(int(i)).standard_normal((K, D)) for i in indices]).astype(np.float16)
    t = np.linspace(0, 0.5, K, dtype=np.float32)
    boxes = np.stack([np.stack([t, t * 0, t * 0, t + 0.5, t * 0 + 1, t * 0 + 1, t * 0], -1)] * len(indices))
    return feats, boxes


def error_for(i: int) -> str | None:
    return f"corrupt video {i}" if i % 7 == 3 else None


def main() -> None:
    path, shard_i, shard_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    pause = float(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--pause" else 0.0
    store = FeatureStore.open(path, mode="r+")
    view = store.view("v")
    pending = set(view.pending(exclude=store.video_status() == 2).tolist())
    for start, stop in store.chunk_ranges(shard=(shard_i, shard_n)):
        idx = np.array([i for i in range(start, stop) if i in pending], dtype=np.int64)
        if idx.size == 0:
            continue
        feats, boxes = rows_for(idx)
        if pause:
            view.write(idx, {"features": feats, "boxes": boxes}, done=np.zeros(len(idx), bool))
            time.sleep(pause)
        store.write_videos(idx, {"v": (feats, boxes)}, num_frames=(idx + 10).tolist(),
                           fps=[25.0] * len(idx), errors=[error_for(int(i)) for i in idx])
        print(f"chunk {start}", flush=True)


if __name__ == "__main__":
    main()
