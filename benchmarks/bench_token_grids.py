"""Does a token grid keep *where*? Probe accuracy per pooled grid on videos whose class is a place.

On the generated quadrant set (:mod:`where_videos`: the class is the quadrant a disk wanders in), a
small random video ViT (VideoMAE's layout: a fixed sin-cos position table added to the patch tokens, so a
token carries where it is; a conv net's map does not) is extracted once as a pooled view and as token
views at several grids (``1x1x1`` ... ``full``), all cut from the same clips; then, side by side on the
same test videos:

- ``linear`` on the pooled view (one vector per clip, the store of every vssl release so far);
- ``attentive`` on each token view (V-JEPA 2's probe over all tokens of a video's clips);
- for reference, scikit-learn's logistic regression on each video's flattened grid (every cell its own
  weights: how much of the class the grid holds for a model that is told where each token is).

Each row is trained under ``--seeds`` seeds and printed with its 95% interval; the table goes to
docs/PERFORMANCE.md ("Token grids where the place is the class").

    python benchmarks/bench_token_grids.py --per-class 30 --seeds 3
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import machine, markdown_table, write_section  # noqa: E402
from benchmarks.where_videos import CLASSES, write_where_videos  # noqa: E402
from vssl.extract import extract  # noqa: E402
from vssl.extract.backbones.video_vit import VIDEOMAE_SPEC, VideoViT  # noqa: E402
from vssl.extract.backbones.vit_layers import ViTShape  # noqa: E402
from vssl.features_store import FeatureStore  # noqa: E402
from vssl.probe.data import load_split  # noqa: E402
from vssl.probe import LinearConfig, ProbeRequest, run_probes  # noqa: E402
from vssl.probe.attentive import AttentiveConfig  # noqa: E402

EVAL, TRAIN = "uniform:2x1", "random:8"
GRIDS = ("1x1x1", "1x2x2", "2x2x2", "full")


def small_vit():
    """A random VideoMAE-layout ViT for 8 x 64 px clips (patch 16, tubelet 2: a 4x4x4 token grid), width 96."""
    import torch

    torch.manual_seed(0)
    return VideoViT(ViTShape(embed_dim=96, depth=4, num_heads=4, mlp_hidden=384),
                    VIDEOMAE_SPEC.with_overrides(frames=8, stride=2, size=64))


def write_manifest(folder: Path, per_class: int, test_share: float = 1 / 3) -> Path:
    """``path,label,split`` rows: the last third of each class's videos is the test split."""
    manifest = folder / "videos.csv"
    n_test = max(1, round(per_class * test_share))
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        for name in CLASSES:
            for i, path in enumerate(sorted((folder / name).glob("*.mp4"))):
                writer.writerow([path.relative_to(folder).as_posix(), name,
                                 "test" if i >= per_class - n_test else "train"])
    return manifest


def extract_grids(manifest: Path, store: Path) -> dict[str, str]:
    """The pooled view and one token view per grid, all from the same clips; grid -> token view name."""
    names: dict[str, str] = {}
    model = small_vit()
    for grid in GRIDS:
        before = set(FeatureStore.open(store).view_names()) if store.exists() else set()
        extract(manifest, store, model=model, backbone="bench-vit", views=f"{EVAL},{TRAIN}", tokens=grid,
                precision="fp32", progress=False, root=manifest.parent)
        added = sorted(set(FeatureStore.open(store).view_names()) - before)
        names[grid] = next(n for n in added if n.startswith("uniform") and ".tokens" in n)
    return names


def logistic_on_grid(store_path: Path, view: str) -> tuple[float, float, float, float]:
    """(top-1, 95% low, high, seconds) of a logistic regression on each video's flattened, standardised grid,
    its C chosen by 4-fold cross-validation on the training split."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from vssl.probe.metrics import bootstrap_weights, percentile_interval

    t = time.perf_counter()
    store = FeatureStore.open(store_path)
    train, test = load_split(store, view, "train"), load_split(store, view, "test", flag="--test-split")
    flat = lambda split: split.features.reshape(len(split.labels), -1).astype("float64")  # noqa: E731
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[0.01, 0.1, 1.0], cv=4, max_iter=5000))
    hits = model.fit(flat(train), train.labels).predict(flat(test)) == test.labels
    low, high = percentile_interval(bootstrap_weights(len(hits)) @ hits / len(hits) * 100)
    return 100 * hits.mean(), low, high, time.perf_counter() - t


def row(store: Path, seeds: int, **request) -> tuple[float, float, float, float]:
    """(top-1, interval low, interval high, seconds) of the request's one row."""
    t = time.perf_counter()
    result = run_probes(ProbeRequest(store=store, quiet=True, seeds=seeds, **request)).results[0]
    low, high = result.ci["low"], result.ci["high"]
    return result.top1, low, high, time.perf_counter() - t


def where_parser(doc: str) -> argparse.ArgumentParser:
    """The settings the quadrant-video benchmarks share: data size, seeds and the attentive heads' budget."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--min-steps", type=int, default=300, help="step floor of every trained probe")
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-3, 1e-3, 3e-4],
                        help="attentive heads' learning rates (the released 20-head grid is ~7x the CPU time)")
    parser.add_argument("--wds", type=float, nargs="+", default=[0.01])
    parser.add_argument("--no-doc", action="store_true", help="print only, leave docs/PERFORMANCE.md as it is")
    return parser


def main() -> None:
    args = where_parser(__doc__).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_where_videos(Path(tmp) / "where", args.per_class)
        manifest = write_manifest(folder, args.per_class)
        store = Path(tmp) / "where.zarr"
        token_views = extract_grids(manifest, store)
        linear = LinearConfig(min_steps=args.min_steps)
        attentive = AttentiveConfig(min_steps=args.min_steps, lrs=tuple(args.lrs), weight_decays=tuple(args.wds))
        rows = [["linear", "pooled (1 vector per clip)", *row(store, args.seeds, view="uniform2x1", linear=linear)]]
        for grid, view in token_views.items():
            rows.append(["attentive", f"{grid} ({view})", *row(store, args.seeds, view=view, attentive=attentive,
                                                                train_view=view.replace("uniform2x1", "random8"),
                                                                train_clips=2)])
            rows.append(["logistic regression (scikit-learn, reference)", f"{grid}, flattened",
                         *logistic_on_grid(store, view)])
    header = ["probe", "features", "top-1 %", "95% low", "95% high", "seconds"]
    table = markdown_table(header, rows)
    print(table)
    if not args.no_doc:
        write_section("token-grids", f"""### Token grids where the place is the class

`python benchmarks/bench_token_grids.py --per-class {args.per_class} --seeds {args.seeds}` ({machine()}).
Generated quadrant videos ({len(CLASSES)} classes, {args.per_class} per class, a third of each class tested),
a random VideoMAE-layout ViT (width 96, depth 4, 4x4x4 token grid), evaluation view `{EVAL}`, trained on a cached `{TRAIN}` view (2 clips a step), every
trained row at least {args.min_steps} steps, attentive heads lr {args.lrs} x wd {args.wds} (the released
20-head grid costs ~10x the CPU time), {args.seeds} seeds, 95% bootstrap intervals over test videos.

{table}""")


if __name__ == "__main__":
    main()
