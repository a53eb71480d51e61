"""Stage one end to end: videos → clips → frozen backbone → feature store.

Workers (a torch DataLoader, ``workers`` processes; with 0, one decode-ahead thread:
:mod:`vssl.extract.prefetch`) decode each pending video once and cut the clips of every view it
still needs (:mod:`vssl.extract.clips`, uint8), streaming them in parts of at most
``PART_CLIPS`` clips: a video's plan (frame count, boxes) first, then its clips, so a long
film's hundreds of clips are never in memory at once (only its features, ``[clips, D]``, wait
for its chunk). The main process
packs clips of consecutive videos into batches of ``batch_size``, normalizes them on the
device and runs the backbone under ``torch.inference_mode`` (autocast for bf16/fp16).
The store takes whole chunks only (DESIGN.md), so finished videos wait, in order, until
every pending video of their chunk is finished, and the chunk is written in one call;
its status flags are written last, so a killed run resumes by redoing unfinished chunks.

Which videos a call processes is one parameter, ``ranges`` (chunk-aligned ``(start, stop)``
pairs; default: all of the store, or ``store.chunk_ranges(shard=(i, n))`` for ``shard``),
so multi-process launchers only have to choose ranges.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vssl.device import autocast, cudnn_autotune, resolve_device, resolve_precision
from vssl.distributed import file_sizes, refuse_undivided_work
from vssl.errors import StoreError, VsslError, with_file, working_on
from vssl.features_store import BOX_DIM, STATUS_DONE, STATUS_FAILED, BackboneSpec, FeatureStore, VideoEntry
from vssl.hashing import sha256_of
from vssl.progress import ProgressBar

from .backbones import Backbone, create_backbone
from .backbones.base import runs_convolutions
from .backbones.hub_cache import resolve_checkpoint
from .clips import VideoPlan, stream_video
from .config import RECIPE_KEYS, ExtractConfig, recipe_of
from .finite import unusable_reason, unusable_rows
from .inputs import VideoInputs, collect_inputs
from .prefetch import decoded_items
from .transfer import HostCopy, Transfers
from .writer import BackgroundWriter
from .samplers import SamplerSpec, parse_views
from .transforms import normalize

log = logging.getLogger("vssl.extract")



@runtime_checkable
class WorkQueue(Protocol):
    """Chunk ranges handed out one batch at a time while a call runs (claims: :mod:`vssl.extract.work`).

    Iterating yields lists of chunk-aligned ranges; the next batch is asked for once the previous
    one is written. ``still_mine(chunk)`` is asked right before a chunk is written: False means
    another process took the work over (this one was presumed dead) and the chunk is left to it.
    """

    def __iter__(self) -> Iterator[list[tuple[int, int]]]: ...

    def still_mine(self, chunk: int) -> bool: ...


#: what ``ranges`` may be: chunk-aligned (start, stop) pairs, or a planner called once the store exists
#: (returning such pairs, or a :class:`WorkQueue`)
Ranges = Sequence[tuple[int, int]] | Callable[[FeatureStore, list[str], list[str]],
                                              Sequence[tuple[int, int]] | WorkQueue]


@dataclass
class ExtractSummary:
    """What one ``extract`` call did (``processed`` = ``done`` + ``failed`` of this call).

    ``assigned``: videos in the chunk ranges this call owned (all, or its ``--shard``).
    """

    store: str
    num_videos: int
    views: list[str]
    assigned: int = 0
    processed: int = 0
    done: int = 0
    failed: int = 0
    skipped_done: int = 0
    skipped_failed: int = 0
    clips: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: files of the input folder not taken as videos, one line per kind (the CLI prints them)
    skipped_files: list[str] = field(default_factory=list)

    @property
    def videos_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(videos_per_s=self.videos_per_s, clips_per_s=self.clips_per_s)
        return d


def checkpoint_sha256(path: str | Path | None) -> str | None:
    """sha256 of a checkpoint file or directory (:func:`vssl.hashing.sha256_of`), None without one."""
    return None if path is None else sha256_of(path)


def backbone_spec(model: Backbone, name: str, checkpoint: str | Path | None,
                  norm: tuple[Sequence[float], Sequence[float]] | None = None, precision: str = "") -> BackboneSpec:
    """What the store records about the network and how its clips are cut.

    ``norm``: the (mean, std) the clips are normalised with, when not the backbone's
    (``--mean/--std``); they join the identity, so a store never mixes normalisations.
    ``precision``: the resolved autocast precision (fp32/bf16/fp16); it joins the identity too,
    so a store never mixes features computed at two precisions.

    A backbone that ships its own weights (``checkpoint_path`` set by its factory, e.g. the
    packaged EfficientNet-Lite0 file) is recorded with that file when no --checkpoint is given.
    A Hugging Face model id is recorded as the cached snapshot it resolved to.
    Its pooling joins its identity (empty for a plugin that does not name one).
    """
    s = model.spec
    mean, std = norm or (s.mean, s.std)
    checkpoint = resolve_checkpoint(checkpoint) if checkpoint else getattr(model, "checkpoint_path", None)
    return BackboneSpec(name=name, embed_dim=int(model.embed_dim), frames=s.frames, stride=s.stride, size=s.size,
                        mean=tuple(float(x) for x in mean), std=tuple(float(x) for x in std),
                        checkpoint=str(Path(checkpoint).resolve()) if checkpoint else None,
                        checkpoint_sha256=checkpoint_sha256(checkpoint), family=getattr(model, "family", ""),
                        pooling=getattr(model, "pooling", ""), precision=precision)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` → (i, n), 0-based."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise VsslError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise VsslError(f"--shard {text}: need 0 <= i < n")
    return i, n


# ---------------------------------------------------------------- the store


def open_or_create_store(out: str | Path, spec: BackboneSpec, inputs: VideoInputs,
                         chunk_videos: int | None) -> FeatureStore:
    """Create ``out`` for ``inputs``, or reopen it after checking backbone and video list match."""
    out = Path(out)
    if not FeatureStore.exists(out):
        try:  # the files' sizes are recorded once, here: every process plans the work from them
            return FeatureStore.create(out, spec, inputs.videos, inputs.classes, chunk_videos,
                                       sizes=file_sizes([str(inputs.resolve(v)) for v in inputs.videos]))
        except Exception:
            if not FeatureStore.exists(out):  # not a concurrent shard's creation: a real error
                raise
    store = FeatureStore.open(out, "r+")
    store.check_backbone(spec, fix="resume with the same backbone settings and --precision, or use a new --out store")
    paths = store.paths().tolist()
    given = [v.path for v in inputs.videos]
    if paths != given:
        raise StoreError(f"{out} was created for another list of videos ({len(paths)} vs {len(given)} given, "
                         "or in another order); use a new --out store")
    return store


def prepare_views(store: FeatureStore, views: dict[str, SamplerSpec], dtype: str,
                  record: dict[str, Any] | None = None, requested_precision: str = "auto") -> None:
    """Create each view (or check the existing one has the same sampler spec, recipe and precision).

    A kind with a variable clip count gets the ragged row layout; ``record`` (the extraction
    settings, its ``precision`` the one ``requested_precision`` resolved to) is kept in the view's
    attributes when it is created. An existing view that records no precision is resumed only
    under an explicit ``--precision``, which it then records.
    """
    unrecorded = []
    for name in views:
        if record is not None and name in store.view_names():
            check_recipe(name, store.view(name).record, record)
            stored = store.view_precision(name)
            check_precision(name, stored, requested_precision, record["precision"])
            if not stored:
                unrecorded.append(name)
    for name in unrecorded:  # the explicit flag vouches for the rows extracted before
        store.view(name).update_record(precision=record["precision"])
    for name, spec in views.items():
        args = (name, spec.num_clips if spec.fixed_count else None, spec.to_dict(), dtype)
        try:
            store.create_view(*args, record=record)
        except StoreError:
            raise
        except Exception:  # a concurrent shard created it between our check and create
            FeatureStore.open(store.path, "r+").create_view(*args, record=record)


def check_recipe(view: str, stored: dict[str, Any] | None, record: dict[str, Any]) -> None:
    """Refuse to add clips of another recipe (or time base, or normalisation) to an existing view.

    Views written before recipes existed have none of these keys: they are "no recipe", the
    defaults, so resuming them without ``--recipe`` goes on as before.
    """
    have, want = recipe_of(stored), recipe_of(record)
    diff = [f"{k} {have[k]!r} (stored) vs {want[k]!r} (now)" for k in RECIPE_KEYS if have[k] != want[k]]
    if diff:
        raise StoreError(f"view '{view}' was extracted with other recipe settings: {'; '.join(diff)}; resume with "
                         "the same --recipe and settings, or name the new view differently (NAME=SPEC)")


def check_precision(view: str, stored: str, requested: str, computed: str) -> None:
    """Refuse to add rows computed in another precision than the view's (bf16 rows differ from fp32
    ones far beyond rounding), and to resume a view that records none under ``auto``.

    ``stored``: the view's precision, "" when unrecorded (:meth:`FeatureStore.view_precision`);
    ``requested``: the flag as given; ``computed``: what it resolved to on this device.
    """
    now = f"{computed} (--precision auto on this device)" if requested == "auto" else computed
    if stored and stored != computed:
        raise StoreError(f"view '{view}' was extracted in {stored}, this run computes {now}; one view never "
                         f"mixes precisions: resume with --precision {stored}, or name the new view differently "
                         "(NAME=SPEC)")
    if not stored and requested == "auto":
        raise StoreError(f"view '{view}' records no precision (an older vssl extracted it, by default in fp32) "
                         f"and --precision auto computes {computed} here; resume with the precision it was "
                         "extracted in, e.g. --precision fp32 (then recorded)")


# ---------------------------------------------------------------- workers


@dataclass(frozen=True)
class _Job:
    index: int
    path: str
    key: str
    views: tuple[str, ...]


class _VideoStream(IterableDataset):
    """The pending videos as a stream of items, each video's first item its plan (or its error).

    Items (dicts with the video's ``slot``): ``kind`` "video" — the plan: ``num_frames``, ``fps``,
    ``boxes`` per view, or ``error``; a second one for a slot replaces the first (re-read
    sequentially); "clips" — ``clips [n, 3, T, S, S]`` of ``view`` at positions ``index``;
    "error" — the video failed after its plan. Worker ``w`` of ``W`` streams slots ``w, w + W, ...``.
    """

    def __init__(self, jobs: Sequence[_Job], views: dict[str, SamplerSpec], decoder: str, threads: int) -> None:
        self.jobs, self.views, self.decoder, self.threads = list(jobs), views, decoder, threads

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        first, step = (0, 1) if worker is None else (worker.id, worker.num_workers)
        for slot in range(first, len(self.jobs), step):
            yield from self.items(slot)

    def items(self, slot: int) -> Iterator[dict[str, Any]]:
        job = self.jobs[slot]
        planned = False
        try:
            for event in stream_video(job.path, {v: self.views[v] for v in job.views}, job.key,
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


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # one process per core: no oversubscription


# ---------------------------------------------------------------- main loop


class _Pending:
    """A video whose clips are (partly) waiting for the backbone."""

    def __init__(self, job: _Job, item: dict[str, Any], views: dict[str, SamplerSpec], dim: int) -> None:
        self.job = job
        self.slot = item["slot"]
        self.error = item["error"]
        self.num_frames = item.get("num_frames", 0)
        self.fps = item.get("fps", 0.0)
        if self.error is None:  # a kind that places no clip in this video (a variable-count kind may)
            empty = [v for v in job.views if len(item["boxes"][v]) == 0]
            if empty:
                self.error = f"view {empty[0]!r} places no clip in this video ({self.num_frames} frames)"
        # clips of each view: what the sampler cut, or (failed video) the fixed K as zeros / none
        count = {v: (views[v].num_clips or 0) if self.error else len(item["boxes"][v]) for v in job.views}
        self.boxes = {v: np.zeros((count[v], BOX_DIM), np.float32) if self.error else item["boxes"][v].numpy()
                      for v in job.views}
        self.features = {v: np.zeros((count[v], dim), np.float32) for v in job.views}
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


class _Batcher:
    """Packs clips of consecutive videos into fixed-size batches and runs the backbone.

    A batch's features are read back one batch late: the next batch is uploaded and launched
    first, so on a GPU the host-side work (finite check, copying rows to their videos) overlaps
    the device's (``transfer.py``). ``flush`` reads the last one.
    """

    def __init__(self, model: Backbone, device: torch.device, precision: str, batch_size: int,
                 norm: tuple[Sequence[float], Sequence[float]] | None = None, store_dtype: str = "float16") -> None:
        self.model, self.device, self.batch_size = model, device, batch_size
        self.precision, self.store_dtype = precision, store_dtype
        self.queue: deque[tuple[_Pending, str, np.ndarray, torch.Tensor]] = deque()  # (video, view, positions, clips)
        self.queued = 0
        self.mean, self.std = norm or (model.spec.mean, model.spec.std)
        self.transfers = Transfers(device)
        self.in_flight: tuple[list[tuple[_Pending, str, np.ndarray, int]], HostCopy] | None = None

    def add(self, video: _Pending, view: str, clips: torch.Tensor,
            index: np.ndarray | None = None) -> Iterator[_Pending]:
        """Queue ``clips`` of ``view`` (at positions ``index``, default 0..n-1); run full batches."""
        index = np.arange(clips.shape[0]) if index is None else np.asarray(index, np.int64)
        video.delivered += clips.shape[0]
        self.queue.append((video, view, index, clips))
        self.queued += clips.shape[0]
        while self.queued >= self.batch_size:
            yield from self.run(self.batch_size)

    def flush(self) -> Iterator[_Pending]:
        while self.queued:
            yield from self.run(min(self.queued, self.batch_size))
        yield from self._read_back()

    def run(self, n: int) -> Iterator[_Pending]:
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

    def _read_back(self) -> Iterator[_Pending]:
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
                video.features[view][index] = rows
            offset += take
            video.left -= take
            if video.left == 0 and not video.abandoned:
                yield video

    def launch(self, clips: torch.Tensor) -> HostCopy:
        """Upload, normalise on the device, run the backbone; the features are on their way back."""
        x = normalize(self.transfers.upload(clips), self.mean, self.std)
        with torch.inference_mode():
            with autocast(self.device, self.precision):
                y = self.model(x)
            return self.transfers.download(y)

    def forward(self, clips: torch.Tensor) -> np.ndarray:
        """The features of ``clips`` now (benchmarks and tests; the run loop uses ``launch``)."""
        return self.launch(clips).numpy()


def _videos_named(owners: Sequence[tuple[_Pending, str, np.ndarray, int]], show: int = 3) -> str:
    """The videos a batch holds clips of, for an error's note: the first ``show`` and how many more."""
    paths = list(dict.fromkeys(video.job.path for video, *_ in owners))
    more = f" and {len(paths) - show} more videos" if len(paths) > show else ""
    return ", ".join(paths[:show]) + more


@dataclass
class _Run:
    """What the steps of one ``extract`` call share once the store is open."""

    cfg: ExtractConfig
    inputs: VideoInputs
    model: Backbone
    device: torch.device
    precision: str
    specs: dict[str, SamplerSpec]
    store: FeatureStore
    norm: tuple[Sequence[float], Sequence[float]]


def extract(videos: str | Path | VideoInputs | Sequence[VideoEntry], out: str | Path, *,
            config: ExtractConfig | None = None, model: Backbone | None = None,
            shard: tuple[int, int] | str | None = None, ranges: Ranges | None = None, progress: bool = True,
            root: str | Path | None = None, **settings: Any) -> ExtractSummary:
    """Extract clip features of ``videos`` into the store ``out`` (created or resumed).

    ``videos``: a directory (class-per-subfolder), a CSV/TSV manifest, or ``VideoEntry``
    objects whose relative paths resolve against ``root`` (default: the current folder).
    ``config`` holds the settings (default :class:`ExtractConfig`); keyword ``settings``
    (``views=``, ``batch_size=``, ...) override single ones.
    ``model`` bypasses the registry (a ready :class:`Backbone`, recorded under ``backbone``).
    ``ranges`` (chunk-aligned video ranges) or ``shard`` choose the part to process; ``ranges`` may
    also be a function ``(store, view names, resolved video paths) -> ranges``, called once the store
    and views exist (how :mod:`vssl.extract.distributed` plans balanced shares).
    Videos that failed before are skipped unless ``retry_failed`` (e.g. after fixing the files).
    """
    t_start = time.perf_counter()
    cfg = (config or ExtractConfig()).replace(**settings)
    if ranges is None and shard is None:  # under torchrun every rank would write every chunk
        refuse_undivided_work("extract()", "use `vssl extract` or vssl.extract.distributed.extract_shared")
    run = _open_run(videos, out, cfg, model, root)
    work = _choose_ranges(run, ranges, shard)
    summary = ExtractSummary(str(run.store.path), run.store.num_videos, list(run.specs),
                             skipped_files=run.inputs.skipped_lines())
    for line in summary.skipped_files:
        log.info(line)
    batches = iter(work if isinstance(work, WorkQueue) else [work])
    try:
        for chosen in batches:  # one batch, or claims one after the other
            _check_ranges(chosen, run.store.chunk_videos, run.store.num_videos)
            summary.assigned += sum(stop - start for start, stop in chosen)
            jobs = _pending_jobs(run, chosen, summary)
            _embed_and_write(run, jobs, summary, progress, work.still_mine if isinstance(work, WorkQueue) else None)
    finally:
        getattr(batches, "close", lambda: None)()  # a queue releases what it still holds
    summary.seconds = time.perf_counter() - t_start
    return summary


def _open_run(videos: Any, out: str | Path, cfg: ExtractConfig, model: Backbone | None,
              root: str | Path | None) -> _Run:
    """Step 1: inputs, device and precision, the backbone, then the store and its views."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if isinstance(videos, VideoInputs):
        inputs = videos
    elif isinstance(videos, (str, Path)):
        inputs = collect_inputs(videos, cfg.split)
    else:
        inputs = VideoInputs(Path(root or "."), list(videos), [])
    if model is None:
        model = create_backbone(cfg.backbone, cfg.checkpoint, cfg.key_map_pairs(), frames=cfg.frames,
                                stride=cfg.stride, size=cfg.size)
    model = model.freeze().to(device)
    specs = parse_views(cfg.views, frames=model.spec.frames, stride=model.spec.stride, size=model.spec.size,
                        seed=cfg.seed, fps=cfg.fps)
    norm = (cfg.mean or model.spec.mean, cfg.std or model.spec.std)  # --mean/--std beat the backbone's
    store = open_or_create_store(out, backbone_spec(model, cfg.backbone, cfg.checkpoint, norm, precision), inputs,
                                 cfg.chunk_videos)
    prepare_views(store, specs, cfg.dtype, record={**cfg.record(), "precision": precision},
                  requested_precision=cfg.precision)
    return _Run(cfg, inputs, model, device, precision, specs, store, norm)


def _choose_ranges(run: _Run, ranges: Ranges | None, shard: tuple[int, int] | str | None
                   ) -> list[tuple[int, int]] | WorkQueue:
    """Step 2: the chunk-aligned video ranges this call owns (all, a shard, or a planner's choice,
    which may be a queue of claims handed out as the work goes)."""
    store = run.store
    if callable(ranges):
        ranges = ranges(store, list(run.specs), [str(run.inputs.resolve(v)) for v in run.inputs.videos])
    elif ranges is None:
        ranges = store.chunk_ranges(parse_shard(shard) if isinstance(shard, str) else shard)
    return ranges if isinstance(ranges, WorkQueue) else list(ranges)


def views_to_do(store: FeatureStore, views: Sequence[str], rows: slice | None = None) -> np.ndarray:
    """Boolean ``[N, len(views)]`` (or for the videos of ``rows``): which view each video still needs
    (the one "what is left" rule).

    A view is done for a video only when its done flag and the video table agree: a video the
    table does not call done (pending: cut off before its table entry; failed: a retry cut off
    before it) is done again, in every view. Whether a failed video is retried is the caller's
    choice (``retry_failed``).
    """
    not_done = store.video_status(rows) != STATUS_DONE
    return np.stack([~store.view(name).done(rows) | not_done for name in views], axis=1)


def _pending_jobs(run: _Run, ranges: Sequence[tuple[int, int]], summary: ExtractSummary) -> list[_Job]:
    """Step 3: the videos of ``ranges`` that still miss a view (failed ones only with ``retry_failed``)."""
    names = list(run.specs)
    jobs: list[_Job] = []
    for start, stop in ranges:  # reads the status of these videos only (a claim's share of a 1M-video store)
        status = run.store.video_status(slice(start, stop))
        todo = views_to_do(run.store, names, slice(start, stop))
        for i in range(start, stop):
            need = tuple(name for name, missing in zip(names, todo[i - start]) if missing)
            if status[i - start] == STATUS_FAILED and not run.cfg.retry_failed:
                summary.skipped_failed += 1
            elif not need:
                summary.skipped_done += 1
            else:
                entry = run.inputs.videos[i]
                jobs.append(_Job(i, str(run.inputs.resolve(entry)), entry.path, need))
    return jobs


def _embed_and_write(run: _Run, jobs: list[_Job], summary: ExtractSummary, progress: bool,
                     keep: Callable[[int], bool] | None = None) -> None:
    """Step 4: decode in workers, embed in batches, write each chunk once all its videos are finished
    (and, with ``keep``, only while ``keep(chunk)`` says the chunk is still this call's)."""
    if not jobs and keep is not None:  # a claim whose videos were all done meanwhile
        return
    cfg, store = run.cfg, run.store
    workers = cfg.workers
    loader = decoded_items(_VideoStream(jobs, run.specs, cfg.decoder, threads=1 if workers else 0), workers,
                           pin=run.device.type == "cuda", worker_init=_worker_init)
    batcher = _Batcher(run.model, run.device, run.precision, cfg.batch_size, run.norm, cfg.dtype)
    autotune = run.device.type == "cuda" and runs_convolutions(run.model)

    with ProgressBar("extract", len(jobs), quiet=not progress) as bar, BackgroundWriter() as writer, \
            cudnn_autotune(autotune):
        chunks = _ChunkAssembler(store, jobs, keep, writer.submit)
        bar.say(f"{store.path}: {len(jobs)} videos to extract ({summary.skipped_done} done before, "
                f"{summary.skipped_failed} failed before) · views {', '.join(run.specs)} · {cfg.backbone} on "
                f"{run.device} {run.precision} · decoder {cfg.decoder} · {workers} workers")

        def finish(video: _Pending) -> None:
            summary.processed += 1
            if video.error:
                summary.failed += 1
                summary.failures.append((run.inputs.videos[video.job.index].path, video.error))
                log.info("failed: %s", video.error)
            else:
                summary.done += 1
                summary.clips += video.clips
            bar.advance(1, info=f"{bar.done / bar.elapsed:.2f} videos/s · {summary.clips / bar.elapsed:.1f} "
                                f"clips/s · {summary.failed} failed")
            chunks.finish(video)

        stream = _StreamState(jobs, run.specs, run.model.embed_dim)
        for item in loader:
            for finished in stream.take(item, batcher):
                finish(finished)
        for finished in batcher.flush():
            finish(finished)


class _StreamState:
    """The videos whose streams are open: turns worker items into batcher work and finished videos.

    A slot is finished once (later items for it are dropped); a second plan for a slot (the video
    re-read sequentially) abandons the first, whose clips still queued are embedded and ignored.
    """

    def __init__(self, jobs: Sequence[_Job], specs: dict[str, SamplerSpec], dim: int) -> None:
        self.jobs, self.specs, self.dim = jobs, specs, dim
        self.open: dict[int, _Pending] = {}
        self.closed: set[int] = set()

    def take(self, item: dict[str, Any], batcher: _Batcher) -> Iterator[_Pending]:
        slot = item["slot"]
        if slot in self.closed:
            return
        with working_on("video", self.jobs[slot].path):
            finished = self._finished(slot, item, batcher)
        for video in finished:
            self.closed.add(video.slot)
            del self.open[video.slot]
            yield video

    def _finished(self, slot: int, item: dict[str, Any], batcher: _Batcher) -> list[_Pending]:
        """Hand ``item`` of video ``slot`` on; the videos it finishes."""
        if item["kind"] == "video":
            old = self.open.pop(slot, None)
            if old is not None:
                old.abandoned = True
            video = self.open[slot] = _Pending(self.jobs[slot], item, self.specs, self.dim)
            return [video] if video.left == 0 else []
        if item["kind"] == "error":
            video = self.open[slot]
            video.fail_rest(item["error"])
            return [video] if video.left == 0 else []
        return list(batcher.add(self.open[slot], item["view"], item["clips"], item["index"].numpy()))


class _ChunkAssembler:
    """Holds finished videos until every pending video of their chunk is finished, then writes the chunk.

    The store takes whole chunks only (DESIGN.md): one write per chunk, handed to ``submit``
    (the run's one writer thread, :mod:`vssl.extract.writer`).
    """

    def __init__(self, store: FeatureStore, jobs: Sequence[_Job], keep: Callable[[int], bool] | None = None,
                 submit: Callable[..., None] = lambda fn, *args: fn(*args)) -> None:
        self.store, self.keep, self.submit = store, keep, submit
        self.waiting: dict[int, list[_Pending]] = {}
        self.left: dict[int, int] = {}
        for j in jobs:
            c = j.index // store.chunk_videos
            self.left[c] = self.left.get(c, 0) + 1

    def finish(self, video: _Pending) -> None:
        c = video.job.index // self.store.chunk_videos
        self.waiting.setdefault(c, []).append(video)
        self.left[c] -= 1
        if self.left[c] == 0:
            self.submit(self._write, c, self.waiting.pop(c))

    def _write(self, c: int, videos: list[_Pending]) -> None:
        """On the writer thread: write chunk ``c`` unless another process has taken it over meanwhile
        (checked as late as possible, just before the write)."""
        if self.keep is None or self.keep(c):
            _write_chunk(self.store, videos)
        else:
            log.warning("chunk %d (videos %d-%d) was taken over by another process; left to it", c,
                        c * self.store.chunk_videos, c * self.store.chunk_videos + len(videos) - 1)


def _check_ranges(ranges: Sequence[tuple[int, int]], chunk: int, n: int) -> None:
    """Writers own whole chunks (DESIGN.md): refuse ranges that would share one with another writer."""
    for start, stop in ranges:
        if not (0 <= start < stop <= n and start % chunk == 0 and (stop % chunk == 0 or stop == n)):
            raise VsslError(f"video range {start}:{stop} is not chunk-aligned (chunks of {chunk} videos, "
                            f"{n} videos); use store.chunk_ranges()")


def _write_chunk(store: FeatureStore, videos: list[_Pending]) -> None:
    """One whole-chunk write per distinct set of views (usually one)."""
    groups: dict[tuple[str, ...], list[_Pending]] = {}
    for v in sorted(videos, key=lambda v: v.job.index):
        groups.setdefault(v.job.views, []).append(v)
    for view_names, group in groups.items():
        store.write_videos(
            [v.job.index for v in group],
            views={name: ([v.features[name] for v in group], [v.boxes[name] for v in group])
                   for name in view_names},
            num_frames=[v.num_frames for v in group], fps=[v.fps for v in group],
            errors=[v.error for v in group])
