"""Reading a split of a store view into memory for probing: done, labelled videos only.

With ``--train-view`` the training split is also read from a second view (:class:`TrainView`):
trained probes fit on its clips, a fresh random subset per step, while selection and test read
``--view`` (released SCALE trains its probes on 8 random of 16 ``lin`` clips per step,
src/eval.py:88 ``split_in_half(x, pos, args.num_views)``, and tests on every ``val`` clip).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from vssl.errors import VsslError
from vssl.features_store.ragged import RaggedClips, as_ragged, iter_clips, read_clips

from .labels import video_labels

log = logging.getLogger("vssl.probe")


@dataclass
class TrainView:
    """The training split's videos in the training view, row for row with its :class:`SplitData`."""

    name: str
    features: np.ndarray           # [n, K', D], stored dtype
    boxes: np.ndarray | None       # [n, K', 7] float32 when asked for
    clips: int                     # clips of a video drawn per step (released: 8 of 16)
    time_ordered: bool = True      # its clips are stored in time order (not a random view's draw order)

    def subset(self, positions: np.ndarray) -> "TrainView":
        return TrainView(self.name, self.features[positions],
                         None if self.boxes is None else self.boxes[positions], self.clips, self.time_ordered)


@dataclass
class SplitData:
    """The labelled, extracted videos of one split: store rows, labels and their clip features."""

    split: str
    indices: np.ndarray            # store rows, sorted
    labels: np.ndarray             # int64 [n], or [n, C] multi-hot, or float [n] values (.labels)
    features: np.ndarray | RaggedClips   # [n, K, D], stored dtype (clips varying per video: RaggedClips)
    boxes: np.ndarray | RaggedClips | None  # [n, K, 7] float32 when asked for (as features)
    train_view: TrainView | None = None   # the same videos in --train-view (training split only)
    crops: int = 1                 # S spatial crops per temporal position (clip t*S + s); see view_crops
    token_grid: tuple[int, int, int] | None = None  # (T', H', W') of a token view's clips, t-major; see view_token_grid

    def subset(self, positions: np.ndarray) -> "SplitData":
        return SplitData(self.split, self.indices[positions], self.labels[positions], self.features[positions],
                         None if self.boxes is None else self.boxes[positions],
                         None if self.train_view is None else self.train_view.subset(positions), self.crops,
                         self.token_grid)


#: the sampler kinds whose clips are a T x S grid, time-major (``vssl.extract.view_kinds.grid``)
GRID_SAMPLERS = ("uniform", "segment")
#: the sampler kinds that store a video's clips in time order (``random`` keeps the order it drew them in)
TIME_ORDERED = (*GRID_SAMPLERS, "dense")


def view_crops(view) -> int:
    """S, the square crops per temporal position of an evaluation view (``uniform:TxS``,
    ``segment:TxS``: clip ``t * S + s`` is position t, crop s); 1 for every other view. A probe that
    treats each crop as its own view of the video (V-JEPA 2's "views per segment") reads it here."""
    spec = view.spec
    if spec.get("sampler") not in GRID_SAMPLERS:
        return 1
    crops = int(spec.get("spatial", 1))
    if view.num_clips is not None and view.num_clips % crops:
        raise VsslError(f"view '{view.name}' records {crops} crops per position but holds {view.num_clips} clips "
                        "per video; re-extract it")
    return crops


def view_token_grid(view) -> tuple[int, int, int] | None:
    """The (T', H', W') cells of a token view's clips (``vssl extract --tokens`` records it), None for a view
    of one vector per clip: where each of a clip's tokens lies, for a probe that adds it."""
    grid = (view.record or {}).get("token_grid")
    return None if grid is None else tuple(int(n) for n in grid)


def labelled_rows(store, view, split: str, flag: str, target: str | None = None) -> np.ndarray:
    """Rows of ``split`` that carry a label (a value of ``target``) and are done in ``view``; a
    clear error when none are."""
    idx = store.split_indices(split)
    labelled = idx[video_labels(store, target)[1][idx]]
    if labelled.size == 0:
        what = "with label -1" if target is None else f"without a value of target '{target}'"
        raise VsslError(f"{flag} '{split}' has no labelled videos in {store.path} ({idx.size} videos, all "
                        f"{what}); label them in the store or choose another split")
    done = store.usable(view.name)[labelled]
    if not done.any():
        raise VsslError(f"view '{view.name}' has no extracted videos in split '{split}' of {store.path}; "
                        f"run `vssl extract` for that view first")
    if not done.all():
        log.warning("split '%s': %d of %d labelled videos are not extracted in view '%s' and are left out",
                    split, int((~done).sum()), labelled.size, view.name)
    return labelled[done]


def read_in_blocks(read, rows: np.ndarray, block: int = 4096) -> np.ndarray:
    """Concatenate ``read(rows[a:b])`` over blocks (bounded temporary memory); ``read`` is any
    reader of a block of store rows (a view's features or boxes, an export's arrays)."""
    parts = [read(rows[s:s + block]) for s in range(0, len(rows), block)]
    return np.concatenate(parts) if parts else np.zeros((0,))


def load_split(store, view_name: str, split: str, flag: str = "--train-split", boxes: bool = False,
               video_level: bool = False, target: str | None = None, knn_rule: str = "dino") -> SplitData:
    """Features (and optionally boxes) of the labelled, done videos of ``split`` in view ``view_name``.

    One path for both layouts: the videos are read in batches of similar length
    (:func:`~vssl.features_store.ragged.iter_clips`), so a long film never pads a batch of short
    videos; the clips are kept as ``[n, K, D]`` when every video has K (a fixed view), else as
    :class:`RaggedClips` (every real clip, no padding).

    ``video_level`` keeps only each video's k-NN vector under ``knn_rule`` (``[n, 1, D]`` float32,
    :func:`~vssl.probe.knn.video_vectors` over its real clips), reduced batch by batch while reading:
    a k-NN-only run at Kinetics scale then holds 0.7 GB instead of the 5.5 GB of all float16 clips.
    """
    view = store.view(view_name)
    rows = labelled_rows(store, view, split, flag, target)
    labels = video_labels(store, target)[0][rows]
    if video_level:
        from .knn import video_vectors

        feats = np.zeros((len(rows), 1, view.dim), np.float32)
        for group, clips, _ in iter_clips(view, rows):
            feats[group, 0] = video_vectors(clips, knn_rule)
        return SplitData(split, rows, labels, feats, None, crops=view_crops(view))
    clips, bxs = read_clips(view, rows)
    return SplitData(split, rows, labels, clips.dense(), bxs.dense() if boxes else None, crops=view_crops(view),
                     token_grid=view_token_grid(view))


def with_train_view(store, split: SplitData, view_name: str, clips: int, boxes: bool = False) -> SplitData:
    """``split`` (read from ``--view``) with the same videos read from ``view_name`` too.

    Both views must hold the same videos at the same feature width; training videos not yet
    extracted in ``view_name`` are left out with a warning (as :func:`labelled_rows` does).
    """
    view = store.view(view_name)
    view.fixed_clips("vssl probe --train-view")
    eval_dim = split.features.shape[-1]
    if view.dim != eval_dim:
        raise VsslError(f"--train-view {view_name} has {view.dim}-d clips but the probed view has {eval_dim}-d; "
                        "both views must come from the same backbone")
    shape = tuple(as_ragged(split.features).flat.shape[1:])
    if tuple(view.clip_shape) != shape:
        raise VsslError(f"--train-view {view_name} holds clips of shape {tuple(view.clip_shape)} but the probed view's "
                        f"are {shape}; train on a view of the same token grid (or of pooled clips for pooled clips)")
    if view_token_grid(view) != split.token_grid:
        raise VsslError(f"--train-view {view_name} holds tokens on grid {view_token_grid(view)} but the probed view's "
                        f"are on {split.token_grid}; train on a view of the same token grid")
    if view.num_clips < clips:
        raise VsslError(f"--train-clips {clips}: view '{view_name}' has only {view.num_clips} clips per video; "
                        f"use --train-clips {view.num_clips} or less")
    usable = store.usable(view_name)[split.indices]
    if not usable.any():
        raise VsslError(f"--train-view {view_name} has no extracted videos of split '{split.split}'; "
                        "run `vssl extract` for that view first")
    if not usable.all():
        log.warning("--train-view %s: %d of %d training videos are not extracted there and are left out",
                    view_name, int((~usable).sum()), usable.size)
        split = split.subset(np.flatnonzero(usable))
    feats = read_in_blocks(view.read_features, split.indices)
    bx = read_in_blocks(view.read_boxes, split.indices) if boxes else None
    split.train_view = TrainView(view_name, feats, bx, clips, view.spec.get("sampler") in TIME_ORDERED)
    return split
