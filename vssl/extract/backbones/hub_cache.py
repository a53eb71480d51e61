"""``--checkpoint facebook/dinov2-small``: a Hugging Face model id resolved from the local cache only.

Extraction runs on machines without network (clusters, air-gapped boxes), and a silent download
would also change what a store's checkpoint hash means. So a model id is looked up with
``snapshot_download(local_files_only=True)`` — never a request, whatever ``HF_HUB_OFFLINE`` says —
in the cache the Hugging Face tools use (``HF_HUB_CACHE``, else ``HF_HOME/hub``, read when called
so the variables set by a job script count), and resolves to the snapshot directory, which the
readers treat like any Hugging Face directory. A missing model is one line naming the cache.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vssl.errors import CheckpointError

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def hub_cache_dir() -> Path:
    """The cache the Hugging Face tools use, from the environment as it is now."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def looks_like_model_id(checkpoint: str | Path) -> bool:
    """``org/name`` that is not an existing path (a relative ``dir/file`` that exists stays a path)."""
    text = str(checkpoint)
    return bool(_REPO_ID.fullmatch(text)) and not Path(text).exists()


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """The local path a ``--checkpoint`` names: itself, or a cached Hugging Face snapshot for a model id."""
    if not looks_like_model_id(checkpoint):
        return Path(checkpoint)
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    try:
        return Path(snapshot_download(str(checkpoint), cache_dir=str(cache), local_files_only=True))
    except (OSError, ValueError) as exc:  # LocalEntryNotFoundError is an OSError
        raise CheckpointError(f"checkpoint not found: {checkpoint} is not a file and not a Hugging Face model in "
                              f"the local cache {cache} (models--{str(checkpoint).replace('/', '--')}; "
                              f"{type(exc).__name__}); vssl never downloads: fetch it with "
                              f"`huggingface-cli download {checkpoint}` where there is network, or set HF_HUB_CACHE"
                              ) from None
