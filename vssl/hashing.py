"""Content hashes that identify checkpoints (the store records them, runs and exports compare them),
and the keys that identify videos across stores."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


#: hashes computed (or received from rank 0) in this process, by (path, size, mtime) of the file
_KNOWN: dict[tuple[str, int, int], str] = {}


def _identity(p: Path) -> tuple[str, int, int] | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return (str(p.resolve()), st.st_size, st.st_mtime_ns) if p.is_file() else None


def known_hashes() -> dict[tuple[str, int, int], str]:
    """The file hashes this process knows (rank 0 broadcasts them, so a checkpoint is hashed once per job)."""
    return dict(_KNOWN)


def remember_hashes(known: dict[tuple[str, int, int], str] | None) -> None:
    """Take hashes computed by another rank; used only while the file is unchanged (same size and mtime)."""
    _KNOWN.update(known or {})


def sha256_of(path: str | Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, in sorted order).

    A directory (a Hugging Face model folder) hashes each file's relative name before its bytes,
    so renaming or moving a file inside it changes the hash. A file's hash is remembered for as
    long as its size and mtime stay the same (hashing a 1 GB checkpoint takes seconds).
    """
    p = Path(path)
    key = _identity(p)
    if key is not None and key in _KNOWN:
        return _KNOWN[key]
    digest = _sha256(p)
    if key is not None:
        _KNOWN[key] = digest
    return digest


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if p.is_dir():
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def video_keys(paths) -> np.ndarray:
    """A 64-bit key per video path (int64 ``[n]``): a video's identity across stores.

    The path is the one a store records, relative to the extraction's input root (the name the
    datasets' split lists give a video), so a store copied, moved or made again from the same
    videos gives the same keys. BLAKE2b's first 8 bytes: a collision among a million videos has
    odds of about 3e-8.
    """
    return np.array([int.from_bytes(hashlib.blake2b(str(p).encode(), digest_size=8).digest(), "little", signed=True)
                     for p in paths], dtype=np.int64)
