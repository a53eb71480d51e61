"""Search speed: exact search against its plain reference, faiss indexes against exact, one query end to end.

Data: a clustered synthetic gallery — a mixture of 1,000 Gaussian centres, each row a centre plus
``--spread`` x unit Gaussian noise, l2-normalised (uniform random vectors would make approximate
search meaningless: no row is much nearer than another) — default 1M x 768 (ViT-B width), and 1,000
queries drawn from the same mixture. Parts, each measured side by side in one run:

  1. exact   ``vssl.search.exact.exact_search`` (the one tie rule) vs a plain blocked fp32 matmul +
             ``torch.topk`` of the same query blocks; runs interleaved, median of ``--repeat``;
  2. query   time to first result of ``vssl search`` of one new video: the backbone built, the video
             decoded and cut into clips, the forward passes, the query vector and the exact gallery
             search, each as a share of the total (``vssl.embed`` on a generated video);
  3. indexes ``vssl.search.index.build_index(vectors, kind)`` / ``search_index`` for ``ivf`` and ``hnsw``
             (vssl's default parameters): build time, search time against exact's, Recall@10 of exact's
             neighbours (the longest part: the builds run last).

Ratios, no timed assertions. Threads: ``--threads`` (default: the machine's cores) for torch and faiss.

    python benchmarks/bench_search.py [--rows 1000000] [--dim 768] [--queries 1000] [--skip hnsw] [--write-doc]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import machine, markdown_table, write_section  # noqa: E402
from vssl.search.exact import QUERY_BLOCK, exact_search  # noqa: E402

CENTRES = 1000
K = 10


# ---------------------------------------------------------------- data


def clustered(n: int, centres: np.ndarray, spread: float, rng: np.random.Generator, part: int = 65536) -> np.ndarray:
    """``n`` l2-normalised rows, each a random centre plus ``spread`` x N(0, I) noise (float32,
    built in parts so no float64 copy of a 3 GB gallery is ever made)."""
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for s in range(0, n, part):
        block = out[s:s + part]
        rng.standard_normal(block.shape, dtype=np.float32, out=block)
        block *= spread
        block += centres[rng.integers(0, len(centres), len(block))]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return out


def make_data(rows: int, queries: int, dim: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, dim), dtype=np.float32)
    return clustered(rows, centres, spread, rng), clustered(queries, centres, spread, rng)


# ---------------------------------------------------------------- 1. exact vs the plain reference


def plain_topk(gallery: np.ndarray, queries: np.ndarray, k: int, block: int = QUERY_BLOCK
               ) -> tuple[np.ndarray, np.ndarray]:
    """The reference: a blocked fp32 product into one reused buffer and ``torch.topk`` (ties in
    whatever order topk leaves them)."""
    g = torch.from_numpy(gallery)
    out = torch.empty(min(block, len(queries)), len(gallery))
    sims, rows = [], []
    with torch.inference_mode():
        for s in range(0, len(queries), block):
            q = torch.from_numpy(queries[s:s + block])
            v, i = torch.topk(torch.mm(q, g.T, out=out[:len(q)]), k, dim=1)
            sims.append(v.numpy().copy())
            rows.append(i.numpy().copy())
    return np.concatenate(sims), np.concatenate(rows)


def interleaved(methods: dict[str, Callable[[], object]], repeat: int
                ) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Each method's seconds in each of ``repeat`` rounds, the methods alternating within a round and
    their order reversed every other round (A B, B A, ...), so a shared machine's load, rising or
    falling, weighs on each alike; the last result of each."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    results: dict[str, object] = {}
    for r in range(repeat):
        for name in (list(methods) if r % 2 == 0 else list(methods)[::-1]):
            t = time.perf_counter()
            results[name] = methods[name]()
            times[name].append(time.perf_counter() - t)
            print(f"#   {name} round {r + 1}: {times[name][-1]:.2f} s", flush=True)
    return times, results


def bench_exact(gallery: np.ndarray, queries: np.ndarray, repeat: int) -> tuple[str, tuple]:
    times, results = interleaved({
        "plain": lambda: plain_topk(gallery, queries, K),
        "exact": lambda: exact_search(gallery, queries, K, device="cpu"),
    }, repeat)
    (ps, _), (es, erows) = results["plain"], results["exact"]
    same = float((np.sort(ps, 1) == np.sort(es, 1)).all(1).mean() * 100)
    ratios = [e / p for e, p in zip(times["exact"], times["plain"])]
    shown = lambda ts: ", ".join(f"{t:.1f}" for t in ts)  # noqa: E731
    table = markdown_table(["search", "time per round (s)", "median (s)", "x plain: median of the rounds' ratios"], [
        ["plain: blocked fp32 matmul + torch.topk", shown(times["plain"]), statistics.median(times["plain"]), 1.0],
        ["vssl exact_search (tie rule: equal similarity, lower row first)", shown(times["exact"]),
         statistics.median(times["exact"]), statistics.median(ratios)],
    ])
    note = (f"\n\nEach round's ratio: {', '.join(f'{r:.2f}' for r in ratios)}. Queries whose 10 similarities "
            f"equal the plain search's: {same:.2f}%.\n")
    return table + note, (statistics.median(times["exact"]), erows)


# ---------------------------------------------------------------- 2. faiss indexes vs exact


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of the share of ``truth``'s rows (exact's top-k) that ``found`` holds."""
    return float(np.mean([len(np.intersect1d(f[f >= 0], t)) / len(t) for f, t in zip(found, truth)]))


def bench_indexes(gallery: np.ndarray, queries: np.ndarray, exact: tuple[float, np.ndarray], kinds: list[str],
                  repeat: int) -> str:
    from vssl.search.index import build_index, search_index

    exact_time, truth = exact
    rows = [["exact (flat)", "-", exact_time, 1.0, 1.0]]
    for kind in kinds:
        t = time.perf_counter()
        index = build_index(gallery, kind)
        built = time.perf_counter() - t
        print(f"#   {kind} built in {built:.1f} s", flush=True)
        times, results = interleaved({kind: lambda: search_index(index, queries, K)}, repeat)
        found, searched = np.asarray(results[kind][1]), statistics.median(times[kind])
        rows.append([f"{kind} ({describe(index)})", built, searched, exact_time / searched,
                     recall_at(found, truth)])
        print(f"#   {rows[-1]}", flush=True)
        del index
    return markdown_table(["index", "build (s)", "search (s)", "x faster than exact", "Recall@10 of exact's"],
                          rows) + "\n"


def describe(index) -> str:
    """The parameters an index searches with (IVF: nlist/nprobe; HNSW: M/efSearch/efConstruction)."""
    import faiss

    inner = index
    for _ in range(3):  # through wrappers (an id map, a pre-transform) to the searching index
        try:
            inner = faiss.downcast_index(inner)
        except Exception:  # noqa: BLE001 - not a faiss index object: describe what it is
            break
        if isinstance(inner, faiss.IndexIVF):
            return f"nlist {inner.nlist}, nprobe {inner.nprobe}"
        if isinstance(inner, faiss.IndexHNSW):
            return (f"M {inner.hnsw.nb_neighbors(1)}, efSearch {inner.hnsw.efSearch}, "
                    f"efConstruction {inner.hnsw.efConstruction}")
        if not hasattr(inner, "index"):
            break
        inner = inner.index
    return type(inner).__name__


# ---------------------------------------------------------------- 3. one new video end to end


def write_query_video(path: Path, seconds: float = 10.0, fps: int = 25, width: int = 320, height: int = 240) -> Path:
    """A UCF-101-sized clip (320x240, 25 fps, H.264) of a drifting random texture: real motion for the
    codec, so decoding costs what a real file of that size costs."""
    import av

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height * 2, width * 2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for n in range(int(seconds * fps)):
            y, x = (2 * n) % height, (3 * n) % width
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[y:y + height, x:x + width]), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


class ForwardClock:
    """Seconds spent in a module's forward passes (hooks around each call)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seconds, self.calls, self._t = 0.0, 0, 0.0
        module.register_forward_pre_hook(lambda *_: setattr(self, "_t", time.perf_counter()))
        module.register_forward_hook(lambda *_: self._stop())

    def _stop(self) -> None:
        self.seconds += time.perf_counter() - self._t
        self.calls += 1


def bench_query(gallery: np.ndarray, query: np.ndarray, backbone: str, views: str) -> str:
    """Time to first result of one new video: build the backbone, embed (decode + cut + forward),
    the query vector (mean of l2-normalised clips, l2-normalised), the exact search.

    The gallery is the benchmark's (its width, e.g. ViT-B's 768, need not be this backbone's): the
    search costs N x D whatever the vector holds, so it searches ``query``, a row of that width.
    """
    import vssl
    from vssl.extract.backbones import create_backbone

    with tempfile.TemporaryDirectory() as tmp:
        video = write_query_video(Path(tmp) / "query.mp4")
        t0 = time.perf_counter()
        model = create_backbone(backbone)
        t_build = time.perf_counter() - t0
        clock = ForwardClock(model)
        t = time.perf_counter()
        [emb] = vssl.embed(video, model=model, backbone=backbone, views=views, device="cpu", dtype="float32")
        t_embed = time.perf_counter() - t
    if not emb.ok:
        raise SystemExit(f"query video failed: {emb.error}")
    clips = next(iter(emb.features.values()))
    t = time.perf_counter()
    vector = (clips / np.linalg.norm(clips, axis=1, keepdims=True)).mean(0)
    vector /= np.linalg.norm(vector)
    exact_search(gallery, query, K, device="cpu")
    t_search = time.perf_counter() - t
    total = t_build + t_embed + t_search
    parts = [["backbone built (once per process)", t_build], ["decode + cut clips", t_embed - clock.seconds],
             [f"forward passes ({clock.calls} batch(es), {len(clips)} clips)", clock.seconds],
             [f"query vector + exact search of {len(gallery)} x {gallery.shape[1]} (in memory)", t_search]]
    rows = [[name, sec, f"{100 * sec / total:.0f}%"] for name, sec in parts] + [["total", total, "100%"]]
    return markdown_table(["part", "time (s)", "share"], rows) + "\n"


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="gallery rows")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=1.0,
                    help="noise per dimension around a centre (centres: N(0, I))")
    ap.add_argument("--repeat", type=int, default=4,
                    help="rounds of each timing (part 1 reverses the order every other round: an even number)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--backbone", default="efficientnet-lite0", help="part 3's backbone (built in, no download)")
    ap.add_argument("--views", default="uniform:5x3", help="part 3's view (the store default)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["exact", "ivf", "hnsw", "query"])
    ap.add_argument("--write-doc", action="store_true", help="update docs/PERFORMANCE.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    t = time.perf_counter()
    gallery, queries = make_data(args.rows, args.queries, args.dim, args.spread)
    head = (f"{args.rows} x {args.dim} gallery, {args.queries} queries, {CENTRES} centres (spread {args.spread}), "
            f"k={K}; {machine()}; load average before: {os.getloadavg()[0]:.1f}")
    print(f"# {head} (data made in {time.perf_counter() - t:.0f} s)", flush=True)
    sections = []
    exact = None
    if "exact" not in args.skip:
        table, exact = bench_exact(gallery, queries, args.repeat)
        sections.append(f"### 1. Exact search vs the plain reference\n\n{table}")
        print(sections[-1], flush=True)
    if "query" not in args.skip:
        from vssl.device import resolve_precision

        table = bench_query(gallery, queries[:1], args.backbone, args.views)
        precision = resolve_precision("auto", torch.device("cpu"))
        sections.append(f"### 2. `vssl search` of one new video: time to first result\n\n"
                        f"`{args.backbone}`, view `{args.views}`, precision {precision} (`auto` on this CPU), a 10 s "
                        f"320x240 25 fps H.264 video.\n\n{table}")
        print(sections[-1], flush=True)
    kinds = [k for k in ("ivf", "hnsw") if k not in args.skip]
    if kinds:
        if exact is None:
            t = time.perf_counter()
            truth = exact_search(gallery, queries, K, device="cpu")[1]
            exact = (time.perf_counter() - t, truth)
        table = bench_indexes(gallery, queries, exact, kinds, args.repeat)
        sections.append(f"### 3. faiss indexes vs exact\n\n{table}")
        print(sections[-1], flush=True)
    body = (f"## Search (`vssl search`, `vssl index`, retrieval rows)\n\n`python benchmarks/bench_search.py` — "
            f"{head}; load average after: {os.getloadavg()[0]:.1f}.\n\n" + "\n".join(sections))
    if args.write_doc:
        write_section("search", body)


if __name__ == "__main__":
    main()
