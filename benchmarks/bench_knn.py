"""k-NN search time at Kinetics-400 scale, every method side by side in one run.

Default shapes: 240k training x 20k test videos, 768-d (ViT-B) features, k = 20. Methods:
  matmul     the floor: the same blocked float32 products, no top-k (no neighbours at all)
  faiss      vssl's default on CPU: faiss IndexFlatIP (exact)
  torch      vssl's torch backend: blocked float32 product + top-k (exact)
  torch-bf16 bf16 shortlist (2k+8) re-ranked in float32, uncertified queries redone in fp32 (exact)
  sklearn    scikit-learn NearestNeighbors(algorithm="brute", metric="cosine")
Every method's neighbours are compared with faiss's (as sets per query, so exact ties in
order do not count as a difference). Data: unit vectors around 400 "class" centres, so
neighbourhoods look like those of real features (near neighbours much closer than the rest).

    python benchmarks/bench_knn.py [--train 240000] [--test 20000] [--dim 768] [--skip sklearn]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from harness import machine, markdown_table, write_section
from vssl.probe.knn import KnnConfig, search


def make_data(n_train: int, n_test: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((400, dim), dtype=np.float32)

    def sample(n):
        x = centers[rng.integers(0, 400, n)] + 1.5 * rng.standard_normal((n, dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    return sample(n_train), sample(n_test)


def bare_matmul(train: np.ndarray, test: np.ndarray, block: int) -> None:
    """The same float32 products into one reused output buffer, nothing else."""
    tr = torch.from_numpy(train)
    out = torch.empty(min(block, len(test)), len(train))
    for s in range(0, len(test), block):
        q = torch.from_numpy(test[s:s + block])
        torch.mm(q, tr.T, out=out[:len(q)])


def sklearn_knn(train, test, k):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine").fit(train)
    dist, idx = nn.kneighbors(test)
    return 1 - dist, idx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=240_000)
    ap.add_argument("--test", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--block", type=int, default=KnnConfig().query_block, help="queries per block (all methods)")
    ap.add_argument("--skip", nargs="*", default=[], help="methods to leave out")
    ap.add_argument("--write-doc", action="store_true", help="update docs/PERFORMANCE.md")
    args = ap.parse_args()
    train, test = make_data(args.train, args.test, args.dim)
    print(f"# {args.train} train x {args.test} test x {args.dim}-d, k={args.k}, "
          f"{torch.get_num_threads()} torch threads, block {args.block}")
    methods = {
        "matmul": lambda: bare_matmul(train, test, args.block),
        "faiss": lambda: search(train, test, KnnConfig(k=args.k, backend="faiss", device="cpu",
                                                       query_block=args.block)),
        "torch": lambda: search(train, test, KnnConfig(k=args.k, backend="torch", device="cpu",
                                                       query_block=args.block)),
        "torch-bf16": lambda: search(train, test, KnnConfig(k=args.k, backend="torch", precision="bf16",
                                                            device="cpu", query_block=args.block)),
        "sklearn": lambda: sklearn_knn(train, test, args.k),
    }
    results, times = {}, {}
    for name, fn in methods.items():
        if name in args.skip:
            continue
        t = time.perf_counter()
        results[name] = fn()
        times[name] = time.perf_counter() - t
        print(f"#   {name}: {times[name]:.1f} s", flush=True)
    ref = results.get("faiss")
    floor = times.get("matmul")
    rows = []
    for name, t in times.items():
        same = "-"
        if ref is not None and name != "matmul":
            a, b = np.sort(results[name][1], 1), np.sort(ref[1], 1)
            same = f"{(a == b).all(1).mean() * 100:.2f}%"
        rows.append([name, t, t / floor if floor else "-", same])
    table = markdown_table(["method", "time (s)", "x matmul", "queries with faiss's neighbours"], rows)
    body = (f"## k-NN probe search (`vssl probe --knn`)\n\n"
            f"`python benchmarks/bench_knn.py` — {args.train} train x {args.test} test x {args.dim}-d, "
            f"k={args.k}, query blocks of {args.block}; {machine()}.\n\n{table}\n")
    print(body)
    if args.write_doc:
        write_section("knn", body)


if __name__ == "__main__":
    main()
