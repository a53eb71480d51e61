"""Cached tokens against re-encoding every step: does the attentive probe learn as well either way?

The released attentive probe (facebookresearch/vjepa2 ``evals/video_classification_frozen``) runs the
frozen encoder at every step on freshly decoded clips; vssl encodes once and a cached random view
stands for that augmentation (a fresh cached clip per segment each step, ``--train-view``). Here the
same probe, same settings, same videos and seeds are trained both ways and scored on the same test
videos (the cached evaluation view). Videos and encoder are those of ``bench_token_grids.py`` (the class is
the quadrant a disk wanders in; a small random ViT whose tokens carry their place), at the ``1x2x2`` grid
where the probe learns the task there (a 4-block probe trained from scratch on ~100 videos learns little
on a task a single pooled vector already holds, so the grid's task is the one to compare the ways on):

- **cached**: :func:`~vssl.probe.attentive.train_attentive` on the store's ``random:8`` token view,
  2 of its clips drawn per video and step;
- **recomputed**: the same training, but every pass over the data first re-encodes each training video:
  :func:`vssl.embed` cuts a fresh ``random:2`` pair of clips (a new seed every pass) and the encoder
  runs again on them, as the released loop does.

It prints both top-1s per seed, the paired difference over the seeds with its 95% interval, and the
time of each way; the table goes to docs/PERFORMANCE.md ("Attentive probe: cached vs recomputed").

    python benchmarks/bench_attentive_ways.py --per-class 40 --seeds 2 --caches 8 32
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_token_grids import small_vit, where_parser, write_manifest  # noqa: E402
from benchmarks.harness import machine, markdown_table, write_section  # noqa: E402
from benchmarks.where_videos import CLASSES, write_where_videos  # noqa: E402
from vssl import embed  # noqa: E402
from vssl.extract import extract  # noqa: E402
from vssl.features_store import FeatureStore  # noqa: E402
from vssl.probe.attentive import (AttentiveConfig, TokenInputs, attentive_grid, token_clips,  # noqa: E402
                                  train_attentive)
from vssl.probe.train import fit  # noqa: E402
from vssl.probe.compare import paired_difference  # noqa: E402
from vssl.probe.data import load_split, with_train_view  # noqa: E402

GRID, EVAL, SEGMENTS = "1x2x2", "uniform:2x1", 2


class RecomputedInputs(TokenInputs):
    """The training samples of the released way: each pass over the data re-encodes the training videos
    (a fresh ``random:SEGMENTS`` cut, new seed per pass) and trains on those tokens."""

    def __init__(self, *args, paths: list[str], root: Path, seed: int, model, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.paths, self.root, self.passes, self.model = paths, root, seed * 100_000, model
        self.encoded = 0

    def _view_batches(self, positions, batch_size, gen, device):
        self.passes += 1
        fresh = embed([self.paths[i] for i in positions], root=self.root, model=self.model, backbone="bench-vit",
                      precision="fp32",
                      views=f"random:{SEGMENTS}", tokens=GRID, seed=self.passes)
        name = next(n for n in fresh[0].features if ".tokens" in n)
        tokens = np.zeros((len(self.labels), SEGMENTS, *fresh[0].features[name].shape[1:]), np.float32)
        tokens[positions] = np.stack([video.features[name] for video in fresh])
        self.encoded += len(positions) * SEGMENTS
        self.train_clips = token_clips(tokens)
        yield from super()._view_batches(positions, batch_size, gen, device)


def top1_hits(result, inputs: TokenInputs, test) -> np.ndarray:
    """Per test video: whether the trained probe's best class is its label."""
    scores = inputs.like(test.features, test.labels, 1).predict(result.model, np.arange(len(test.labels)),
                                                                torch.device("cpu"), result.precision)[:, 0]
    return scores.argmax(axis=1) == test.labels


def main() -> None:
    parser = where_parser(__doc__)
    parser.add_argument("--caches", type=int, nargs="+", default=[8, 32],
                        help="cached random clips per video, a cached row each (released SCALE caches 16)")
    args = parser.parse_args()
    caches = {f"cached ({k} clips)": f"random:{k}" for k in args.caches}
    cfg = AttentiveConfig(min_steps=args.min_steps, device="cpu", precision="fp32", lrs=tuple(args.lrs),
                          weight_decays=tuple(args.wds))
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_where_videos(Path(tmp) / "where", args.per_class)
        manifest = write_manifest(folder, args.per_class)
        store_path = Path(tmp) / "where.zarr"
        model = small_vit()
        extract(manifest, store_path, views=",".join([EVAL, *caches.values()]), tokens=GRID, model=model,
                backbone="bench-vit", precision="fp32", progress=False, root=folder)
        store = FeatureStore.open(store_path)
        eval_view = next(n for n in store.view_names() if n.startswith("uniform") and ".tokens" in n)
        train = load_split(store, eval_view, "train")
        test = load_split(store, eval_view, "test", flag="--test-split")
        views = {way: with_train_view(store, load_split(store, eval_view, "train"),
                                      f"{kind.replace(':', '')}.tokens{GRID}", SEGMENTS).train_view
                 for way, kind in caches.items()}
        paths = store.paths().tolist()
        train_paths = [paths[i] for i in train.indices]
        hits = {way: [] for way in [*caches, "recomputed"]}
        seconds = dict.fromkeys(hits, 0.0)
        encoded = 0
        for seed in range(args.seeds):
            run = replace(cfg, seed=seed)
            for way, view in views.items():
                t = time.perf_counter()
                result, inputs = train_attentive(train.features, train.labels, np.arange(len(train.labels)),
                                                 len(CLASSES), run, train_view=view)
                seconds[way] += time.perf_counter() - t
                hits[way].append(top1_hits(result, inputs, test))
            t = time.perf_counter()
            recomputed = RecomputedInputs(train.features, train.labels, 1, next(iter(views.values())),
                                          paths=train_paths, root=folder, seed=seed, model=model)
            result = fit(recomputed, np.arange(len(train.labels)),
                         attentive_grid(recomputed.clips.flat.shape[-1], len(CLASSES), run), run)
            seconds["recomputed"] += time.perf_counter() - t
            hits["recomputed"].append(top1_hits(result, recomputed, test))
            encoded += recomputed.encoded
    rows = [[way, *(f"{100 * h.mean():.1f}" for h in hit), f"{100 * np.mean(hit):.1f}", f"{seconds[way]:.0f}"]
            for way, hit in hits.items()]
    recomputed_hits = np.array(hits["recomputed"])
    summary = "\n".join("- " + paired_difference(np.array(hits[way]), recomputed_hits, way, "recomputed").statement()
                        for way in caches)
    table = markdown_table(["way", *(f"seed {s}" for s in range(args.seeds)), "mean top-1 %", "seconds"], rows)
    print(table)
    print(summary)
    print(f"training clips encoded: recomputed {encoded} (over the seeds); cached: {', '.join(map(str, args.caches))} "
          "per video, once")
    if not args.no_doc:
        write_section("attentive-ways", f"""### Attentive probe: cached vs recomputed

`python benchmarks/bench_attentive_ways.py --per-class {args.per_class} --seeds {args.seeds}` ({machine()}).
The quadrant videos ({args.per_class} per class, a third tested) and the small random ViT of "Token grids where the
place is the class", `{GRID}` token grids;
heads lr {args.lrs} x wd {args.wds}, at least {args.min_steps} steps, selection on held-out training videos.
Cached: a `random:K` token view (K = {', '.join(map(str, args.caches))}), {SEGMENTS} cached clips drawn per video and step. Recomputed: every pass
re-encodes a fresh `random:{SEGMENTS}` cut of every training video ({encoded} clips encoded over the seeds).
Test: the cached `{EVAL}` view.

{table}

{summary}""")


if __name__ == "__main__":
    main()
