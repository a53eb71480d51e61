"""Stage one end to end: videos → clips → frozen backbone → feature store.

``extract`` is :mod:`vssl.extract.embedding` (the engine also behind the public ``embed``: decode
in workers, embed in batches, one finished video at a time) plus the store's writer: the store
takes whole chunks only (DESIGN.md), so finished videos wait, in order, until every pending video
of their chunk is finished, and the chunk is written in one call on the writer thread
(:mod:`vssl.extract.writer`); its status flags are written last, so a killed run resumes by
redoing unfinished chunks.

Which videos a call processes is one parameter, ``ranges`` (chunk-aligned ``(start, stop)``
pairs; default: all of the store, or ``store.chunk_ranges(shard=(i, n))`` for ``shard``),
so multi-process launchers only have to choose ranges.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from vssl.distributed import file_sizes, refuse_undivided_work
from vssl.errors import StoreError, VsslError
from vssl.features_store import (ASSUMED_CLIPS_PER_VIEW, STATUS_DONE, STATUS_FAILED, BackboneSpec, FeatureStore,
                                 VideoEntry, video_bytes)
from vssl.hashing import sha256_of
from vssl.progress import ProgressBar

from .backbones import Backbone
from .backbones.hub_cache import resolve_checkpoint
from .backbones.registry import canonical_name
from .config import RECIPE_KEYS, ExtractConfig, recipe_of
from .embedding import Embedder, Job, PendingVideo
from .feature_sets import FeatureSet, plain_sets
from .inputs import VideoInputs, as_inputs
from .samplers import SamplerSpec
from .writer import BackgroundWriter

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


#: the most bytes of one view's rows a chunk may hold: a chunk's videos wait in memory until the chunk is
#: written whole (DESIGN.md), so a token view added to a store chunked for pooled views is refused above it
MAX_CHUNK_VIEW_BYTES = 1 << 30


def set_video_bytes(spec: SamplerSpec, clip_shape: Sequence[int], dtype: str) -> int:
    """Bytes of one video's rows in a view of ``spec``'s clips of ``clip_shape`` (a kind of variable count is
    assumed to place ``ASSUMED_CLIPS_PER_VIEW`` clips)."""
    clips = spec.num_clips if spec.fixed_count else ASSUMED_CLIPS_PER_VIEW
    return video_bytes(clips, tuple(clip_shape), np.dtype(dtype).itemsize)


def largest_view_bytes(views: dict[str, SamplerSpec], embed_dim: int, dtype: str,
                       sets: dict[str, FeatureSet] | None = None) -> int:
    """Bytes of one video's rows in the largest stored view (``sets``, default one pooled ``embed_dim``
    vector per clip of each view; token views included): what a new store's chunks are sized by."""
    return max(set_video_bytes(views[s.view], s.clip_shape(embed_dim), dtype)
               for s in (sets or plain_sets(views)).values())


def open_or_create_store(out: str | Path, spec: BackboneSpec, inputs: VideoInputs,
                         chunk_videos: int | None, view_bytes: int | None = None) -> FeatureStore:
    """Create ``out`` for ``inputs`` (chunks of ``chunk_videos``, else sized by ``view_bytes``: one video's
    rows in its largest view), or reopen it after checking backbone and video list match."""
    out = Path(out)
    if not FeatureStore.exists(out):
        try:  # the files' sizes are recorded once, here: every process plans the work from them
            return FeatureStore.create(out, spec, inputs.videos, inputs.classes, chunk_videos,
                                       sizes=file_sizes([str(inputs.resolve(v)) for v in inputs.videos]),
                                       video_bytes=view_bytes)
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
                  record: dict[str, Any] | None = None, requested_precision: str = "auto",
                  sets: dict[str, FeatureSet] | None = None) -> None:
    """Create each stored view (or check the existing one has the same sampler spec, recipe and precision).

    ``sets``: the stored views, each cut from one of the sampler ``views`` (default: one pooled view
    each); a token view records its grid (:meth:`FeatureSet.record`). A kind with a variable clip
    count gets the ragged row layout; ``record`` (the extraction settings, its ``precision`` the one
    ``requested_precision`` resolved to) is kept in the view's attributes when it is created. An
    existing view that records no precision is resumed only under an explicit ``--precision``, which
    it then records. A new view whose chunk would hold more than ``MAX_CHUNK_VIEW_BYTES`` is refused
    before anything is written.
    """
    sets = sets or plain_sets(views)
    check_chunk_bytes(store, views, sets, dtype)
    unrecorded = []
    for name in sets:
        if record is not None and name in store.view_names():
            check_recipe(name, store.view(name).record, record)
            stored = store.view_precision(name)
            check_precision(name, stored, requested_precision, record["precision"])
            if not stored:
                unrecorded.append(name)
    for name in unrecorded:  # the explicit flag vouches for the rows extracted before
        store.view(name).update_record(precision=record["precision"])
    for name, s in sets.items():
        spec = views[s.view]
        args = (name, spec.num_clips if spec.fixed_count else None, spec.to_dict(), dtype)
        kwargs = dict(record={**record, **s.record()} if record is not None else None,
                      clip_shape=s.clip_shape(store.backbone.embed_dim))
        try:
            store.create_view(*args, **kwargs)
        except StoreError:
            raise
        except Exception:  # a concurrent shard created it between our check and create
            FeatureStore.open(store.path, "r+").create_view(*args, **kwargs)


def check_chunk_bytes(store: FeatureStore, views: dict[str, SamplerSpec], sets: dict[str, FeatureSet],
                      dtype: str) -> None:
    """Refuse a new view whose rows in one chunk exceed ``MAX_CHUNK_VIEW_BYTES``.

    A store keeps the chunking it was created with; a token grid added to a store chunked for pooled
    vectors would hold its whole chunk's grids in memory while the chunk is assembled. A new ``--out``
    store is chunked by its largest view, token views included.
    """
    existing = set(store.view_names())
    for name, s in sets.items():
        if name in existing:
            continue
        per_video = set_video_bytes(views[s.view], s.clip_shape(store.backbone.embed_dim), dtype)
        total = per_video * min(store.chunk_videos, store.num_videos)
        if total > MAX_CHUNK_VIEW_BYTES:
            raise StoreError(f"view '{name}' would hold {_binary(total)} per chunk of {store.path} "
                             f"({min(store.chunk_videos, store.num_videos)} videos x {_binary(per_video)}; at most "
                             f"{_binary(MAX_CHUNK_VIEW_BYTES)} is assembled in memory); extract it into a new --out "
                             "store (chunked for it), or ask for fewer tokens (e.g. --tokens 2x4x4)")


def _binary(n: float) -> str:
    """``n`` bytes in KiB, MiB or GiB, one decimal."""
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"


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



@dataclass
class _Run:
    """What the steps of one ``extract`` call share once the store is open."""

    cfg: ExtractConfig
    inputs: VideoInputs
    embedder: Embedder
    store: FeatureStore

    @property
    def specs(self) -> dict[str, SamplerSpec]:
        return self.embedder.specs

    @property
    def names(self) -> list[str]:
        """The stored views this run fills (token and layer views included)."""
        return self.embedder.view_names


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
    summary = ExtractSummary(str(run.store.path), run.store.num_videos, list(run.names),
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
    """Step 1: inputs, the embedder (device, precision, backbone, views), then the store and its views."""
    inputs = as_inputs(videos, cfg.split, root)
    embedder = Embedder.from_config(cfg, model)
    name = canonical_name(cfg.backbone)  # a family's spelling (image_vit) records the built-in's (image-vit)
    spec = backbone_spec(embedder.model, name, cfg.checkpoint, embedder.norm, embedder.precision)
    store = open_or_create_store(out, spec, inputs, cfg.chunk_videos,
                                 largest_view_bytes(embedder.specs, spec.embed_dim, cfg.dtype, embedder.sets))
    # the input folder (absolute) lets a reader of the store find the videos again (the retrieval
    # figure draws their frames); where the files lie is no recipe setting, so resuming ignores it
    record = {**cfg.record(), "precision": embedder.precision, "input_root": str(inputs.root.resolve())}
    prepare_views(store, embedder.specs, cfg.dtype, record=record, requested_precision=cfg.precision,
                  sets=embedder.sets)
    return _Run(cfg, inputs, embedder, store)


def _choose_ranges(run: _Run, ranges: Ranges | None, shard: tuple[int, int] | str | None
                   ) -> list[tuple[int, int]] | WorkQueue:
    """Step 2: the chunk-aligned video ranges this call owns (all, a shard, or a planner's choice,
    which may be a queue of claims handed out as the work goes)."""
    store = run.store
    if callable(ranges):
        ranges = ranges(store, list(run.names), [str(run.inputs.resolve(v)) for v in run.inputs.videos])
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


def _pending_jobs(run: _Run, ranges: Sequence[tuple[int, int]], summary: ExtractSummary) -> list[Job]:
    """Step 3: the videos of ``ranges`` that still miss a view (failed ones only with ``retry_failed``)."""
    names = list(run.names)
    jobs: list[Job] = []
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
                jobs.append(Job(i, str(run.inputs.resolve(entry)), entry.path, need))
    return jobs


def _embed_and_write(run: _Run, jobs: list[Job], summary: ExtractSummary, progress: bool,
                     keep: Callable[[int], bool] | None = None) -> None:
    """Step 4: embed (:meth:`Embedder.embedded`), write each chunk once all its videos are finished
    (and, with ``keep``, only while ``keep(chunk)`` says the chunk is still this call's)."""
    if not jobs and keep is not None:  # a claim whose videos were all done meanwhile
        return
    cfg, store, embedder = run.cfg, run.store, run.embedder

    with ProgressBar("extract", len(jobs), quiet=not progress) as bar, BackgroundWriter() as writer:
        chunks = _ChunkAssembler(store, jobs, keep, writer.submit)
        bar.say(f"{store.path}: {len(jobs)} videos to extract ({summary.skipped_done} done before, "
                f"{summary.skipped_failed} failed before) · views {', '.join(run.names)} · {cfg.backbone} on "
                f"{embedder.device} {embedder.precision} · decoder {cfg.decoder} · {cfg.workers} workers")
        for video in embedder.embedded(jobs):
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


class _ChunkAssembler:
    """Holds finished videos until every pending video of their chunk is finished, then writes the chunk.

    The store takes whole chunks only (DESIGN.md): one write per chunk, handed to ``submit``
    (the run's one writer thread, :mod:`vssl.extract.writer`).
    """

    def __init__(self, store: FeatureStore, jobs: Sequence[Job], keep: Callable[[int], bool] | None = None,
                 submit: Callable[..., None] = lambda fn, *args: fn(*args)) -> None:
        self.store, self.keep, self.submit = store, keep, submit
        self.waiting: dict[int, list[PendingVideo]] = {}
        self.left: dict[int, int] = {}
        for j in jobs:
            c = j.index // store.chunk_videos
            self.left[c] = self.left.get(c, 0) + 1

    def finish(self, video: PendingVideo) -> None:
        c = video.job.index // self.store.chunk_videos
        self.waiting.setdefault(c, []).append(video)
        self.left[c] -= 1
        if self.left[c] == 0:
            self.submit(self._write, c, self.waiting.pop(c))

    def _write(self, c: int, videos: list[PendingVideo]) -> None:
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


def _write_chunk(store: FeatureStore, videos: list[PendingVideo]) -> None:
    """One whole-chunk write per distinct set of views (usually one)."""
    groups: dict[tuple[str, ...], list[PendingVideo]] = {}
    for v in sorted(videos, key=lambda v: v.job.index):
        groups.setdefault(v.job.views, []).append(v)
    for view_names, group in groups.items():
        store.write_videos(
            [v.job.index for v in group],
            views={name: ([v.features[name] for v in group], [v.boxes[name] for v in group])
                   for name in view_names},
            num_frames=[v.num_frames for v in group], fps=[v.fps for v in group],
            errors=[v.error for v in group])

