"""Retrieval rows (``vssl probe --retrieval``): each test video queries the training videos.

Video SSL papers report nearest-neighbour retrieval next to their probes (UCF-101/HMDB-51: the
test split queries the training split, Recall@1/5/10/20/50). A row here:

- **vectors**: exactly the k-NN rows' (the source's ``knn_embeddings`` under the request's k-NN
  rule, :mod:`.knn`): backbone, SCALE's [C_i ⊕ SET] (``retrieval``) and the SET token alone
  (``retrieval_set``); a token view's clips are the mean of their tokens first. l2-normalised,
  so the inner product is the cosine similarity;
- **ranking**: the whole training split by similarity, equal similarities by gallery order (the
  earlier store row first): :mod:`vssl.search.exact`'s one tie rule, applied as a stable sort of
  the very scores :func:`~vssl.search.exact.exact_search` ranks (:func:`~vssl.search.exact.score_blocks`),
  so a row's neighbours are that search's, tie for tie. Always exact: no index changes a row;
- **relevant**: a gallery video of the query's class; multi-label stores: one sharing a label;
- **R@k**: the percentage of queries with a relevant video among their ``k`` nearest;
- **AP**: over the full ranking, the mean over the query's relevant gallery videos of the
  precision at its rank; **mAP** its mean over queries (in percent);
- a query with no relevant gallery video (its class has no training video) can neither hit nor
  have an AP: it is left out of R@k and mAP, counted in the row (``no_relevant``), and said in one
  warning;
- **intervals**: the percentile bootstrap over the scored queries (drawn as the class rows' are,
  :func:`~vssl.probe.metrics.bootstrap_weights`; the same resamples when no query is left out); **comparisons**: the best R@1 row
  against each other row, paired on each query's hit at 1 (:func:`~vssl.probe.compare.paired_difference`).

A row is training-free: computed once whatever ``--seeds``; under ``--low-shot`` the gallery is
the subset drawn with ``--seed``. Its ``neighbours`` (store rows, ``[n_test, max(ks)]``) are kept for
``--predictions`` and the retrieval figure. A regression target (``--target``) has no classes to
retrieve: refused before anything is read.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch

from vssl.errors import VsslError
from vssl.features_store.ragged import RaggedClips, token_means
from vssl.search.exact import QUERY_BLOCK, score_blocks

#: the memory one block of the full ranking may take (scores, their sort and order, relevance, AP terms)
RANK_BYTES = 2 * 1024**3
#: bytes per (query, gallery video) a ranking block holds (measured: 32.2 with 50,000 videos)
RANK_BYTES_PER_SCORE = 32

from .compare import Difference, paired_difference
from .knn import SCALE_KNN_FEATURES, KnnConfig, resolve_knn_rule
from .metrics import LEVEL, bootstrap_weights, percentile_interval

log = logging.getLogger("vssl.probe")

#: the cut-offs video SSL papers report (e.g. on UCF-101 / HMDB-51)
DEFAULT_KS = (1, 5, 10, 20, 50)


@dataclass(frozen=True)
class RetrievalConfig:
    """Retrieval settings; the vectors follow the request's k-NN rule unless set here."""

    ks: tuple[int, ...] = DEFAULT_KS   # the Recall@k cut-offs reported
    features: str = "clip_set"         # on SCALE features: clip_set = mean_i [C_i ⊕ SET] | set = SET only
    rule: str | None = None            # dino | released; None = the request's k-NN rule
    center: bool | None = None         # subtract the training mean; None = the request's k-NN setting
    device: str = "auto"
    query_block: int = QUERY_BLOCK     # queries ranked at once, at most (RANK_BYTES bounds a block's memory)

    def params(self) -> dict[str, Any]:
        return asdict(self)

    def knn_view(self) -> KnnConfig:
        """The k-NN config whose video vectors this row ranks (the source's ``knn_embeddings``)."""
        return KnnConfig(rule=self.rule, center=self.center, features=self.features, device=self.device)


def retrieval_rows(cfg: RetrievalConfig, request) -> list[tuple[RetrievalConfig, str | None]]:
    """The ``retrieval`` probe's row (on every source): the config checked, its rule the request's."""
    return [(resolved(cfg, request), None)]


def set_token_rows(cfg: RetrievalConfig, request) -> list[tuple[RetrievalConfig, str | None]]:
    """The ``retrieval_set`` probe's row (SCALE only): the SET token alone, unless ``features``
    already makes the ``retrieval`` row that one."""
    cfg = resolved(cfg, request)
    return [] if cfg.features == "set" else [(replace(cfg, features="set"), None)]


def resolved(cfg: RetrievalConfig, request) -> RetrievalConfig:
    """``cfg`` checked before anything is read, its rule and centring decided as the request's
    k-NN rows' (:func:`~vssl.probe.knn.resolve_knn_rule`), so a retrieval row ranks the vectors
    its report's k-NN row votes with."""
    if request.target is not None:
        raise VsslError(f"--retrieval finds videos of the query's class; --target {request.target} is a number, "
                        "not classes: probe it without --retrieval")
    ks = tuple(int(k) for k in cfg.ks)
    if not ks or min(ks) < 1:
        raise VsslError(f"retrieval ks {cfg.ks}: give positive cut-offs, e.g. 1,5,10,20,50")
    if cfg.features not in SCALE_KNN_FEATURES:
        raise VsslError(f"retrieval features {cfg.features!r} are unknown; use {' or '.join(SCALE_KNN_FEATURES)}")
    if cfg.query_block < 1:
        raise VsslError(f"retrieval query_block {cfg.query_block}: give at least 1")
    knn = resolve_knn_rule(request.knn or KnnConfig(), request)
    rule = cfg.rule or knn.rule
    center = cfg.center if cfg.center is not None else (knn.center if cfg.rule is None else None)
    return replace(cfg, ks=tuple(sorted(set(ks))), rule=rule, center=center)


# ---------------------------------------------------------------------- ranking


@dataclass
class Ranking:
    """Each query's outcome over the whole ranked gallery (positions in the gallery arrays)."""

    neighbours: np.ndarray      # [Q, depth] int64 gallery positions, best first
    similarities: np.ndarray    # [Q, depth] float32
    first_hit: np.ndarray       # [Q] int64 rank (1-based) of the first relevant gallery video; 0: none
    ap: np.ndarray              # [Q] float64 average precision; NaN where none is relevant


def rank_gallery(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray,
                 depth: int, *, device: str = "auto", block: int = QUERY_BLOCK,
                 advance: Callable[[int], None] | None = None) -> Ranking:
    """Rank all of ``gallery`` ``[N, D]`` for each of ``queries`` ``[Q, D]`` (l2-normalised) and
    keep what the metrics need: the first ``depth`` neighbours, the rank of the first relevant
    gallery video and the AP. Labels: int class indices ``[n]`` or multi-hot ``[n, C]``."""
    n = len(gallery)
    depth = min(depth, n)
    block = ranking_block(block, n)
    out = Ranking(np.empty((len(queries), depth), np.int64), np.empty((len(queries), depth), np.float32),
                  np.zeros(len(queries), np.int64), np.full(len(queries), np.nan))
    g_labels, q_labels = _label_tensor(gallery_labels), _label_tensor(query_labels)
    for s, scores in score_blocks(gallery, queries, device=device, block=block):
        b = len(scores)
        g_labels, q_labels = g_labels.to(scores.device), q_labels.to(scores.device)
        # a stable sort keeps equal scores in gallery order: the tie rule of exact_search
        sims, order = torch.sort(scores, dim=1, descending=True, stable=True)
        out.neighbours[s:s + b], out.similarities[s:s + b] = order[:, :depth].cpu().numpy(), sims[:, :depth].cpu().numpy()
        first, ap = _outcomes(_relevant(g_labels, q_labels[s:s + b]).gather(1, order))
        out.first_hit[s:s + b], out.ap[s:s + b] = first.cpu().numpy(), ap.cpu().numpy()
        if advance is not None:
            advance(b)
    return out


def ranking_block(block: int, gallery: int) -> int:
    """Queries ranked at once: at most ``block``, and few enough that the block's sort and relevance
    arrays (about :data:`RANK_BYTES_PER_SCORE` bytes per (query, gallery video)) fit :data:`RANK_BYTES`:
    a Kinetics-400 gallery of 240k videos ranks ~280 queries at once, not 1024 (7.9 GB)."""
    return max(1, min(block, RANK_BYTES // (RANK_BYTES_PER_SCORE * max(gallery, 1))))


def _outcomes(relevant: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From ``relevant`` ``[b, N]`` in ranked order: each query's first relevant rank (1-based; 0:
    none) and its AP, the mean over its relevant videos of the precision at their ranks (NaN: none)."""
    found = relevant.any(dim=1)
    first = relevant.to(torch.uint8).argmax(dim=1) + 1            # argmax: the first maximum
    hits = relevant.to(torch.float32)                              # counts exact in float32 below 2**24 videos
    ranks = torch.arange(1, relevant.shape[1] + 1, device=relevant.device, dtype=torch.float32)
    ap = (hits.cumsum(dim=1) / ranks * hits).sum(dim=1, dtype=torch.float64) / hits.sum(dim=1, dtype=torch.float64)
    return torch.where(found, first, 0), torch.where(found, ap, torch.nan)


def _label_tensor(labels: np.ndarray) -> torch.Tensor:
    """Class indices as int64, multi-hot rows as float32 (their products count shared labels exactly)."""
    labels = np.asarray(labels)
    return torch.from_numpy(labels.astype(np.float32 if labels.ndim == 2 else np.int64))


def _relevant(gallery_labels: torch.Tensor, query_labels: torch.Tensor) -> torch.Tensor:
    """``[Q, N]`` whether each gallery video is relevant to each query: the same class, or (multi-hot
    labels) at least one class in common."""
    if gallery_labels.ndim == 2:
        return (query_labels @ gallery_labels.T) > 0
    return query_labels[:, None] == gallery_labels[None, :]


# ---------------------------------------------------------------------- the row


@dataclass
class RetrievalResult:
    """One retrieval row: R@k and mAP (percent) of the test queries against the training gallery,
    their 95% intervals, and every test video's nearest training videos."""

    probe: str
    features: str
    ks: tuple[int, ...]
    recall: dict[int, float | None]     # R@k (percent) over the scored queries
    mAP: float | None
    ci: dict[str, dict[str, Any]]       # "R@k" / "mAP" -> the interval
    n_gallery: int
    n_queries: int                      # test videos scored (with a relevant gallery video)
    no_relevant: int                    # test videos left out: no relevant gallery video
    params: dict[str, Any]
    # [n_test, max(ks) or the gallery if smaller] int64 STORE rows of the nearest training videos,
    # best first, one row per test video (report.test_paths order, left-out ones included)
    neighbours: np.ndarray = field(repr=False, default=None)
    similarities: np.ndarray = field(repr=False, default=None)   # their cosine similarities
    first_hit: np.ndarray = field(repr=False, default=None)      # [n_test] rank of the first relevant; 0: none
    ap: np.ndarray = field(repr=False, default=None)             # [n_test] AP; NaN: left out
    transductive: bool = False
    variant: str | None = None

    @property
    def name(self) -> str:
        return self.probe if self.variant is None else f"{self.probe}_{self.variant}"

    @property
    def scored(self) -> np.ndarray:
        """``[n_test]`` whether each test video counts (has a relevant gallery video)."""
        return self.first_hit > 0

    def hits_at(self, k: int) -> np.ndarray:
        """Each scored query's hit at ``k``: a relevant video among its ``k`` nearest."""
        first = self.first_hit[self.scored]
        return first <= k

    def recall_at(self, k: int) -> float:
        """R@k (percent) at any ``k``, reported or not (the comparisons read R@1)."""
        return float(self.hits_at(k).mean() * 100.0) if self.n_queries else float("nan")

    def headline(self) -> str:
        """One line: R@ of the first cut-off with its interval, and mAP."""
        k = self.ks[0]
        ci = self.ci[f"R@{k}"]
        shown = "" if ci["low"] is None else f" [{ci['low']:.4g}, {ci['high']:.4g}]"
        return f"R@{k} {_fmt(self.recall[k])}{shown}, mAP {_fmt(self.mAP)}"

    def to_json(self) -> dict[str, Any]:
        """The row as the report's JSON records it (the report makes its values plain JSON)."""
        return {"probe": self.probe, "features": self.features, "variant": self.variant,
                "ks": list(self.ks), "recall": {f"R@{k}": v for k, v in self.recall.items()},
                "mAP": self.mAP, "ci": self.ci, "n_gallery": self.n_gallery, "n_queries": self.n_queries,
                "no_relevant": self.no_relevant, "params": self.params, "transductive": self.transductive}


def _fmt(value: float | None) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.4g}"


def retrieval_result(probe: str, features: str, ranking: Ranking, gallery_rows: np.ndarray, ks: tuple[int, ...],
                     params: dict[str, Any]) -> RetrievalResult:
    """The row's numbers from the per-query outcomes; neighbours as store rows of the gallery."""
    scored = ranking.first_hit > 0
    first, ap = ranking.first_hit[scored], ranking.ap[scored]
    weights = bootstrap_weights(len(first)) if len(first) else None
    recall, ci = {}, {}
    for k in ks:
        hits = (first <= k).astype(np.float64)
        recall[k], ci[f"R@{k}"] = _mean_and_interval(f"R@{k}", hits, weights)
    m, ci["mAP"] = _mean_and_interval("mAP", ap, weights)
    return RetrievalResult(probe, features, tuple(ks), recall, m, ci, int(len(gallery_rows)), int(scored.sum()),
                           int((~scored).sum()), params, np.asarray(gallery_rows)[ranking.neighbours],
                           ranking.similarities, ranking.first_hit, ranking.ap)


def _mean_and_interval(metric: str, values: np.ndarray, weights: np.ndarray | None) -> tuple[float | None, dict]:
    """A per-query mean (percent) and its percentile bootstrap interval over the queries."""
    if weights is None:
        return None, {"metric": metric, "value": None, "low": None, "high": None, "level": LEVEL,
                      "method": "bootstrap"}
    value = float(values.mean() * 100.0)
    low, high = percentile_interval(weights @ values / len(values) * 100.0)
    return value, {"metric": metric, "value": value, "low": low, "high": high, "level": LEVEL, "method": "bootstrap"}


def run_retrieval(call) -> RetrievalResult:
    """A :class:`~vssl.probe.registry.ProbeCall`'s row: the source's k-NN vectors of both splits
    (a token view's tokens averaged per clip first), the test split ranking the training split."""
    cfg: RetrievalConfig = call.config
    data = replace(call.data, train=mean_tokens(call.data.train), test=mean_tokens(call.data.test))
    gallery, queries, what = call.source.knn_embeddings(data, cfg.knn_view())
    with call.progress("retrieval", len(queries)) as advance:
        ranking = rank_gallery(gallery, data.train.labels, queries, data.test.labels, max(cfg.ks),
                               device=cfg.device, block=cfg.query_block, advance=advance)
    return retrieval_result(call.probe, call.source.name, ranking, data.train.indices, cfg.ks,
                            {**cfg.params(), **what})


def mean_tokens(split):
    """``split`` with a token view's clips (a grid of tokens each) replaced by their tokens' mean, one
    vector per clip as a pooled view holds; a pooled view's split unchanged."""
    clips = split.features
    if isinstance(clips, RaggedClips):
        if clips.flat.ndim < 3:
            return split
        pooled = RaggedClips(token_means(clips.flat), clips.offsets)
    else:
        if clips.ndim < 4:
            return split
        n, k = clips.shape[:2]
        pooled = token_means(clips.reshape(n * k, *clips.shape[2:])).reshape(n, k, -1)
    return replace(split, features=pooled, token_grid=None)


def warn_unscored(results: list[RetrievalResult]) -> None:
    """One warning for the report when test videos have no relevant gallery video (every row has
    the same queries and gallery labels, so the same ones)."""
    if results and results[0].no_relevant:
        r = results[0]
        log.warning("retrieval: %d of %d test videos have no training video of their class; they are left out "
                    "of R@k and mAP (counted as no_relevant)", r.no_relevant, r.no_relevant + r.n_queries)


# ---------------------------------------------------------------------- comparisons and the table


def comparisons(results: list[RetrievalResult]) -> list[Difference]:
    """The best row by R@1 (then mAP) against every other, paired on each scored query's hit at 1."""
    rows = [r for r in results if r.n_queries]
    if len(rows) < 2:
        return []
    best = max(rows, key=lambda r: (r.recall_at(1), r.mAP or 0.0))
    return [replace(paired_difference(best.hits_at(1), r.hits_at(1), _label(best), _label(r)), metric="R@1")
            for r in rows if r is not best]


def _label(r: RetrievalResult) -> str:
    return f"{r.name} ({r.features})"


def render_table(results: list[RetrievalResult], title: str):
    """A rich table of the retrieval rows: R@k per cut-off, mAP, the 95% interval of R@1, sizes."""
    from rich.table import Table

    ks = results[0].ks
    table = Table("retrieval", "features", *(f"R@{k}" for k in ks), "mAP", f"95% CI R@{ks[0]}", "#gallery",
                  "#queries", title=title)
    for r in results:
        ci = r.ci.get(f"R@{ks[0]}") or {}
        shown_ci = "—" if ci.get("low") is None else f"[{ci['low']:.2f}, {ci['high']:.2f}]"
        queries = str(r.n_queries) + (f" (+{r.no_relevant} without a match)" if r.no_relevant else "")
        table.add_row(f"{r.name} ({r.params.get('rule')})", r.features,
                      *(_cell(r.recall.get(k)) + ("*" if k >= r.n_gallery else "") for k in ks),
                      _cell(r.mAP), shown_ci, str(r.n_gallery), queries)
    if any(k >= r.n_gallery for r in results for k in ks):
        table.caption = "* k covers the whole gallery: every query with a match counts, whatever its ranking"
    return table


def _cell(value: float | None) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.2f}"
