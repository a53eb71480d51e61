"""Whether a SCALE run saw the test videos during pre-training (a *transductive* row).

The released code pretrains on UCF-101/HMDB-51 including their test videos (self-supervised,
no labels), and the paper's small-dataset rows come from such runs. vssl allows it but never
silently: the probe prints one stderr line and marks every row that reads such a run with
``"transductive": true`` (:mod:`.run`).

Which splits a run trained on, in order of trust:

1. ``meta["trained_on_splits"]``: the sorted split names of the videos it trained on, as
   recorded by ``vssl aggregate``;
2. older runs: ``meta["split"]``, the ``--split`` it was given, resolved against the store
   *as it is now*: a split name is that split; ``auto`` is 'train' when the store has such a
   split, else every video; ``all`` (or none) is every video, i.e. every split of the store.

Split names only identify videos within the store the run trained on: a run whose recorded
store is another directory than the probed one is taken as not transductive (vssl cannot tell
whether two stores share videos).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


def same_store(meta: dict[str, Any], store_path: str | Path) -> bool:
    """Whether the run's recorded store is the probed one (a run without the record: assumed so)."""
    recorded = meta.get("store")
    if recorded is None:
        return True
    return Path(recorded).resolve() == Path(store_path).resolve()


def transductive_note(meta: dict[str, Any], store, test_split: str, run_dir: Path) -> str | None:
    """One line saying that the run pretrained on the test split's videos, or None when it did not."""
    if not same_store(meta, store.path):
        return None
    splits, recorded = trained_on_splits(meta, store.splits().tolist())
    if test_split not in splits:
        return None
    how = "recorded" if recorded else f"inferred from its --split {meta.get('split')!r}"
    return (f"warning: SCALE run {run_dir} was pretrained on videos of the test split '{test_split}' "
            f"(trained on splits {', '.join(splits)}: {how}); its rows are transductive and the report "
            'marks them "transductive": true')
