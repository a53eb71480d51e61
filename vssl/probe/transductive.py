"""Whether a SCALE run saw the test videos during pre-training (a *transductive* row).

The released code pretrains on UCF-101/HMDB-51 including their test videos (self-supervised,
no labels), and the paper's small-dataset rows come from such runs. vssl allows it but never
silently: the probe prints one stderr line and marks every row that reads such a run with
``"transductive": true`` (:mod:`.run`).

The question is about videos, not about a store's directory: a store copied, moved or made
anew from the same videos holds the same videos. A video is identified by its path as the
store records it, relative to the extraction's input root (:func:`vssl.hashing.video_keys`).
What the run trained on, in order of trust:

1. ``meta["trained_on_videos"]``: the keys of the videos it trained on, recorded by ``vssl
   aggregate`` (with ``meta["store_id"]``, the creation id of the store they were read from).
   Exact for the store it trained on (whose rows are those videos) and for any other store.
2. older runs: the videos of its splits in its store, read again: ``meta["trained_on_splits"]``,
   or else ``meta["split"]`` resolved against that store (a split name is that split; ``auto``
   is 'train' when the store has one, else every video; ``all``, or none, is every video).
   Its store is ``meta["store"]`` when that path still holds a store, else the probed store
   is assumed to be it (a moved store): then the line says that the answer is not certain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vssl.hashing import video_keys


@dataclass(frozen=True)
class Verdict:
    """Whether the rows of a run are transductive, and the stderr line that says so (or that
    says the answer rests on an assumption); ``line`` None: nothing to say."""

    transductive: bool
    line: str | None


@dataclass(frozen=True)
class TrainedOn:
    """The keys of the videos a run trained on, how they are known, and whether for certain."""

    keys: np.ndarray
    how: str
    certain: bool = True


def trained_on_splits(meta: dict[str, Any], store_splits: list[str]) -> tuple[list[str], bool]:
    """The sorted split names the run trained on, and whether the run recorded them (True) or
    they were inferred from ``meta["split"]`` and the store's splits ``store_splits`` (False)."""
    if meta.get("trained_on_splits") is not None:
        return sorted(str(s) for s in meta["trained_on_splits"]), True
    names = sorted(set(store_splits) - {""})
    split = meta.get("split")
    if split == "auto":
        split = "train" if "train" in names else None
    if split in (None, "all"):
        return names, False
    return [str(split)], False


def trained_on(meta: dict[str, Any], store) -> TrainedOn:
    """What the run trained on: its record, or (older runs) the videos of its splits in its store."""
    if meta.get("trained_on_videos") is not None:
        same = meta.get("store_id") == store.store_id       # one creation: this store, wherever it now lives
        where = "this store" if same else f"the store {meta.get('store')}, another store than this one"
        return TrainedOn(np.asarray(meta["trained_on_videos"], dtype=np.int64), f"as the run recorded them, in {where}")
    source, certain = _run_store(meta, store)
    splits, recorded = trained_on_splits(meta, source.splits().tolist())
    rows = np.flatnonzero(np.isin(source.splits(), splits))
    how = (f"its splits {', '.join(splits)} ("
           + ("recorded" if recorded else f"inferred from its --split {meta.get('split')!r}") + f") in {source.path}")
    if not certain:
        how += (f"; the run predates vssl's record of its videos and its store {meta.get('store')} is gone, "
                "so it is assumed to have trained on this store")
    return TrainedOn(video_keys(source.paths()[rows]), how, certain)


def _run_store(meta: dict[str, Any], store):
    """The store an older run trained on, and whether that is certain: its recorded path when
    that is the probed store or still holds a store; else the probed store (assumed moved)."""
    from vssl.features_store import FeatureStore

    recorded = meta.get("store")
    if recorded is None or Path(recorded).resolve() == Path(store.path).resolve():
        return store, True
    if FeatureStore.exists(recorded):
        return FeatureStore.open(recorded), True
    return store, False


def judge_run(meta: dict[str, Any], store, test_split: str, test_indices: np.ndarray, run_dir: Path) -> Verdict:
    """Whether the run (its checkpoint ``meta``) pretrained on any of the probed test videos
    (rows ``test_indices`` of ``store``, split ``test_split``), and the line the probe prints."""
    run = trained_on(meta, store)
    seen = int(np.isin(video_keys(store.paths()[test_indices]), run.keys).sum())
    n = len(test_indices)
    if seen:
        return Verdict(True, f"warning: SCALE run {run_dir} was pretrained on {seen} of the {n} test videos of "
                             f"split '{test_split}' ({run.how}); its rows are transductive and the report marks "
                             'them "transductive": true')
    if not run.certain:
        return Verdict(False, f"note: SCALE run {run_dir} did not pretrain on the test split '{test_split}' "
                              f"as far as can be told ({run.how}); its rows are marked \"transductive\": false")
    return Verdict(False, None)
