"""Export: run a trained predictor without masking over a view, write ``aggregates/<run>/<view>``.

Like extraction, the export is resumable: rows are written whole chunk by chunk, each row's
done flag after its data, and a re-run only does the rows still pending. The group records
the SHA-256 of the checkpoint it came from, so rows of two different checkpoints never mix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vssl.aggregate.checkpoint import check_trained_on, load_run
from vssl.device import autocast, resolve_device, resolve_precision
from vssl.errors import StoreError
from vssl.features_store import FeatureStore
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
        attrs = store.rows(path).attrs if path.startswith("aggregates/") else {}
        if attrs.get("run") and all(attrs.get(k) == v for k, v in wanted.items()):
            found.append(attrs["run"])
    return default if default in found or not found else sorted(found)[0]


def export(store_path: str | Path, run_dir: str | Path, view: str, *, name: str | None = None,
           batch_size: int = 256, device: str = "auto", precision: str = "fp32",
           quiet: bool = False) -> dict[str, Any]:
    """Write ``set_token [N, H]`` and ``clips [N, K, H]`` for every done video of ``view``.

    ``name`` is the run name in the store (default: the run directory's name). Returns a
    summary: group path, rows written now, rows done in total.
    """
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model, cfg, meta = load_run(run_dir, dev)
    store = FeatureStore.open(store_path, mode="r+")
    check_trained_on(store, meta, run_dir, fix="export into a store of the same backbone")
    the_view = store.view(view)
    the_view.fixed_clips("vssl aggregate --export")
    if the_view.dim != model.in_dim:
        raise StoreError(f"view '{view}' has D={the_view.dim} but {run_dir} expects D={model.in_dim}")
    run_name = export_name(run_dir, name)
    group = aggregate_group(run_name, view)
    attrs = {"run": run_name, "run_dir": str(Path(run_dir).resolve()), "checkpoint_sha256": meta["checkpoint_sha256"],
             "epochs": meta["epochs"], "view": view, "width": cfg.width, "config": cfg.to_dict()}
    H, K = cfg.width, the_view.num_clips
    if store.has_rows(group):
        rows = store.rows(group)
        if rows.attrs.get("checkpoint_sha256") != attrs["checkpoint_sha256"]:
            raise StoreError(f"{group} in {store_path} was exported from another checkpoint of '{run_name}'; "
                             "pass another --name for this export")
    else:
        rows = store.create_rows(group, {"set_token": ((H,), "float32"), "clips": ((K, H), "float32")}, attrs)
    todo = np.flatnonzero(store.usable(view) & ~rows.done())
    written = 0
    with make_progress(quiet) as progress, torch.inference_mode():
        task = progress.add_task(f"export {view}", total=int(todo.size), info="")
        for start, stop in store.chunk_ranges():
            idx = todo[(todo >= start) & (todo < stop)]
            if idx.size == 0:
                continue
            tokens = np.empty((idx.size, H), np.float32)
            clips = np.empty((idx.size, K, H), np.float32)
            for s in range(0, idx.size, batch_size):
                sel = idx[s:s + batch_size]
                f, b = the_view.read(sel)
                with autocast(dev, prec):
                    c_hat, cls = model.encode(torch.from_numpy(f).to(dev), torch.from_numpy(b).to(dev))
                tokens[s:s + sel.size] = cls.float().cpu().numpy()
                clips[s:s + sel.size] = c_hat.float().cpu().numpy()
                progress.advance(task, sel.size)
            rows.write(idx, {"set_token": tokens, "clips": clips})  # one whole-chunk write, flags last
            written += int(idx.size)
    return {"group": group, "written": written, "done": int(rows.done().sum()), "num_videos": store.num_videos}
