"""Exact nearest neighbours by inner product (cosine similarity of l2-normalised rows), one tie rule.

Every ranking vssl reports or shows — the retrieval rows, ``vssl search``, the retrieval figure —
comes from this search or is checked against it, so they agree on one order: a higher similarity
first and, among equal similarities, the earlier gallery row first (the gallery's order, as a
stable sort gives it). Without that rule a neighbour at the cut-off of Recall@k, or of a printed
top-10, would depend on how a backend happened to break the tie.

The search is a blocked float32 product and ``torch.topk``, as the plain reference it is measured
against (benchmarks/bench_search.py); TF32 and bf16 reductions are off for its duration
(:func:`vssl.device.matmul_numerics`), so every score is a float32 dot product.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from vssl.device import matmul_numerics, resolve_device
from vssl.errors import VsslError

#: query rows per block: bounds the temporary scores at ``block x gallery`` float32
QUERY_BLOCK = 1024


def exact_search(gallery: np.ndarray, queries: np.ndarray, k: int, *, device: str = "auto",
                 block: int = QUERY_BLOCK, advance: Callable[[int], None] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best gallery rows of each query: ``(similarities [Q, k] float32, rows [Q, k] int64)``,
    best first; ``k`` larger than the gallery returns the whole gallery ranked.

    ``gallery`` ``[N, D]`` and ``queries`` ``[Q, D]`` are compared by inner product (pass
    l2-normalised rows for cosine similarity). Ties follow the module's rule: equal similarities
    rank by gallery row, lower first, also at the cut-off.
    """
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if gallery.ndim != 2 or queries.ndim != 2 or gallery.shape[1] != queries.shape[1]:
        raise VsslError(f"search: gallery {gallery.shape} and queries {queries.shape} must be [N, D] and [Q, D] "
                        "of one width")
    if len(gallery) == 0:
        raise VsslError("search: the gallery is empty")
    k = min(int(k), len(gallery))
    if k < 1:
        raise VsslError(f"search: k must be at least 1, got {k}")
    sims = np.empty((len(queries), k), dtype=np.float32)
    rows = np.empty((len(queries), k), dtype=np.int64)
    for s, scores in score_blocks(gallery, queries, device=device, block=block):
        v, i = top_k_in_order(scores, k)
        sims[s:s + len(scores)], rows[s:s + len(scores)] = v.cpu().numpy(), i.cpu().numpy()
        if advance is not None:
            advance(len(scores))
    return sims, rows


def score_blocks(gallery: np.ndarray, queries: np.ndarray, *, device: str = "auto",
                 block: int = QUERY_BLOCK) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first query, scores [b, N] float32)`` for each block of ``block`` queries, in order: the one
    product :func:`exact_search` ranks. A caller that needs more of a ranking than its top (the
    retrieval rows rank the whole gallery) ranks these very scores, so its order agrees with the
    search's bit for bit. Each block's tensor is reused by the next: consume it before advancing.
    """
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    check_finite(gallery, "gallery")
    check_finite(queries, "query")
    dev = resolve_device(device)
    with matmul_numerics(tf32=False, bf16_reduced_reduction=False), torch.inference_mode():
        g = torch.from_numpy(gallery).to(dev)
        scores = torch.empty((min(block, max(len(queries), 1)), len(gallery)), dtype=torch.float32, device=dev)
        for s in range(0, len(queries), block):
            q = torch.from_numpy(queries[s:s + block]).to(dev)
            yield s, torch.mm(q, g.T, out=scores[:len(q)])


def check_finite(vectors: np.ndarray, what: str) -> None:
    """Refuse NaN or infinite vectors in one line: a NaN similarity has no place in a ranking (a sort
    puts it first, ``topk`` anywhere), so a search over one would be silently wrong."""
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=-1)) if vectors.size else []
    if len(bad):
        shown = ", ".join(str(int(i)) for i in bad[:5]) + (" …" if len(bad) > 5 else "")
        raise VsslError(f"search: {len(bad)} {what} vector(s) hold NaN or inf (positions {shown}): their features "
                        "are not finite (a diverged SCALE run's export? check with `vssl store verify`)")


def top_k_in_order(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``k`` best columns of ``scores`` ``[B, N]`` by the module's tie rule.

    ``torch.topk`` picks an arbitrary subset of the columns tied at the k-th value and orders ties
    arbitrarily. The rows where the k-th value is shared beyond the picked set are redone with the
    lowest-index columns of that value (an exact, rare fix-up); then every row is ordered by
    (value descending, column ascending). Those rows are the ones whose (k+1)-th best value equals
    the k-th, so one top-(k+1) finds them: counting the tied columns of every row instead is a second
    pass over the whole ``[B, N]`` block, a third of the product's time on CPU
    (benchmarks/bench_search.py).
    """
    wide = min(k + 1, scores.shape[1])
    values, cols = torch.topk(scores, wide, dim=1)
    if wide > k:
        crossing = values[:, k] == values[:, k - 1]
    else:  # the whole row is kept: no cut-off to cross
        crossing = torch.zeros(len(scores), dtype=torch.bool, device=scores.device)
    values, cols = values[:, :k].contiguous(), cols[:, :k].contiguous()
    cut = values[:, -1:]
    for r in torch.nonzero(crossing).flatten().tolist():
        above = torch.nonzero(scores[r] > cut[r]).flatten()
        at = torch.nonzero(scores[r] == cut[r]).flatten()[:k - len(above)]
        cols[r] = torch.cat([above, at])
        values[r] = scores[r, cols[r]]
    # order by value, then column: a stable sort by column, then a stable sort by value
    by_col = torch.argsort(cols, dim=1, stable=True)
    values, cols = values.gather(1, by_col), cols.gather(1, by_col)
    by_value = torch.argsort(values, dim=1, descending=True, stable=True)
    return values.gather(1, by_value), cols.gather(1, by_value)
