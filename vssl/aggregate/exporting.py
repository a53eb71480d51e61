"""Export: run a trained predictor without masking over a view, write ``aggregates/<run>/<view>``.

One path for both layouts: a fixed view is read and encoded as a ragged one whose videos all hold K
clips (one pass each); only where the refined clips are written differs (:func:`_fixed_writer`,
:func:`_ragged_writer`).

Like extraction, the export is resumable: rows are written whole chunk by chunk, each row's
done flag after its data, and a re-run only does the rows still pending. The group records
the SHA-256 of the checkpoint it came from, so rows of two different checkpoints never mix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vssl.aggregate.boxes import encode_boxes
from vssl.aggregate.checkpoint import check_trained_on, load_run
from vssl.aggregate.config import EXPORT_MAX_CLIPS, ExportConfig  # noqa: F401 (its former home)
from vssl.device import autocast, resolve_device, resolve_precision
from vssl.errors import StoreError
from vssl.features_store import FeatureStore
from vssl.features_store.ragged import padded_batches, read_clips
from vssl.progress import make_progress


def aggregate_group(run_name: str, view: str) -> str:
    """Row-group path of an export: ``aggregates/<run>/<view>``."""
    return f"aggregates/{run_name}/{view}"


def export_name(run_dir: str | Path, name: str | None = None) -> str:
    """A run's name in the store: ``name`` (``--name``), else its directory's name."""
    return name or Path(run_dir).resolve().name


def find_export_name(store: FeatureStore, run_dir: str | Path, view: str, checkpoint_sha256: str) -> str:
    """The name ``run_dir``'s checkpoint was exported under for ``view``, whatever ``--name`` it was
    given (an export records its run directory and checkpoint); the default name when none was.

    So a reader of the aggregates finds an export made with ``--name`` instead of exporting again.
    """
    default = export_name(run_dir)
    wanted = {"view": view, "run_dir": str(Path(run_dir).resolve()), "checkpoint_sha256": checkpoint_sha256}
    found = []
    for path in store.row_group_paths():
        attrs = store.row_group(path).attrs if path.startswith("aggregates/") else {}
        if attrs.get("run") and all(attrs.get(k) == v for k, v in wanted.items()):
            found.append(attrs["run"])
    return default if default in found or not found else sorted(found)[0]


def clips_group(group: str) -> str:
    """Where the refined clips Ĉ of a ragged view's export live: ``aggregates/<run>/<view>.clips``."""
    return f"{group}.clips"


def export(store_path: str | Path, run_dir: str | Path, view: str, config: ExportConfig | None = None, *,
           name: str | None = None, batch_size: int | None = None, device: str | None = None,
           precision: str | None = None, max_clips: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Write ``set_token [N, H]`` and ``clips [N, K, H]`` for every done video of ``view``.

    ``config``: the export's settings (:class:`~vssl.aggregate.config.ExportConfig`: fp32, batches of
    256 videos, by default); a keyword given here (not None) replaces that setting.

    The model reads each video's boxes in the run's ``box_encoding`` (over all of the video's clips
    in ``view``, :mod:`vssl.aggregate.boxes`), as it was trained; what is written keeps them absolute.

    ``name`` is the run name in the store (default: the run directory's name). On a ragged view
    the refined clips go to ``aggregates/<run>/<view>.clips`` (ragged, the source view's counts
    and boxes) and ``max_clips`` bounds one pass (:func:`encode_video_clips`). Returns a summary:
    group path, rows written now, rows done in total.
    """
    settings = (config or ExportConfig()).replace(name=name, batch_size=batch_size, device=device,
                                                  precision=precision, max_clips=max_clips)
    name, batch_size, max_clips = settings.name, settings.batch_size, settings.max_clips
    dev = resolve_device(settings.device)
    prec = resolve_precision(settings.precision, dev)
    model, cfg, meta = load_run(run_dir, dev)
    store = FeatureStore.open(store_path, mode="r+")
    check_trained_on(store, meta, run_dir, fix="export into a store of the same backbone")
    the_view = store.view(view)
    if the_view.dim != model.in_dim:
        raise StoreError(f"view '{view}' has D={the_view.dim} but {run_dir} expects D={model.in_dim}")
    run_name = export_name(run_dir, name)
    group = aggregate_group(run_name, view)
    ragged = the_view.num_clips is None
    attrs = {"run": run_name, "run_dir": str(Path(run_dir).resolve()), "checkpoint_sha256": meta["checkpoint_sha256"],
             "epochs": meta["epochs"], "view": view, "width": cfg.width, "config": cfg.to_dict(),
             **({"clips_layout": "ragged", "clips_group": clips_group(group), "max_clips": max_clips}
                if ragged else {})}
    H, K = cfg.width, the_view.num_clips
    if store.has_row_group(group):
        rows = store.row_group(group)
        if rows.attrs.get("checkpoint_sha256") != attrs["checkpoint_sha256"]:
            raise StoreError(f"{group} in {store_path} was exported from another checkpoint of '{run_name}'; "
                             "pass another --name for this export")
        if ragged and rows.attrs.get("max_clips") != max_clips:
            raise StoreError(f"{group} in {store_path} was exported with --export-max-clips "
                             f"{rows.attrs.get('max_clips')}; finish it with that value or pass another --name")
    elif ragged:
        store.create_ragged_group(clips_group(group), H, "float32", {"run": run_name, "view": view})
        rows = store.create_row_group(group, {"set_token": ((H,), "float32")}, attrs)
    else:
        rows = store.create_row_group(group, {"set_token": ((H,), "float32"), "clips": ((K, H), "float32")}, attrs)
    write = _ragged_writer(rows, store.ragged_group(clips_group(group))) if ragged else _fixed_writer(rows)
    one_pass = max_clips if ragged else K   # a fixed view: all K clips at once, as every set it was shown
    todo = np.flatnonzero(store.usable(view) & ~rows.done())
    written = 0
    with make_progress(quiet) as progress, torch.inference_mode():
        task = progress.add_task(f"export {view}", total=int(todo.size), info="")
        for start, stop in store.chunk_ranges():
            idx = todo[(todo >= start) & (todo < stop)]
            if idx.size == 0:
                continue
            write(idx, *_encode_chunk(model, the_view, idx, batch_size, one_pass, dev, prec, cfg.box_encoding))
            written += int(idx.size)
            progress.advance(task, int(idx.size))
    return {"group": group, "written": written, "done": int(rows.done().sum()), "num_videos": store.num_videos}


def windows(count: int, max_clips: int) -> list[tuple[int, int]]:
    """The passes over a video of ``count`` clips: one when ``count <= max_clips``, else
    ceil(count / max_clips) consecutive windows of near-equal size (no short last window)."""
    pieces = max(1, -(-count // max_clips))
    bounds = [round(i * count / pieces) for i in range(pieces + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def encode_video_clips(model, features: list[np.ndarray], boxes: list[np.ndarray], max_clips: int,
                       batch_size: int, device, precision: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """SET tokens ``[n, H]`` and Ĉ ``[k_i, H]`` of videos given as their clips (``[k_i, D]``, ``[k_i, 7]``).

    The released eval encodes all of a video's clips in one pass (its val views hold 10-15 clips,
    more than the sets of 8 it trained on); the paper and code say nothing of longer videos (their
    LVU features are a fixed number of clips per video). vssl does the same up to ``max_clips``
    clips. A longer video is encoded in consecutive windows of at most ``max_clips`` clips
    (:func:`windows`, stored order: time order for ``dense:S``): each clip's Ĉ comes from its
    window, and the SET token is the mean of the windows' CLS outputs weighted by their clip
    counts. So memory (attention is quadratic in the set) stays bounded on any film. Passes of
    similar length share a padded batch (key padding: a pass never sees another's padding).
    """
    pieces = [(v, a, e) for v, f in enumerate(features) for a, e in windows(len(f), max_clips)]
    refined = [np.empty((len(f), model.cfg.width), np.float32) for f in features]
    tokens = np.zeros((len(features), model.cfg.width), np.float64)
    for group in padded_batches([e - a for _, a, e in pieces], batch_size):
        lengths = [pieces[p][2] - pieces[p][1] for p in group]
        pad = max(lengths)
        f = np.zeros((len(group), pad, features[0].shape[-1]), np.float32)
        b = np.zeros((len(group), pad, boxes[0].shape[-1]), np.float32)
        for j, p in enumerate(group):
            v, a, e = pieces[p]
            f[j, :e - a], b[j, :e - a] = features[v][a:e], boxes[v][a:e]
        valid = None if min(lengths) == pad else torch.arange(pad)[None, :] < torch.tensor(lengths)[:, None]
        with autocast(device, precision):
            c_hat, cls = model.encode(torch.from_numpy(f).to(device), torch.from_numpy(b).to(device),
                                      valid=None if valid is None else valid.to(device))
        c_hat, cls = c_hat.float().cpu().numpy(), cls.float().cpu().numpy()
        for j, p in enumerate(group):
            v, a, e = pieces[p]
            refined[v][a:e] = c_hat[j, :e - a]
            tokens[v] += cls[j].astype(np.float64) * ((e - a) / len(features[v]))   # one window: weight 1
    return tokens.astype(np.float32), refined


Writer = Callable[[np.ndarray, np.ndarray, list, list], None]


def _encode_chunk(model, view, idx: np.ndarray, batch_size: int, max_clips: int, device, precision: str,
                  box_encoding: str = "absolute") -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """SET tokens ``[n, H]``, Ĉ ``[k_i, H]`` and the stored boxes ``[k_i, 7]`` of videos ``idx`` (one chunk).

    A fixed view is a ragged one whose videos all hold K clips: both are read the same way, in
    batches of similar length, so a long film never pads the chunk's short videos. The model reads
    the boxes in ``box_encoding``, each video's over all its clips (not per window); what is written
    keeps the stored ones.
    """
    clips, bxs = read_clips(view, idx, batch_size)
    seen = encode_boxes(bxs, box_encoding)
    spans = list(zip(clips.offsets[:-1], clips.offsets[1:]))
    feats = [clips.flat[a:e].astype(np.float32) for a, e in spans]
    model_boxes = [seen.flat[a:e] for a, e in spans]
    tokens, c_hat = encode_video_clips(model, feats, model_boxes, max_clips, batch_size, device, precision)
    return tokens, c_hat, [bxs.flat[a:e] for a, e in spans]


def _fixed_writer(rows) -> Writer:
    """A fixed view's export: ``set_token [H]`` and ``clips [K, H]`` in one row group, one whole-chunk
    write, done flags last."""
    def write(idx: np.ndarray, tokens: np.ndarray, c_hat: list, boxes: list) -> None:
        rows.write(idx, {"set_token": tokens, "clips": np.stack(c_hat)})
    return write


def _ragged_writer(rows, refined) -> Writer:
    """A ragged view's export: Ĉ into ``<group>.clips`` (the view's counts and boxes) written whole,
    then the SET tokens with their done flags, so a video is done only when both are on disk."""
    def write(idx: np.ndarray, tokens: np.ndarray, c_hat: list, boxes: list) -> None:
        refined.write_clips(idx, c_hat, boxes)
        rows.write(idx, {"set_token": tokens})
    return write
