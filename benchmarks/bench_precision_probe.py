"""Do bf16 features keep probe accuracy? fp32 vs bf16 extraction of the same clips, then the same probes.

    python benchmarks/bench_precision_probe.py [--videos 120] [--out DIR]

Generates the demo's dataset, extracts its uniform view twice with the real EfficientNet-Lite0
(ImageNet weights, per frame): once in fp32, once under bf16 autocast (`--precision bf16`), and
runs k-NN and the linear probe on both stores. Prints the feature agreement (cosine similarity
between the two stores' clip embeddings) and each probe's top-1 next to each other; the extraction
times come from the same run, so their ratio is the speed-up on this machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from vssl.demo.dataset import generate_dataset
from vssl.extract.pipeline import extract
from vssl.features_store import FeatureStore
from vssl.probe import KnnConfig, LinearConfig, ProbeRequest, run_probes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=120)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="vssl-precision-"))
    manifest = generate_dataset(out / "videos", num_videos=args.videos, seed=0)
    rows, seconds, stores = {}, {}, {}
    for precision in ("fp32", "bf16"):
        store = out / f"{precision}.zarr"
        t = time.perf_counter()
        extract(manifest, store, backbone="efficientnet-lite0", views="uniform:5x3", frames=2, stride=8, size=64,
                precision=precision, device="cpu", dtype="float32", progress=False)
        seconds[precision] = time.perf_counter() - t
        stores[precision] = FeatureStore.open(store)
        report = run_probes(ProbeRequest(store=store, view="uniform5x3", knn=KnnConfig(device="cpu"),
                                         linear=LinearConfig(epochs=60, device="cpu", precision="fp32",
                                                                             solver="minibatch"), quiet=True))
        rows[precision] = {r.probe: r.top1 for r in report.results}
    a = stores["fp32"].view("uniform5x3").read_features(np.arange(stores["fp32"].num_videos)).astype(np.float64)
    b = stores["bf16"].view("uniform5x3").read_features(np.arange(stores["bf16"].num_videos)).astype(np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    print(f"{args.videos} videos, EfficientNet-Lite0 per frame, uniform:5x3, linear probe trained in fp32")
    print(f"clip-embedding cosine fp32 vs bf16: mean {cos.mean():.5f}, min {cos.min():.5f}")
    print(f"extraction time: fp32 {seconds['fp32']:.1f} s, bf16 {seconds['bf16']:.1f} s "
          f"({seconds['fp32'] / seconds['bf16']:.2f}x)")
    for probe in rows["fp32"]:
        print(f"{probe:>8}: top-1 fp32 {rows['fp32'][probe]:.2f}  bf16 {rows['bf16'][probe]:.2f}")


if __name__ == "__main__":
    main()
