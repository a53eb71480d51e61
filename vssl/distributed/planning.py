"""Splitting a store's chunks between ranks (or ``--shard`` tasks) so each does about equal work.

A chunk is the unit a writer owns (DESIGN.md), so shares are lists of whole chunks, never
partial ones. The plan depends only on the files and the chunk layout, so every shard of a
SLURM job array computes the same split alone, without talking to the others.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from vssl.errors import VsslError


def video_weights(paths: Sequence[str]) -> np.ndarray:
    """Expected extraction cost of each video, from its file size (a stat, no decoding).

    One unit per video for the fixed part (K clips through the backbone, whatever the
    length) plus one unit for decoding a video of the mean size, scaled by size: decoding
    (the demux pass and the frames around each clip) grows with the file. File size is used
    rather than a container probe because a stat costs microseconds on any file system while
    opening 240k containers costs minutes, and because header durations/frame counts lie on
    real files (see :mod:`vssl.extract.decode`). Missing files weigh one unit (they fail fast).
    """
    return size_weights(file_sizes(paths))


def file_sizes(paths: Sequence[str]) -> np.ndarray:
    """Each file's size in bytes (0 when it cannot be stat'ed). Stores record these at creation
    (the ``size`` column), so every process plans from the same numbers: a file unreadable on
    one node must not move chunks between owners on that node alone."""
    sizes = np.zeros(len(paths), dtype=np.int64)
    for i, p in enumerate(paths):
        try:
            sizes[i] = os.stat(p).st_size
        except OSError:
            sizes[i] = 0
    return sizes


def size_weights(sizes: np.ndarray) -> np.ndarray:
    """:func:`video_weights` from known sizes: one unit plus size / mean size (0 bytes: one unit)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    mean = sizes[sizes > 0].mean() if (sizes > 0).any() else 1.0
    return 1.0 + sizes / mean


def balance_chunks(chunks: Sequence[tuple[int, int]], weights: np.ndarray, parts: int) -> list[list[tuple[int, int]]]:
    """Split whole chunks between ``parts`` ranks so their summed weights are as even as possible.

    Greedy longest-processing-time: the heaviest chunk goes to the least-loaded part (ties to
    the lower rank), within 4/3 of the optimum. Deterministic, so every shard of a job array
    computes the same plan alone. Each part's chunks come back sorted, adjacent ones merged.
    """
    if parts < 1:
        raise VsslError(f"cannot split work into {parts} parts")
    cost = [float(weights[start:stop].sum()) for start, stop in chunks]
    order = sorted(range(len(chunks)), key=lambda c: (-cost[c], chunks[c][0]))
    load = [0.0] * parts
    owned: list[list[tuple[int, int]]] = [[] for _ in range(parts)]
    for c in order:
        p = min(range(parts), key=lambda r: (load[r], r))
        load[p] += cost[c]
        owned[p].append(chunks[c])
    return [merge_ranges(sorted(o)) for o in owned]


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted (start, stop) ranges with adjacent ones joined."""
    out: list[tuple[int, int]] = []
    for start, stop in ranges:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out
