"""Content hashes that identify checkpoints: the store records them, runs and exports compare them."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: str | Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, in sorted order).

    A directory (a Hugging Face model folder) hashes each file's relative name before its bytes,
    so renaming or moving a file inside it changes the hash.
    """
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if p.is_dir():
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
