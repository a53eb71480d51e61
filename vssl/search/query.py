"""What ``vssl search`` searches with: a query video's clips in one view of a store.

A query is either a video of the store — its recorded path, or a file whose path ends with it
(checked against the recorded file size) — whose stored clips are read, or any other video file,
embedded on the fly by :func:`vssl.embed` with the settings the store recorded for that view (its
``extract`` record: backbone, checkpoint, sampler, frames, stride, size, time base, normalisation,
precision, seed, stored dtype). So a file's clips are, bit for bit, the rows ``extract`` would
store for it, and its vector is comparable with the gallery's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vssl.errors import StoreError, VsslError
from vssl.features_store import FeatureStore

#: the extraction settings a view records that :class:`~vssl.extract.config.ExtractConfig` takes back
#: (``checkpoint`` is resolved separately: it is recorded as the user typed it)
REPLAYED_KEYS = ("backbone", "frames", "stride", "size", "decoder", "precision", "seed", "dtype", "fps", "mean",
                 "std")


@dataclass
class QueryClips:
    """A query video's clips in one view, as the store holds (or would hold) them.

    ``row`` is the video's store row when it is a video of the store (left out of its own
    results), else None. ``duration`` (seconds: decoded frames / frame rate) turns a clip's box
    into its start second.
    """

    path: str
    features: np.ndarray  # [c, *clip_shape] in the view's stored dtype
    boxes: np.ndarray     # [c, 7] float32
    duration: float
    row: int | None = None


def query_clips(store: FeatureStore, view: str, query: str | Path, *, checkpoint: str | Path | None = None,
                device: str = "auto") -> QueryClips:
    """The clips of ``query`` in ``view``: a store video's stored rows, or a file embedded on the fly."""
    row = store_row_of(store, query)
    if row is not None and store.usable(view)[row]:
        return stored_clips(store, view, row)
    if not Path(query).is_file():
        if row is not None:
            raise StoreError(f"{query} is a video of {store.path} without usable rows in view '{view}' "
                             f"({store.errors()[row] or 'not extracted yet'}) and no such file is here; "
                             "finish `vssl extract` or give the video file")
        raise VsslError(f"{query}: no such video file, and {store.path} records no video of that path")
    return embedded_clips(store, view, Path(query), checkpoint=checkpoint, device=device)


def store_row_of(store: FeatureStore, query: str | Path) -> int | None:
    """The store row of ``query`` when it names a video of the store, else None.

    ``query`` names one when it is a recorded path as written (``a/v1.mp4``, relative to the folder
    the store was extracted from), or when it is an existing file whose absolute path ends with a
    recorded path (``/data/ucf/a/v1.mp4``) and whose size is the one recorded (where sizes are
    recorded): the longest such path wins. A same-named file of another collection has another
    size, so it is embedded rather than mistaken for the store's video.
    """
    paths = store.paths().tolist()
    text = Path(query).as_posix()
    if text in paths:
        return paths.index(text)
    if not Path(query).is_file():
        return None
    absolute = Path(os.path.abspath(query)).as_posix()
    sizes = store.sizes()
    size = Path(query).stat().st_size
    best: int | None = None
    for i, recorded in enumerate(paths):
        tail = "/" + recorded.lstrip("/")
        if (absolute.endswith(tail) or absolute == recorded) and (sizes is None or int(sizes[i]) == size):
            if best is None or len(recorded) > len(paths[best]):
                best = i
    return best


def stored_clips(store: FeatureStore, view: str, row: int) -> QueryClips:
    """A store video's clips in ``view`` as stored."""
    got = store.view(view).read(np.array([row]))
    count = int(got.counts[0])
    return QueryClips(str(store.paths()[row]), got.features[0, :count], got.boxes[0, :count],
                      duration_of(int(store.num_frames()[row]), float(store.fps()[row])), row)


def duration_of(num_frames: int, fps: float) -> float:
    """A video's length in seconds as the clips' boxes measure it (decoded frames / frame rate)."""
    return num_frames / fps if fps > 0 else 0.0


def embedded_clips(store: FeatureStore, view: str, path: Path, *, checkpoint: str | Path | None = None,
                   device: str = "auto") -> QueryClips:
    """A file in no store embedded into ``view`` by the view's recorded settings.

    Its key (which seeds a random view) is its file name: the rows are those ``extract`` stores for
    the file at the top of a scanned folder, wherever the file lies.
    """
    import vssl

    cfg = embedding_config(store, view, checkpoint=checkpoint, device=device)
    (result,) = vssl.embed([path.name], root=path.parent, config=cfg)
    if not result.ok:
        raise VsslError(f"{path}: cannot embed it ({result.error})")
    return QueryClips(str(path), result.features[view], result.boxes[view],
                      duration_of(result.num_frames, result.fps))


def embedding_config(store: FeatureStore, view: str, *, checkpoint: str | Path | None = None,
                     device: str = "auto") -> Any:
    """The :class:`~vssl.extract.config.ExtractConfig` that embeds a file as ``view``'s rows were: the
    view's recorded settings, its sampler alone, its token grid or block, and the store's checkpoint."""
    from vssl.extract.config import ExtractConfig

    stored = store.view(view)
    record = dict(stored.record)
    if "views" not in record or "backbone" not in record:
        raise StoreError(f"view '{view}' of {store.path} records no extraction settings (an older vssl extracted "
                         "it); only its own videos can be searched: give one of their paths as the query")
    settings = {k: record[k] for k in REPLAYED_KEYS if k in record}
    if record.get("key_map"):                       # the checkpoint's key renames, as extraction applied them
        settings["key_map"] = tuple(tuple(item) if isinstance(item, list) else item for item in record["key_map"])
    check_precision_on(view, settings.get("precision"), device)
    settings["mean"] = tuple(settings["mean"]) if settings.get("mean") is not None else None
    settings["std"] = tuple(settings["std"]) if settings.get("std") is not None else None
    settings.update(views=sampler_item(store, view, record), checkpoint=checkpoint_for(store, record, checkpoint),
                    tokens=record.get("tokens"), layers=-int(record.get("layer", -1)), device=device,
                    workers=0, batch_size=32)
    return ExtractConfig(**settings)


def check_precision_on(view: str, precision: str | None, device: str) -> None:
    """Refuse to embed a query at a precision ``device`` cannot run (fp16 rows were computed on a GPU),
    naming the flag that fixes it rather than extraction's ``--precision``."""
    from vssl.device import resolve_device

    if precision == "fp16" and resolve_device(device).type != "cuda":
        raise VsslError(f"view '{view}' was extracted in fp16 on a GPU; a new file is embedded the same way: "
                        "search it with --device cuda")


def sampler_item(store: FeatureStore, view: str, record: dict[str, Any]) -> str:
    """The one ``--views`` item of the recorded run that cut ``view``'s clips (a token or layer view is
    cut from a sampler view whose name starts it), checked against the view's recorded sampler."""
    from vssl.extract.samplers import parse_view

    bb = store.backbone
    clip = dict(frames=bb.frames, stride=bb.stride, size=bb.size, seed=int(record.get("seed", 0)),
                fps=record.get("fps"))
    best: tuple[str, str] | None = None
    for item in filter(str.strip, str(record["views"]).split(",")):
        name, spec = parse_view(item, **clip)
        if (view == name or view.startswith(name + ".")) and (best is None or len(name) > len(best[0])):
            if spec.to_dict() == store.view(name if name in store.view_names() else view).spec:
                best = (name, item.strip())
    if best is None:
        raise StoreError(f"view '{view}' of {store.path}: its recorded views {record['views']!r} do not give its "
                         "sampler; only its own videos can be searched")
    return best[1]


def checkpoint_for(store: FeatureStore, record: dict[str, Any], given: str | Path | None) -> str | None:
    """The checkpoint a query is embedded with: ``--checkpoint``, else the file the store recorded
    (absolute), which must still be there; either way its sha256 must be the store's (the gallery's
    weights). None when extraction named none."""
    from vssl.hashing import sha256_of

    bb = store.backbone
    if given is not None:
        if not Path(given).exists():
            raise VsslError(f"--checkpoint {given}: no such file or directory")
        if bb.checkpoint_sha256 is None:
            raise VsslError(f"--checkpoint {given}: {store.path} was extracted without a checkpoint file; "
                            "leave --checkpoint out")
        if sha256_of(given) != bb.checkpoint_sha256:
            raise VsslError(f"--checkpoint {given} is not the checkpoint {store.path} was extracted with "
                            f"(sha256 {bb.checkpoint_sha256[:12]}…); give that file")
        return str(given)
    if not record.get("checkpoint"):
        return None
    if bb.checkpoint is None or not Path(bb.checkpoint).exists():
        raise VsslError(f"the checkpoint {store.path} was extracted with is not where it was recorded "
                        f"({bb.checkpoint}); point at it with --checkpoint PATH")
    # a file retrained or replaced in place would embed the query with other weights than the gallery's
    if bb.checkpoint_sha256 is not None and sha256_of(bb.checkpoint) != bb.checkpoint_sha256:
        raise VsslError(f"the checkpoint at {bb.checkpoint} changed since {store.path} was extracted with it "
                        f"(sha256 {bb.checkpoint_sha256[:12]}… recorded); point --checkpoint PATH at that file")
    return bb.checkpoint
