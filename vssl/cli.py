"""The `vssl` command line: parses flags, calls the library, renders with rich.

Thin by design: every command is a few lines around a library call, so notebooks get the
same behaviour through the Python API. Errors a user can fix (:class:`VsslError`) are one
line on stderr and exit code 2; results go to stdout, logs and progress to stderr.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vssl.aggregate.config import AggregateInputs, ExportConfig, ScaleConfig, load_aggregate_settings
from vssl.errors import VsslError, file_note, with_file
from vssl.extract.config import ExtractConfig
from vssl.probe.config import probe_options
from vssl.settings import settings_options

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Frozen-feature video representation learning: extract, aggregate (SCALE), probe.")
store_app = typer.Typer(no_args_is_help=True, help="Inspect, verify, export and import feature stores.")
app.add_typer(store_app, name="store")

# Piped or redirected, rich would cut tables at 80 columns ("effic…"): give them the room they need.
out = Console() if sys.stdout.isatty() else Console(width=1000)
err = Console(stderr=True)


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# ---------------------------------------------------------------- store


@store_app.command("info")
def store_info(store: Path = typer.Argument(..., help="feature store directory"),
               as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Backbone, videos done/failed/pending per view, dims, bytes on disk, compression ratio."""
    from vssl.features_store import FeatureStore, store_summary
    from vssl.features_store.verify import incomplete_line

    summary = store_summary(FeatureStore.open(store))
    if as_json:
        _print_json(summary)
        return
    bb = summary["backbone"]
    out.print(f"[bold]{summary['path']}[/bold]  format {summary['vssl_format']} · {summary['num_videos']} videos"
              f" · {len(summary['classes'])} classes · chunk {summary['chunk_videos']} videos")
    out.print(f"backbone {bb['name']} (dim {bb['embed_dim']}, {bb['frames']}x{bb['stride']} frames, "
              f"{bb['size']} px) checkpoint {bb.get('checkpoint') or '-'}")
    v = summary["videos"]
    out.print(f"videos: {v['done']} done, {v['failed']} failed, {v['pending']} pending")
    if v["incomplete"]:
        out.print(f"[yellow]{incomplete_line(v['incomplete'])}[/yellow]", highlight=False)
    table = Table("view / rows", "K", "D", "dtype", "done", "pending", "on disk", "ratio")
    for name, s in summary["groups"].items():
        clips = "ragged" if s.get("layout") == "ragged" else str(s.get("num_clips", ""))
        shape = "x".join(map(str, s.get("clip_shape") or [s.get("dim", "")]))  # a clip's feature: D, or TxD
        table.add_row(name, clips, shape, s.get("dtype", ""),
                      str(s["done"]), str(s["pending"]), _human_bytes(s["bytes_on_disk"]),
                      f"{s['compression_ratio']:.2f}")
    out.print(table)
    for line in summary["unreadable"]:  # counted as not done above; verify --repair makes them pending
        out.print(f"[red]✗[/red] {line}", highlight=False, soft_wrap=True)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


@store_app.command("verify")
def store_verify(store: Path = typer.Argument(..., help="feature store directory"),
                 as_json: bool = typer.Option(False, "--json"),
                 repair: bool = typer.Option(False, "--repair", help="make the videos of unreadable chunks pending "
                                             "(damaged files go to STORE.unreadable/) for the same extract to redo"
                                             )) -> None:
    """Check shapes, readable chunks, NaN/inf in done rows and status consistency, count pending videos; exit 1
    when broken or incomplete."""
    from vssl.features_store import FeatureStore
    from vssl.features_store.repair import repair_store
    from vssl.features_store.verify import check_store, incomplete_line

    opened = FeatureStore.open(store, "r+" if repair else "r")
    found = check_store(opened)
    repaired = repair_store(opened, found.lost) if repair and found.lost else []
    if repaired:
        found = check_store(FeatureStore.open(store))
    problems, pending = found.lines(), found.pending
    if as_json:
        _print_json({"ok": not problems and not pending, "problems": problems, "pending": pending,
                     **({"repaired": repaired} if repair else {})})
    else:
        for line in repaired:
            out.print(f"[green]repaired[/green] {line}", highlight=False, soft_wrap=True)
        for p in problems:
            out.print(f"[red]✗[/red] {p}")
        if pending:
            out.print(f"[yellow]✗[/yellow] {incomplete_line(pending)}", highlight=False)
        if not problems and not pending:
            out.print("[green]✓[/green] store is consistent and complete")
        elif not problems:
            out.print("store is consistent so far", highlight=False)
    if problems or pending:
        raise typer.Exit(1)


@store_app.command("export")
def store_export(store: Path = typer.Argument(..., help="feature store directory"),
                 output: Path = typer.Argument(..., help="HDF5 file to write (npy: a directory)"),
                 fmt: str = typer.Option("hdf5", "--format", help="hdf5: the whole store in one file; npy: one "
                                         "[num_clips, D] float32 .npy per video of --view, plus index.csv"),
                 view: Optional[str] = typer.Option(None, "--view", help="the view to export (--format npy)")) -> None:
    """Write the whole store to one HDF5 file, or one view as .npy files per video (TAD tools' layout)."""
    from vssl.features_store import FeatureStore
    from vssl.features_store.exporters import EXPORTERS

    if fmt not in EXPORTERS:
        raise VsslError(f"--format {fmt!r}: choose {' or '.join(EXPORTERS)}")
    exporter = EXPORTERS[fmt]
    if not exporter.per_view and view is not None:
        per_view = " or ".join(name for name, e in EXPORTERS.items() if e.per_view)
        raise VsslError(f"--view is for --format {per_view}; the {fmt.upper()} export holds the whole store")
    if exporter.per_view and view is None:
        raise VsslError(f"--format {fmt} exports one view: add --view NAME (`vssl store info` lists them)")
    err.print(exporter.export(FeatureStore.open(store), output, view), highlight=False, soft_wrap=True)


@store_app.command("import")
def store_import(source: Path = typer.Argument(..., help="HDF5 file written by `vssl store export`"),
                 store: Path = typer.Argument(..., help="new feature store directory")) -> None:
    """Rebuild a feature store from an HDF5 export."""
    from vssl.features_store import import_hdf5

    import_hdf5(source, store)
    err.print(f"wrote {store}")


# ---------------------------------------------------------------- extract


@app.command("extract")
@settings_options(ExtractConfig)
def extract_cmd(
    videos: Path = typer.Argument(..., help="folder (class-per-subfolder) or CSV/TSV manifest path,label[,split]"),
    store: Path = typer.Option(..., "--out", help="feature store directory (created, or resumed)"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of settings (flags override it)"),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="named settings of a protocol (flags override it)"),
    key_map: Optional[list[str]] = typer.Option(None, "--key-map",
                                                help="PATTERN=REPLACEMENT regex rename of checkpoint keys (repeatable)"),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: process only the i-th of n chunk ranges"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable summary"),
    overrides: dict = None,
) -> None:
    """Decode each video once, cut clips for every view, embed them with a frozen backbone."""
    from vssl.distributed import rank_env
    from vssl.extract.config import recipe as named_recipe
    from vssl.extract.distributed import extract_shared

    if key_map:
        overrides["key_map"] = tuple(key_map)
    cfg = ExtractConfig.load(config, overrides, base=named_recipe(recipe) if recipe else None)
    # torchrun ranks and --shard tasks split the store's chunks by video size (vssl.extract.distributed)
    s, problems = extract_shared(videos, store, config=cfg, shard=shard, progress=not quiet)
    ranks = rank_env()
    if not ranks.is_main:
        return  # rank 0 reports for every rank
    if as_json:
        _print_json({**s.to_dict(), **({"ranks": ranks.world_size, "problems": problems} if problems is not None
                                       else {})})
        if problems:
            raise typer.Exit(1)
        return
    part = f" (shard {shard}: {s.assigned} of {s.num_videos} videos)" if shard else ""
    part = f" ({ranks.world_size} ranks)" if ranks.distributed else part
    out.print(f"{s.store}{part}: {s.done} done, {s.failed} failed, {s.skipped_done} already done, "
              f"{s.skipped_failed} failed before · {s.clips} clips in {s.seconds:.1f} s "
              f"({s.videos_per_s:.2f} videos/s, {s.clips_per_s:.1f} clips/s) · views {', '.join(s.views)}",
              highlight=False, soft_wrap=True)
    for line in s.skipped_files:
        err.print(line, highlight=False, soft_wrap=True)
    for _, error in s.failures:
        err.print(f"failed: {error}", highlight=False, soft_wrap=True)
    for problem in problems or []:
        err.print(f"verify: {problem}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    if problems is not None:
        err.print(f"verified {s.store}: consistent", highlight=False)

# ---------------------------------------------------------------- backbones


@app.command("backbones")
def backbones_cmd(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Built-in and plugin backbones: family, input spec (frames x stride, size, mean/std), checkpoint need."""
    from vssl.extract.backbones.listing import backbone_rows, describe_norm

    rows = backbone_rows()
    if as_json:
        _print_json(rows)
        return
    table = Table()
    table.add_column("name", no_wrap=True)
    for header in ("family", "frames", "size", "norm", "dim", "tokens", "checkpoint", "tested against"):
        table.add_column(header)
    for r in rows:
        s = r["spec"]
        name = r["name"] + "".join(f" ({alias})" for alias in r["aliases"])  # --backbone takes either
        table.add_row(name, r["family"], f"{s['frames']}×{s['stride']}", str(s["size"]),
                      describe_norm(s["mean"], s["std"]), str(r["embed_dim"] or "ckpt"), r["tokens"] or "-",
                      "needed" if r["needs_checkpoint"] else "built in",
                      r["verified"]["reference"] if r["verified"] else "not verified by vssl")
    out.print(table)
    err.print("tested layouts and what is not verified: vssl backbones --json (\"verified\")", highlight=False)

# ---------------------------------------------------------------- aggregate


@app.command("aggregate")
@settings_options(AggregateInputs, into="inputs")
@settings_options(ExportConfig, into="export_overrides")
@settings_options(ScaleConfig)
def aggregate_cmd(
    store: Path = typer.Argument(..., help="feature store directory"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="run directory to train into"),
    from_run: Optional[Path] = typer.Option(None, "--from", help="trained run directory (with --export)"),
    do_export: bool = typer.Option(False, "--export", help="write aggregates/<run>/<view> into the store "
                                   "(fp32, 256 videos a batch, unless --precision / --batch-size)"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of settings (flags override it)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its checkpoint"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable summary"),
    overrides: dict = None,
    export_overrides: dict = None,
    inputs: dict = None,
) -> None:
    """Train the SCALE predictor (MCM + SET) on a view, or --export its outputs into the store."""
    from vssl.aggregate import export, train

    # the settings file and flags are checked as for training, whichever the command does
    settings = load_aggregate_settings(config, overrides, inputs, export_overrides)
    view = settings.inputs.view
    if do_export:
        from vssl.distributed import rank_env

        if rank_env().distributed:
            raise VsslError("--export writes the store from one process; run it without torchrun")
        if from_run is None:
            raise VsslError("--export needs --from RUN_DIR (a trained run)")
        result = export(store, from_run, view, settings.export, quiet=quiet)
        _print_json(result) if as_json else out.print(
            f"{result['group']}: wrote {result['written']} videos, {result['done']} done")
        return
    if out_dir is None:
        raise VsslError("training needs --out RUN_DIR (or --export --from RUN_DIR to export)")
    cfg = settings.scale
    from vssl.distributed import process_group

    with process_group(device=cfg.device) as ranks:  # torchrun: DDP, rank 0 writes (vssl.aggregate.distributed)
        summary = train(store, view, out_dir, cfg, resume=resume, split=settings.inputs.train_split(),
                        quiet=quiet, log=lambda msg: err.print(msg, highlight=False),
                        log_dir=settings.inputs.log_dir)
    if not ranks.is_main:
        return
    if as_json:
        _print_json(summary.to_dict())
    else:
        from vssl.aggregate.metrics import summary_line

        out.print(f"{out_dir}: {summary.epochs} epochs on split '{summary.split}', {summary_line(summary.final)}, "
                  f"{summary.videos_per_s:.0f} videos/s")

# ---------------------------------------------------------------- index


@app.command("index")
def index_cmd(
    store: Path = typer.Argument(..., help="feature store directory"),
    view: str = typer.Option(..., "--view", help="the view whose usable videos (all splits) are indexed"),
    features: Optional[str] = typer.Option(None, "--features", help="backbone (the default): the view's features"),
    scale: Optional[Path] = typer.Option(None, "--scale", help="a trained SCALE run: index its [C ⊕ SET] vectors "
                                         "(missing aggregates are exported first)"),
    clips: bool = typer.Option(False, "--clips", help="one vector per clip, for `vssl search --moments`"),
    kind: str = typer.Option("flat", "--kind", help="flat (exact), ivf or hnsw (approximate, faster)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable summary"),
) -> None:
    """Build (or rebuild) a faiss index of a view's videos or clips in STORE.indexes/, for `vssl search`."""
    from vssl.features_store import FeatureStore
    from vssl.search.index import GallerySpec, write_store_index

    built = write_store_index(FeatureStore.open(store), GallerySpec.from_flags(view, features, scale, clips), kind,
                              quiet=quiet)
    _print_json(built.summary()) if as_json else out.print(built.line(), highlight=False, soft_wrap=True)

# ---------------------------------------------------------------- probe


@app.command("probe")
@probe_options
def probe(
    store: Path = typer.Argument(..., help="feature store directory"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of settings (flags override it)"),
    report: Optional[Path] = typer.Option(None, "--report", help="write the results as JSON"),
    confusion: Optional[Path] = typer.Option(None, "--confusion", help="PNG of the best probe's confusion matrix"),
    predictions: Optional[Path] = typer.Option(None, "--predictions",
                                               help="write test paths, labels and every row's scores (.npz)"),
    html_page: Optional[Path] = typer.Option(None, "--html", help="write the report page (self-contained HTML)"),
    as_json: bool = typer.Option(False, "--json", help="print the JSON report instead of the table"),
    overrides: dict = None,
) -> None:
    """k-NN, linear, MLP, transformer, SCALE probes and retrieval of a store view; no probe flag = k-NN + linear."""
    from vssl.features_store import FeatureStore
    from vssl.probe.config import ProbeConfig
    from vssl.probe.gallery import draw_report_gallery, resolve_video_root
    from vssl.probe.report import check_writable, render_retrieval_table, render_table, write_confusion_png
    from vssl.probe.retrieval import comparisons as retrieval_comparisons
    from vssl.probe.run import log_to_stderr, run_probes

    cfg = ProbeConfig.load(config, overrides)
    log_to_stderr(cfg.quiet)
    for path, flag in ((report, "--report"), (confusion, "--confusion"), (predictions, "--predictions"),
                       (html_page, "--html"), (cfg.gallery, "--gallery")):
        if path is not None:
            check_writable(path, flag)
    if cfg.gallery is not None:  # where the videos are, known before the probes run
        resolve_video_root(FeatureStore.open(store), cfg.view, cfg.video_root)
    result = run_probes(cfg.request(store))
    if cfg.gallery is not None:     # drawn first: the JSON report and the page name it
        draw_report_gallery(result, FeatureStore.open(store), cfg.gallery, cfg.gallery_queries, cfg.video_root)
        result.gallery = str(Path(cfg.gallery).resolve())
    if report is not None:
        result.write_json(report)
    if predictions is not None:
        result.write_predictions(predictions)
    if confusion is not None:
        best = result.best()
        write_confusion_png(best, [] if best is None else list(best.per_class), confusion)
    if html_page is not None:
        from vssl.report_page import write_page

        for note in write_page(result.to_json(), html_page, quiet=cfg.quiet):
            err.print(note, highlight=False, markup=False, soft_wrap=True)
        err.print(f"report page: {html_page}", highlight=False, markup=False)
    if as_json:
        _print_json(result.to_json())
        return
    if result.results:
        out.print(render_table(result))
    for difference in result.comparisons():
        out.print(f"• {difference.statement()}", highlight=False, soft_wrap=True)
    if result.retrieval:
        out.print(render_retrieval_table(result))
    for difference in retrieval_comparisons(result.retrieval):
        out.print(f"• {difference.statement()}", highlight=False, soft_wrap=True)

# ---------------------------------------------------------------- report


@app.command("report")
def report_cmd(
    report: Path = typer.Argument(..., help="JSON report written by `vssl probe --report`"),
    out_path: Path = typer.Option(..., "--out", help="the HTML page to write"),
    runs: Optional[list[Path]] = typer.Option(None, "--run", help="SCALE run folder whose training curves to show "
                                              "(repeatable; the report's own run is shown when still there)"),
    store: Optional[Path] = typer.Option(None, "--store", help="where the store is now, for the feature map "
                                         "(default: the report's path)"),
    rows: Optional[list[str]] = typer.Option(None, "--row", help="also show this row's confusion matrix and "
                                             "per-class numbers, e.g. linear/backbone (repeatable)"),
    method: str = typer.Option("tsne", "--map", help="feature map: tsne or pca"),
) -> None:
    """One self-contained HTML page of a probe report: what was run, the table, comparisons, per-class
    numbers, training curves, a feature map and the retrieval gallery."""
    from vssl.probe.report import check_writable
    from vssl.report_page import write_page

    check_writable(out_path, "--out")
    for note in write_page(report, out_path, runs or (), store, rows or (), method):
        err.print(note, highlight=False, markup=False, soft_wrap=True)
    out.print(str(out_path), highlight=False, markup=False)


# ---------------------------------------------------------------- search


@app.command("search")
def search_cmd(
    store: Path = typer.Argument(..., help="feature store directory"),
    query: str = typer.Argument(..., help="a video of the store (its recorded path) or any video file"),
    k: int = typer.Option(10, "-k", help="number of results"),
    view: Optional[str] = typer.Option(None, "--view", help="view to search (default: the store's only pooled view)"),
    features: Optional[str] = typer.Option(None, "--features", help="backbone (the default; --scale RUN for a "
                                           "SCALE run's)"),
    scale: Optional[Path] = typer.Option(None, "--scale", help="search by this SCALE run's features"),
    moments: bool = typer.Option(False, "--moments", help="nearest (video, start second) pairs over every clip"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint",
                                              help="the store's backbone checkpoint, where it moved since extraction"),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|cuda:N"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable results"),
) -> None:
    """The nearest videos (or --moments) of a query video by cosine similarity: exact search, or the
    matching index `vssl index` built."""
    from vssl.search.searching import search

    result = search(store, query, k=k, view=view, features=features, scale_run=scale, moments=moments,
                    checkpoint=checkpoint, device=device, quiet=quiet)
    if as_json:
        _print_json(result.to_json())
        return
    table = Table("rank", "path", *(("start (s)",) if moments else ()), "label", "similarity")
    for hit in result.hits:
        start = (f"{hit.start:.2f}",) if moments else ()
        table.add_row(str(hit.rank), hit.path, *start, hit.label, f"{hit.similarity:.4f}")
    out.print(table)
    err.print(f"{result.query}: view '{result.view}', {result.features} features, {result.gallery_size} "
              f"{'clips' if moments else 'videos'} searched by {result.searched}", highlight=False, soft_wrap=True)

# ---------------------------------------------------------------- demo


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("vssl-demo"), "--out", help="where the videos, store, run and report go"),
    videos: Optional[int] = typer.Option(None, "--videos", help="number of generated videos (default 120; 24 with --quick)"),
    quick: bool = typer.Option(False, "--quick", help="a smoke-sized run in seconds (numbers not meaningful)"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="backbone (default efficientnet-lite0; tiny with --quick)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="SCALE training epochs"),
    device: Optional[str] = typer.Option(None, "--device", help="auto (CUDA when present), cpu, cuda"),
    seed: int = typer.Option(0, "--seed"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """The whole pipeline on a generated dataset, offline: extract → aggregate → export → probe."""
    from vssl.demo.run import DemoConfig, run_demo
    from vssl.probe.report import render_table

    overrides = {k: v for k, v in dict(videos=videos, backbone=backbone, epochs=epochs, seed=seed,
                                       device=device).items()
                 if v is not None}
    cfg = DemoConfig.quick(**overrides) if quick else DemoConfig(**overrides)
    result = run_demo(out_dir, cfg, quiet=quiet, log=lambda msg: err.print(msg, highlight=False))
    out.print(render_table(result.report))
    for line in result.findings:
        out.print(f"• {line}", highlight=False, soft_wrap=True)   # one finding, one line
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    out.print(f"time: {timing}", highlight=False)
    for name, path in result.files.items():
        out.print(f"{name:>17}: {path}", highlight=False)


#: errno values a user fixes on their side (disk full, read-only or forbidden paths, a file size limit:
#: ``ulimit -f``, FAT32's 4 GiB): exit code 2
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point: no command ends in a traceback.

    A user error (:class:`VsslError`) or a full, read-only or forbidden disk is one line and exit
    code 2; anything unexpected is one line naming the exception and a log file that holds the
    traceback, exit code 1. Work already written is kept in every case (stores are written chunk
    by chunk, done flags last), so re-running the same command resumes.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        app(args=args, prog_name="vssl")
    except VsslError as exc:
        # the message is text, not markup: a path or a hint like pip install 'vssl[extra]' prints as written
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        _interrupted(args)
    except SystemExit as exc:
        if exc.code == 130 and _from_interrupt(exc):  # typer ends a Ctrl-C in a silent exit 130
            _interrupted(args)
        raise
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            _unexpected(exc, args)
        where = exc.filename or file_note(exc)  # the file, or the one being processed
        what = escape(f"{exc.strerror or exc}{f' ({where})' if where else ''}")
        err.print(f"[red]error:[/red] {what}; finished work is kept: "
                  "fix it (free space, permissions) and re-run the same command to resume", highlight=False,
                  soft_wrap=True)
        raise SystemExit(2) from None
    except Exception as exc:  # noqa: BLE001 - the last guard: a line and a log, never a traceback
        _unexpected(exc, args)


def _from_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while handling a KeyboardInterrupt (typer's ``Exit(130)`` chain)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _interrupted(args: list[str]) -> None:
    """The Ctrl-C line: what was interrupted and how to go on; exit code 130 (128 + SIGINT)."""
    words = [a for a in args[:2] if not a.startswith("-")]
    command = " ".join(words if words[:1] == ["store"] else words[:1])
    again = ("re-run the same command with --resume to continue training"
             if command == "aggregate" and "--export" not in args else "re-run the same command to resume")
    err.print(f"interrupted: `vssl {command}` stopped (Ctrl-C); finished work is kept: {again}",
              highlight=False, soft_wrap=True)
    raise SystemExit(130) from None


def _unexpected(exc: BaseException, args: list[str]) -> None:
    """One line naming the failure and the log that holds its traceback; exit code 1."""
    log_dir = Path(os.environ.get("VSSL_LOG_DIR") or Path(tempfile.gettempdir()) / "vssl-logs")
    text = f"vssl {' '.join(args)}\n\n" + "".join(traceback.format_exception(exc))
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"vssl-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        log.write_text(text)
        pointer = f"traceback in {log}"
    except OSError:
        pointer = "the traceback could not be written to a log (set VSSL_LOG_DIR)"
    message = with_file(" ".join(str(exc).split()) or "(no message)", exc)
    err.print(f"[red]error:[/red] unexpected {type(exc).__name__} in `vssl {args[0] if args else ''}`: {message}; "
              f"{pointer}; finished work is kept, so re-running resumes", highlight=False, soft_wrap=True)
    raise SystemExit(1) from None


if __name__ == "__main__":
    main()
