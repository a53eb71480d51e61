"""Videos → clip features, in memory: the one engine behind ``extract`` and the public ``embed``.

Workers (a torch DataLoader, ``workers`` processes; with 0, one decode-ahead thread:
:mod:`vssl.extract.prefetch`) decode each video once and cut the clips of every view it needs
(:mod:`vssl.extract.clips`, uint8), streaming them in parts of at most ``PART_CLIPS`` clips: a
video's plan (frame count, boxes) first, then its clips, so a long film's hundreds of clips are
never in memory at once (only its features, ``[clips, D]``). The :class:`Batcher` packs clips of
consecutive videos into batches of ``batch_size``, normalizes them on the device and runs the
backbone under ``torch.inference_mode`` (autocast for bf16/fp16); a video is finished once every
clip of it has its features.

:meth:`Embedder.embedded` yields the finished videos; :func:`vssl.extract.pipeline.extract` hands
them to the store's writer, :func:`embed` returns them. So a query video embedded here has, bit for
bit, the features ``extract`` would store for it under the same settings.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vssl.device import autocast, cudnn_autotune, resolve_device, resolve_precision
from vssl.errors import VsslError, with_file, working_on
from vssl.features_store import BOX_DIM, VideoEntry
from vssl.progress import ProgressBar

from .backbones import Backbone, create_backbone
from .backbones.base import runs_convolutions
from .clips import VideoPlan, stream_video
from .config import ExtractConfig
from .feature_sets import (FeatureSet, OutputKey, compute_outputs, encoder_grid_of, needs_tokens, output_keys,
                           output_widths, plain_sets, plan_sets)
from .finite import unusable_reason, unusable_rows
from .inputs import VIDEO_SUFFIXES, VideoInputs, as_inputs
from .prefetch import decoded_items
from .samplers import SamplerSpec, parse_views
from .tokens import TokenGrid
from .transfer import HostCopy, Transfers
from .transforms import normalize

__all__ = ["Batcher", "Embedder", "VideoEmbedding", "embed"]


# ---------------------------------------------------------------- workers


@dataclass(frozen=True)
class Job:
    """One video to embed: its position in the call (``index``: its store row in ``extract``), the file,
    its key (the path as recorded, which seeds its random views) and the stored views it still needs
    (feature sets: a token or layer view cuts the clips of its sampler view)."""

    index: int
    path: str
    key: str
    views: tuple[str, ...]


class VideoStream(IterableDataset):
    """The pending videos as a stream of items, each video's first item its plan (or its error).

    Items (dicts with the video's ``slot``): ``kind`` "video" — the plan: ``num_frames``, ``fps``,
    ``boxes`` per view, or ``error``; a second one for a slot replaces the first (re-read
    sequentially); "clips" — ``clips [n, 3, T, S, S]`` of ``view`` at positions ``index``;
    "error" — the video failed after its plan. Worker ``w`` of ``W`` streams slots ``w, w + W, ...``.
    """

    def __init__(self, jobs: Sequence[Job], views: dict[str, SamplerSpec], decoder: str, threads: int,
                 sets: dict[str, FeatureSet] | None = None) -> None:
        self.jobs, self.views, self.decoder, self.threads = list(jobs), views, decoder, threads
        self.sets = sets or plain_sets(views)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        first, step = (0, 1) if worker is None else (worker.id, worker.num_workers)
        for slot in range(first, len(self.jobs), step):
            yield from self.items(slot)

    def items(self, slot: int) -> Iterator[dict[str, Any]]:
        job = self.jobs[slot]
        planned = False
        try:
            samplers = dict.fromkeys(self.sets[name].view for name in job.views)
            for event in stream_video(job.path, {v: self.views[v] for v in samplers}, job.key,
                                      decoder=self.decoder, threads=self.threads):
                if isinstance(event, VideoPlan):
                    planned = True
                    yield {"slot": slot, "kind": "video", "error": None, "num_frames": event.info.num_frames,
                           "fps": event.info.fps, "boxes": {k: torch.from_numpy(v) for k, v in event.boxes.items()}}
                else:
                    yield {"slot": slot, "kind": "clips", "view": event.view, "index": torch.from_numpy(event.index),
                           "clips": event.clips}
        except Exception as exc:  # a bad video fails alone; the run goes on (DESIGN.md conventions)
            msg = " ".join(str(exc).split()) or type(exc).__name__
            if not isinstance(exc, VsslError):  # a user error names its file; an unexpected one has a note
                msg = with_file(f"{type(exc).__name__}: {msg}", exc)
            yield {"slot": slot, "kind": "error" if planned else "video", "error": msg}


def worker_init(_: int) -> None:
    torch.set_num_threads(1)  # one process per core: no oversubscription


# ---------------------------------------------------------------- videos in flight


class PendingVideo:
    """A video whose clips are (partly) waiting for the backbone.

    ``features`` and ``boxes`` are keyed by stored view (feature set); the views cut from one sampler
    view share its boxes, and its clips count once in ``left``.
    """

    def __init__(self, job: Job, item: dict[str, Any], views: dict[str, SamplerSpec], dim: int,
                 sets: dict[str, FeatureSet] | None = None, dtype: str = "float16") -> None:
        self.job = job
        self.slot = item["slot"]
        self.error = item["error"]
        self.num_frames = item.get("num_frames", 0)
        self.fps = item.get("fps", 0.0)
        sets = sets or plain_sets(views)
        #: the stored views of each sampler view this video needs
        self.sets_of: dict[str, list[FeatureSet]] = {}
        for name in job.views:
            self.sets_of.setdefault(sets[name].view, []).append(sets[name])
        if self.error is None:  # a kind that places no clip in this video (a variable-count kind may)
            empty = [v for v in self.sets_of if len(item["boxes"][v]) == 0]
            if empty:
                self.error = f"view {empty[0]!r} places no clip in this video ({self.num_frames} frames)"
        # clips of each view: what the sampler cut, or (failed video) the fixed K as zeros / none
        count = {v: (views[v].num_clips or 0) if self.error else len(item["boxes"][v]) for v in self.sets_of}
        boxes = {v: np.zeros((count[v], BOX_DIM), np.float32) if self.error else item["boxes"][v].numpy()
                 for v in self.sets_of}
        self.boxes = {s.name: boxes[v] for v, group in self.sets_of.items() for s in group}
        # a pooled vector per clip in float32 as always; a token grid per clip in the stored dtype (it is
        # T'H'W' times larger, and is checked against that dtype's range before it is stored)
        self.features = {s.name: np.zeros((count[v], *s.clip_shape(dim)), np.float32 if s.cells is None else dtype)
                         for v, group in self.sets_of.items() for s in group}
        self.left = 0 if self.error else sum(count.values())
        self.clips = self.left
        self.delivered = 0  # clips handed to the batcher so far
        self.abandoned = False  # replaced by a re-read (a restart plan): never finishes

    def fail_rest(self, reason: str) -> None:
        """Fail this video mid-stream: the clips it will never receive no longer count as left."""
        self.fail(reason)
        self.left -= self.clips - self.delivered
        self.delivered = self.clips

    def fail(self, reason: str) -> None:
        """Fail this video (its first reason wins); its rows are zeroed so nothing unusable is written."""
        if self.error is None:
            self.error = reason
            for rows in self.features.values():
                rows[:] = 0


class Batcher:
    """Packs clips of consecutive videos into fixed-size batches and runs the backbone.

    ``extract`` and ``embed`` reach it through :meth:`Embedder.embedded`; benchmarks time its
    ``forward`` on clips of their own.

    A batch's features are read back one batch late: the next batch is uploaded and launched
    first, so on a GPU the host-side work (finite check, copying rows to their videos) overlaps
    the device's (``transfer.py``). ``flush`` reads the last one.

    ``sets``: the stored views of the run (:mod:`vssl.extract.feature_sets`). When one asks for tokens or
    a block before the last, every batch goes through ``model.forward_tokens`` once and gives all of them;
    otherwise through ``model(x)``, as a pooled-only run always has.
    """

    def __init__(self, model: Backbone, device: torch.device, precision: str, batch_size: int,
                 norm: tuple[Sequence[float], Sequence[float]] | None = None, store_dtype: str = "float16",
                 sets: dict[str, FeatureSet] | None = None) -> None:
        self.model, self.device, self.batch_size = model, device, batch_size
        self.precision, self.store_dtype = precision, store_dtype
        #: the outputs of one forward_tokens pass, None for model(x) alone
        self.keys: list[OutputKey] | None = output_keys(sets) if sets and needs_tokens(sets) else None
        self.layers = max((depth for depth, _ in self.keys), default=1) if self.keys else 1
        widths = output_widths(sets, self.keys, int(model.embed_dim)) if sets and self.keys else []
        ends = np.cumsum(widths).tolist()
        self.columns = {key: (end - width, end) for key, width, end in zip(self.keys or [], widths, ends)}
        # (video, view, positions, clips)
        self.queue: deque[tuple[PendingVideo, str, np.ndarray, torch.Tensor]] = deque()
        self.queued = 0
        self.mean, self.std = norm or (model.spec.mean, model.spec.std)
        self.transfers = Transfers(device)
        self.in_flight: tuple[list[tuple[PendingVideo, str, np.ndarray, int]], HostCopy] | None = None

    def add(self, video: PendingVideo, view: str, clips: torch.Tensor,
            index: np.ndarray | None = None) -> Iterator[PendingVideo]:
        """Queue ``clips`` of ``view`` (at positions ``index``, default 0..n-1); run full batches."""
        index = np.arange(clips.shape[0]) if index is None else np.asarray(index, np.int64)
        video.delivered += clips.shape[0]
        self.queue.append((video, view, index, clips))
        self.queued += clips.shape[0]
        while self.queued >= self.batch_size:
            yield from self.run(self.batch_size)

    def flush(self) -> Iterator[PendingVideo]:
        while self.queued:
            yield from self.run(min(self.queued, self.batch_size))
        yield from self._read_back()

    def run(self, n: int) -> Iterator[PendingVideo]:
        """Launch the first ``n`` queued clips; yield the videos the previous batch finishes."""
        parts, owners = [], []
        while n:
            video, view, index, clips = self.queue.popleft()
            take = min(n, clips.shape[0])
            parts.append(clips[:take])
            owners.append((video, view, index[:take], take))
            if take < clips.shape[0]:
                self.queue.appendleft((video, view, index[take:], clips[take:]))
            n -= take
        x = self.transfers.join(parts)
        self.queued -= x.shape[0]
        with working_on("clips of", _videos_named(owners)):
            launched = (owners, self.launch(x))
        yield from self._read_back()
        self.in_flight = launched

    def _read_back(self) -> Iterator[PendingVideo]:
        """Give the batch in flight its rows; yield the videos it finishes."""
        if self.in_flight is None:
            return
        owners, copy = self.in_flight
        self.in_flight = None
        features = copy.numpy()
        bad = unusable_rows(features, self.store_dtype)
        offset = 0
        for video, view, index, take in owners:
            rows = features[offset:offset + take]
            worst = np.flatnonzero(bad[offset:offset + take])
            if worst.size:  # the video fails; the run goes on
                video.fail(unusable_reason(rows[worst[0]], view, int(index[worst[0]]), self.precision,
                                           self.store_dtype))
            if video.error is None:
                for s in video.sets_of[view]:
                    video.features[s.name][index] = self._rows_of(rows, s)
            offset += take
            video.left -= take
            if video.left == 0 and not video.abandoned:
                yield video

    def _rows_of(self, rows: np.ndarray, s: FeatureSet) -> np.ndarray:
        """The columns of ``rows`` that hold feature set ``s``, in its clip shape."""
        if self.keys is None:
            return rows
        start, stop = self.columns[s.key]
        return rows[:, start:stop].reshape(len(rows), *s.clip_shape(int(self.model.embed_dim)))

    def launch(self, clips: torch.Tensor) -> HostCopy:
        """Upload, normalise on the device, run the backbone; the features are on their way back."""
        x = normalize(self.transfers.upload(clips), self.mean, self.std)
        with torch.inference_mode():
            with autocast(self.device, self.precision):
                y = self.model(x) if self.keys is None else compute_outputs(self.model, x, self.keys, self.layers)
            return self.transfers.download(y)

    def forward(self, clips: torch.Tensor) -> np.ndarray:
        """The features of ``clips`` now (benchmarks and tests; the run loop uses ``launch``)."""
        return self.launch(clips).numpy()


def _videos_named(owners: Sequence[tuple[PendingVideo, str, np.ndarray, int]], show: int = 3) -> str:
    """The videos a batch holds clips of, for an error's note: the first ``show`` and how many more."""
    paths = list(dict.fromkeys(video.job.path for video, *_ in owners))
    more = f" and {len(paths) - show} more videos" if len(paths) > show else ""
    return ", ".join(paths[:show]) + more


class StreamState:
    """The videos whose streams are open: turns worker items into batcher work and finished videos.

    A slot is finished once (later items for it are dropped); a second plan for a slot (the video
    re-read sequentially) abandons the first, whose clips still queued are embedded and ignored.
    """

    def __init__(self, jobs: Sequence[Job], specs: dict[str, SamplerSpec], dim: int,
                 sets: dict[str, FeatureSet] | None = None, dtype: str = "float16") -> None:
        self.jobs, self.specs, self.dim = jobs, specs, dim
        self.sets, self.dtype = sets or plain_sets(specs), dtype
        self.open: dict[int, PendingVideo] = {}
        self.closed: set[int] = set()

    def take(self, item: dict[str, Any], batcher: Batcher) -> Iterator[PendingVideo]:
        slot = item["slot"]
        if slot in self.closed:
            return
        with working_on("video", self.jobs[slot].path):
            finished = self._finished(slot, item, batcher)
        for video in finished:
            self.closed.add(video.slot)
            del self.open[video.slot]
            yield video

    def _finished(self, slot: int, item: dict[str, Any], batcher: Batcher) -> list[PendingVideo]:
        """Hand ``item`` of video ``slot`` on; the videos it finishes."""
        if item["kind"] == "video":
            old = self.open.pop(slot, None)
            if old is not None:
                old.abandoned = True
            video = self.open[slot] = PendingVideo(self.jobs[slot], item, self.specs, self.dim, self.sets, self.dtype)
            return [video] if video.left == 0 else []
        if item["kind"] == "error":
            video = self.open[slot]
            video.fail_rest(item["error"])
            return [video] if video.left == 0 else []
        return list(batcher.add(self.open[slot], item["view"], item["clips"], item["index"].numpy()))


# ---------------------------------------------------------------- the engine


@dataclass
class Embedder:
    """A frozen backbone on its device, ready to embed the views of videos.

    Built once per call from the settings (:meth:`from_config`), so ``extract`` and ``embed`` resolve
    the device, the precision, the views and the normalisation by the same rules.
    """

    cfg: ExtractConfig
    model: Backbone
    device: torch.device
    precision: str
    #: the sampler views (how clips are cut)
    specs: dict[str, SamplerSpec]
    #: the (mean, std) clips are normalised with: ``--mean/--std`` if given, else the backbone's
    norm: tuple[Sequence[float], Sequence[float]]
    #: the stored views, each cut from one of ``specs`` (one per sampler view without --tokens/--layers)
    sets: dict[str, FeatureSet]

    @property
    def view_names(self) -> list[str]:
        """Every stored view this embedder fills."""
        return list(self.sets)

    @classmethod
    def from_config(cls, cfg: ExtractConfig, model: Backbone | None = None) -> "Embedder":
        """Resolve device and precision, build (or take) the backbone, parse the views on its clip spec."""
        device = resolve_device(cfg.device)
        precision = resolve_precision(cfg.precision, device)
        if model is None:
            model = create_backbone(cfg.backbone, cfg.checkpoint, cfg.key_map_pairs(), frames=cfg.frames,
                                    stride=cfg.stride, size=cfg.size)
        model = model.freeze().to(device)
        specs = parse_views(cfg.views, frames=model.spec.frames, stride=model.spec.stride, size=model.spec.size,
                            seed=cfg.seed, fps=cfg.fps)
        norm = (cfg.mean or model.spec.mean, cfg.std or model.spec.std)  # --mean/--std beat the backbone's
        tokens = TokenGrid.parse(cfg.tokens) if cfg.tokens else None
        grid = encoder_grid_of(model, device, cfg.layers) if tokens or cfg.layers > 1 else None
        return cls(cfg, model, device, precision, specs, norm, plan_sets(specs, tokens, cfg.layers, grid))

    def batcher(self) -> Batcher:
        """A :class:`Batcher` with this call's batch size, precision, stored dtype and stored views."""
        return Batcher(self.model, self.device, self.precision, self.cfg.batch_size, self.norm, self.cfg.dtype,
                       self.sets)

    def embedded(self, jobs: Sequence[Job]) -> Iterator[PendingVideo]:
        """Decode ``jobs`` in workers, embed their clips in batches; yield each video once finished
        (in the order they finish; a failed one carries its ``error``)."""
        workers = self.cfg.workers
        loader = decoded_items(VideoStream(jobs, self.specs, self.cfg.decoder, threads=1 if workers else 0,
                                           sets=self.sets),
                               workers, pin=self.device.type == "cuda", worker_init=worker_init)
        batcher = self.batcher()
        with cudnn_autotune(self.device.type == "cuda" and runs_convolutions(self.model)):
            stream = StreamState(jobs, self.specs, self.model.embed_dim, self.sets, self.cfg.dtype)
            for item in loader:
                yield from stream.take(item, batcher)
            yield from batcher.flush()


# ---------------------------------------------------------------- the public call


@dataclass
class VideoEmbedding:
    """One video's clip features and boxes, per view, as ``extract`` would store them.

    ``features[view]``: ``[clips, D]`` in the stored dtype (``dtype``, float16 by default), and for a token
    view (``--tokens``) ``[clips, T'·H'·W', W]`` (W the encoder's token width); ``boxes[view]``: ``[clips, 7]``
    float32 (DESIGN.md's boxes). A video that failed (unreadable, no clip placed, a non-finite feature) has
    ``error`` set and no views.
    """

    path: str
    features: dict[str, np.ndarray]
    boxes: dict[str, np.ndarray]
    num_frames: int = 0
    fps: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def of(cls, video: PendingVideo, dtype: str) -> "VideoEmbedding":
        """The result of a finished video, its rows cast as the store casts them."""
        if video.error is not None:
            return cls(video.job.path, {}, {}, video.num_frames, video.fps, video.error)
        return cls(video.job.path, {v: video.features[v].astype(dtype) for v in video.job.views},
                   {v: np.asarray(video.boxes[v], np.float32) for v in video.job.views}, video.num_frames,
                   video.fps)


def embed(videos: str | Path | VideoInputs | Sequence[str | Path | VideoEntry], *,
          config: ExtractConfig | None = None, model: Backbone | None = None, root: str | Path | None = None,
          progress: bool = False, **settings: Any) -> list[VideoEmbedding]:
    """Clip features (and boxes) of each view of ``videos``, for files in no store.

    ``videos``: one video file, a list of them (paths, or ``VideoEntry`` objects), or what
    ``extract`` takes (a class-per-subfolder directory, a CSV/TSV manifest). A relative path
    resolves against ``root`` (default: the current folder) and is the video's key, which seeds
    its random views: give the path ``extract`` recorded (relative to the folder it scanned) to
    get, bit for bit, the rows ``extract`` stored. ``config`` and keyword ``settings``
    (``backbone=``, ``views=``, ``batch_size=``, ``precision=``, ...) are ``extract``'s, read the same
    way (``tokens=``/``layers=`` add the token and layer views ``extract`` would store). Returns one
    :class:`VideoEmbedding` per video, in order; a video that fails does not stop the others (its
    ``error`` says why).
    """
    cfg = (config or ExtractConfig()).replace(**settings)
    inputs = _inputs_of(videos, cfg.split, root)
    embedder = Embedder.from_config(cfg, model)
    jobs = [Job(i, str(inputs.resolve(entry)), entry.path, tuple(embedder.view_names))
            for i, entry in enumerate(inputs.videos)]
    results: list[VideoEmbedding | None] = [None] * len(jobs)
    with ProgressBar("embed", len(jobs), quiet=not progress) as bar:
        for video in embedder.embedded(jobs):
            results[video.job.index] = VideoEmbedding.of(video, cfg.dtype)
            bar.advance(1)
    return [r for r in results if r is not None]


def _inputs_of(videos: Any, split: str, root: str | Path | None) -> VideoInputs:
    """The videos ``embed`` was given, as ``extract`` reads them, and one video file alone."""
    if isinstance(videos, (str, Path)) and Path(videos).suffix.lower() in VIDEO_SUFFIXES:
        videos = [videos]
    inputs = as_inputs(videos, split, root)
    if not inputs.videos:
        raise VsslError("embed: give at least one video file")
    return inputs
