"""Weighted k-NN classification (training-free), DINO's protocol (Caron et al. 2021, §4.1 / eval_knn).

What a video's vector is follows one of two rules (``KnnConfig.rule``, ``--knn-rule``), the same
for every k-NN row of a report so that the backbone and SCALE rows compare like for like:

- ``dino``: the mean of its l2-normalized clip embeddings, uncentred (DINO's eval_knn);
- ``released``: the raw mean of its clip embeddings, centred (released SCALE ``src/eval.py``
  ``knn``: ``out.mean(1)``, minus the mean, l2; it centres each split by its own mean, vssl by
  the training split's).

Either way the vector is l2-normalized last, so the inner product is the cosine similarity.
Each test video takes its ``k`` nearest training
videos; neighbour ``j`` votes for its class with weight ``exp(s_j / T)`` (T = 0.07, k = 20).
The search is exact: faiss ``IndexFlatIP`` (``auto`` on CPU, and on CUDA when GPU faiss is
installed; 0.77x the time of torch's bare fp32 product at Kinetics scale on an idle machine), or a
blocked float32 matrix product + top-k in torch (``auto`` on CUDA without GPU faiss; 0.89x; it
held up better than faiss on an oversubscribed machine, see docs/PERFORMANCE.md).
``precision="bf16"`` (torch backend) ranks a shortlist of 128 in bfloat16 and re-ranks it in float32; a query whose result the bf16 error bound
cannot certify is searched again in float32, so neighbours stay exact. The bound assumes float32
accumulation and float32 re-ranking, so the torch search runs with TF32 and cuBLAS's bf16 reduced
precision reduction off (:func:`vssl.device.matmul_numerics`), the caller's flags restored after.
GPU faiss selects at most 2048 neighbours (``GPU_FAISS_MAX_K``; it aborts beyond): a larger ``k``
on a GPU searches with torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np
import torch

from vssl.device import matmul_numerics
from vssl.errors import VsslError
from vssl.features_store.ragged import RaggedClips, as_ragged, segment_mean

from .common import resolve_device

BACKENDS = ("auto", "faiss", "torch")
#: the largest k GPU faiss selects (its k-selection kernels; beyond, faiss aborts the process)
GPU_FAISS_MAX_K = 2048
#: what k-NN embeds per video on SCALE features (``KnnConfig.features``)
SCALE_KNN_FEATURES = ("clip_set", "set")
#: how a video's clips become its k-NN vector (``KnnConfig.rule``; module docstring)
KNN_RULES = ("dino", "released")


@dataclass(frozen=True)
class KnnConfig:
    """k-NN settings; the defaults are DINO's (k=20, T=0.07)."""

    k: int = 20
    temperature: float = 0.07
    # dino | released (module docstring); None = the request's (resolve_knn_rule:
    # released with a SCALE run, for both sources' rows, dino without), or called outside a
    # request the source's own (backbone dino, SCALE released)
    rule: str | None = None
    # subtract the *training* mean before the last l2 (never a split's own, unlike the released
    # eval.py); None = the rule's: on for released, off for dino
    center: bool | None = None
    features: str = "clip_set"  # on SCALE features: clip_set = mean_i [C_i ⊕ SET] (paper) | set = SET only
    backend: str = "auto"       # faiss | torch | auto (faiss; torch on CUDA without GPU faiss or for bf16)
    precision: str = "fp32"     # fp32 | bf16 (torch backend: bf16 shortlist, exact fp32 re-rank)
    device: str = "auto"
    query_block: int = 1024     # test videos per search block (bounds memory: block x N_train fp32 scores)

    def params(self) -> dict:
        return asdict(self)

    def resolved_rule(self, default: str = "dino") -> str:
        """The rule; ``default`` (the feature source's own) when none was resolved for the request."""
        rule = self.rule or default
        if rule not in KNN_RULES:
            raise VsslError(f"--knn-rule {rule!r} is unknown; use one of {', '.join(KNN_RULES)}")
        return rule

    def resolved_center(self, default: str = "dino") -> bool:
        """Whether the training mean is subtracted: ``center`` when set, else the rule's."""
        return self.center if self.center is not None else self.resolved_rule(default) == "released"


def knn_rows(cfg: KnnConfig, request) -> list[tuple[KnnConfig, str | None]]:
    """k-NN's rows: its rule decided for the whole request (:func:`resolve_knn_rule`), then a row
    per k of ``--knn-k`` (DINO reports k = 10, 20, 100, 200 at T = 0.07), or one row."""
    cfg = resolve_knn_rule(cfg, request)
    if not request.knn_ks:
        return [(cfg, None)]
    return [(replace(cfg, k=k), f"k{k}") for k in request.knn_ks]


def resolve_knn_rule(config: KnnConfig, request) -> KnnConfig:
    """A k-NN config with its rule decided for the whole request, so the backbone's and SCALE's k-NN
    rows use one rule and compare like for like: the one asked for (``--knn-rule``), else
    ``released`` (the paper's comparison, released ``src/eval.py``) when a SCALE run adds its rows,
    ``dino`` (DINO's protocol) for the backbone alone."""
    if config.rule is not None:
        return config
    return replace(config, rule="released" if request.scale_run is not None else "dino")


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def video_vectors(clips: np.ndarray | RaggedClips, rule: str = "dino") -> np.ndarray:
    """[n, K, D] clip features (or a ragged view's) -> [n, D] float32 per ``rule``: ``dino`` =
    :func:`video_embeddings`; ``released`` = the raw mean of the clips (float64 sums), left for
    centring and l2 (:func:`prepare`)."""
    if rule == "dino":
        return video_embeddings(clips)
    return per_video_clips(clips).mean()


def video_embeddings(clips: np.ndarray | RaggedClips) -> np.ndarray:
    """[n, K, D] clip features -> [n, D] float32: mean of l2-normalized clips, l2-normalized
    (a ragged view's :class:`RaggedClips`: the mean over each video's real clips)."""
    clips = per_video_clips(clips)
    return l2_normalize(segment_mean(l2_normalize(clips.flat), clips.counts))


def per_video_clips(clips: np.ndarray | RaggedClips) -> RaggedClips:
    """Clips as :class:`RaggedClips` (a fixed view's ``[n, K, D]`` has constant counts); an array
    ``[n, D]`` holds one vector per video, a single clip each."""
    if isinstance(clips, np.ndarray) and clips.ndim == 2:
        return RaggedClips.from_fixed(clips[:, None])
    return as_ragged(clips)


def knn_scores(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, num_classes: int,
               cfg: KnnConfig = KnnConfig(), advance: Callable[[int], None] | None = None) -> np.ndarray:
    """Class votes ``[n_test, num_classes]`` for already l2-normalized video embeddings."""
    sims, idx = search(train, test, cfg, advance)
    return vote(sims, idx, np.asarray(train_labels), num_classes, cfg.temperature)


def vote(sims: np.ndarray, idx: np.ndarray, train_labels: np.ndarray, num_classes: int,
         temperature: float) -> np.ndarray:
    """DINO's weighted vote: sum over neighbours of ``exp(sim / T)`` into each neighbour's class.

    Multi-hot labels ``[n, C]`` vote one-vs-rest: class ``c``'s score is the weighted fraction of
    neighbours that have it; values ``[n]`` (float, a regression target) give their weighted
    mean ``[n_test, 1]`` (:mod:`.task`).
    """
    weights = np.exp(sims.astype(np.float64) / temperature)
    if train_labels.ndim == 2 or np.issubdtype(train_labels.dtype, np.floating):
        neighbours = np.asarray(train_labels, np.float64)[idx].reshape(*idx.shape, -1)   # [n, k, C or 1]
        return np.einsum("nk,nkc->nc", weights, neighbours) / weights.sum(axis=1, keepdims=True)
    scores = np.zeros((sims.shape[0], num_classes), dtype=np.float64)
    rows = np.repeat(np.arange(sims.shape[0]), sims.shape[1])
    np.add.at(scores, (rows, train_labels[idx].ravel()), weights.ravel())
    return scores


def prepare(train: np.ndarray, test: np.ndarray, center: bool,
            normalize_clips: bool = True, rule: str = "dino") -> tuple[np.ndarray, np.ndarray]:
    """Video embeddings of both splits; centring (optional) uses the training mean for both.

    ``normalize_clips``: ``train``/``test`` are clips (or per-video vectors) reduced by
    :func:`video_vectors` under ``rule`` (dino: per-clip l2 first; released: the raw mean);
    False: they are already one vector per video ``[n, D]``, centred (optionally) and
    l2-normalized as they are (SCALE's k-NN input).
    """
    if normalize_clips:
        tr, te = video_vectors(train, rule), video_vectors(test, rule)
    else:
        tr, te = np.asarray(train, dtype=np.float32), np.asarray(test, dtype=np.float32)
    if center:
        mu = tr.mean(axis=0, keepdims=True)
        tr, te = tr - mu, te - mu
    return l2_normalize(tr), l2_normalize(te)


def search(train: np.ndarray, test: np.ndarray, cfg: KnnConfig,
           advance: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product neighbours: (similarities, indices), best first."""
    if cfg.backend not in BACKENDS:
        raise VsslError(f"k-NN backend {cfg.backend!r} is unknown; use one of {', '.join(BACKENDS)}")
    if cfg.precision not in ("fp32", "bf16"):
        raise VsslError(f"k-NN precision {cfg.precision!r} is unknown; use fp32 or bf16")
    k = search_k(cfg, len(train))
    if k < 1:
        raise VsslError("k-NN needs at least one labelled training video")
    device = resolve_device(cfg.device)
    backend = resolve_backend(cfg, device, k)
    if backend == "faiss" and cfg.precision == "bf16":
        raise VsslError("--knn-precision bf16 runs on the torch backend; use --knn-backend torch (or auto)")
    train = np.ascontiguousarray(train, dtype=np.float32)
    test = np.ascontiguousarray(test, dtype=np.float32)
    if backend == "faiss":
        return _search_faiss(train, test, k, device, cfg.query_block, advance)
    with matmul_numerics(tf32=False, bf16_reduced_reduction=False):  # what the exactness bound assumes
        return _search_torch(train, test, k, device, cfg.query_block, cfg.precision, advance)


def search_k(cfg: KnnConfig, num_train: int) -> int:
    """The number of neighbours a search returns: ``cfg.k``, at most the training videos."""
    return min(cfg.k, num_train)


def resolve_backend(cfg: KnnConfig, device: torch.device, k: int | None = None) -> str:
    """The backend a search of ``k`` neighbours (default ``cfg.k``) runs on.

    ``auto``: faiss (GPU faiss on CUDA when installed); torch for a CUDA device without GPU faiss,
    and for the bf16 shortlist, which only torch implements. Whatever was asked, a search GPU faiss
    would run with k > ``GPU_FAISS_MAX_K`` runs on torch: GPU faiss aborts the process there, and the
    torch search is as exact.
    """
    k = cfg.k if k is None else k
    gpu_faiss = device.type == "cuda" and _faiss_has_gpu()
    if cfg.backend == "auto":
        backend = "torch" if cfg.precision == "bf16" or (device.type == "cuda" and not gpu_faiss) else "faiss"
    else:
        backend = cfg.backend
    if backend == "faiss" and gpu_faiss and k > GPU_FAISS_MAX_K:
        return "torch"
    return backend


def _faiss_has_gpu() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _search_faiss(train, test, k, device, block, advance):
    import faiss

    index = faiss.IndexFlatIP(train.shape[1])
    if device.type == "cuda" and _faiss_has_gpu():
        assert k <= GPU_FAISS_MAX_K, "resolve_backend sends larger k to torch"
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), device.index or 0, index)
    index.add(train)
    sims = np.empty((len(test), k), dtype=np.float32)
    idx = np.empty((len(test), k), dtype=np.int64)
    for s in range(0, len(test), block):
        sims[s:s + block], idx[s:s + block] = index.search(test[s:s + block], k)
        if advance:
            advance(min(block, len(test) - s))
    return sims, idx


# bf16 keeps 8 significant bits (unit roundoff u = 2**-8). For unit vectors the score of a
# bf16 product differs from the fp32 one by at most ~2u (input rounding) + u (output
# rounding) + fp32 accumulation; 4u leaves a margin. Used only to certify the shortlist.
_BF16_SCORE_ERROR = 4 * 2.0**-8


def _search_torch(train, test, k, device, block, precision, advance):
    pin = device.type == "cuda"
    tr = torch.from_numpy(train)
    tr = (tr.pin_memory() if pin else tr).to(device, non_blocking=pin)
    tr_low = tr.to(torch.bfloat16) if precision == "bf16" else None
    # One score buffer reused by every block: a fresh multi-GB tensor per block would be
    # zero-filled page by page by the OS, a measurable share of the whole search on CPU.
    buf = torch.empty((min(block, len(test)), len(train)), device=device,
                      dtype=torch.float32 if tr_low is None else torch.bfloat16)
    sims = np.empty((len(test), k), dtype=np.float32)
    idx = np.empty((len(test), k), dtype=np.int64)
    for s in range(0, len(test), block):
        q = torch.from_numpy(test[s:s + block])
        q = (q.pin_memory() if pin else q).to(device, non_blocking=pin)
        out = buf[:len(q)]
        if tr_low is None:
            v, i = torch.topk(torch.mm(q, tr.T, out=out), k, dim=1)
        else:
            v, i = _bf16_shortlist(q, tr, torch.mm(q.to(torch.bfloat16), tr_low.T, out=out), k)
        sims[s:s + len(q)], idx[s:s + len(q)] = v.float().cpu().numpy(), i.cpu().numpy()
        if advance:
            advance(len(q))
    return sims, idx


def _bf16_shortlist(q: torch.Tensor, tr: torch.Tensor, low: torch.Tensor, k: int):
    """Top-k from bf16 scores ``low``: a shortlist re-scored in fp32; exact by the error bound.

    128 candidates: on clustered 768-d features a shortlist of 2k+8 left ~20% of queries
    uncertified (redone in fp32), 128 left none, and its top-k costs little more.
    """
    m = min(len(tr), max(2 * k + 8, 128))
    cand_v, cand = torch.topk(low, m, dim=1)
    exact = torch.einsum("bd,bmd->bm", q, tr[cand])
    v, j = torch.topk(exact, k, dim=1)
    i = torch.gather(cand, 1, j)
    if m < len(tr):
        # Any candidate left out scored <= the m-th bf16 score, so its true score is at most
        # that + the error bound; if the k-th exact score beats this, the result is exact.
        unsafe = v[:, -1] <= cand_v[:, -1].float() + _BF16_SCORE_ERROR
        if unsafe.any():
            rows = unsafe.nonzero().squeeze(1)
            v[rows], i[rows] = torch.topk(q[rows] @ tr.T, k, dim=1)
    return v, i
