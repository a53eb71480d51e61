"""The `vssl` command line: parses flags, calls the library, renders with rich.

Thin by design: every command is a few lines around a library call, so notebooks get the
same behaviour through the Python API. Errors a user can fix (:class:`VsslError`) are one
line on stderr and exit code 2; results go to stdout, logs and progress to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from vssl.errors import VsslError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Frozen-feature video representation learning: extract, aggregate (SCALE), probe.")
store_app = typer.Typer(no_args_is_help=True, help="Inspect, verify, export and import feature stores.")
app.add_typer(store_app, name="store")

out = Console()
err = Console(stderr=True)


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# ---------------------------------------------------------------- store


@store_app.command("info")
def store_info(store: Path = typer.Argument(..., help="feature store directory"),
               as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Backbone, videos done/failed/pending per view, dims, bytes on disk, compression ratio."""
    from vssl.features_store import FeatureStore, store_summary

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
    table = Table("view / rows", "K", "D", "dtype", "done", "pending", "on disk", "ratio")
    for name, s in summary["groups"].items():
        table.add_row(name, str(s.get("num_clips", "")), str(s.get("dim", "")), s.get("dtype", ""),
                      str(s["done"]), str(s["pending"]), _human_bytes(s["bytes_on_disk"]),
                      f"{s['compression_ratio']:.2f}")
    out.print(table)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


@store_app.command("verify")
def store_verify(store: Path = typer.Argument(..., help="feature store directory"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Check shapes, NaN/inf in done rows and status consistency; exit 1 when broken."""
    from vssl.features_store import FeatureStore, verify_store

    problems = verify_store(FeatureStore.open(store))
    if as_json:
        _print_json({"ok": not problems, "problems": problems})
    elif problems:
        for p in problems:
            out.print(f"[red]✗[/red] {p}")
    else:
        out.print("[green]✓[/green] store is consistent")
    if problems:
        raise typer.Exit(1)


@store_app.command("export")
def store_export(store: Path = typer.Argument(..., help="feature store directory"),
                 output: Path = typer.Argument(..., help="HDF5 file to write")) -> None:
    """Write the whole store (groups, arrays, attributes) to one HDF5 file."""
    from vssl.features_store import FeatureStore, export_hdf5

    export_hdf5(FeatureStore.open(store), output)
    err.print(f"wrote {output}")


@store_app.command("import")
def store_import(source: Path = typer.Argument(..., help="HDF5 file written by `vssl store export`"),
                 store: Path = typer.Argument(..., help="new feature store directory")) -> None:
    """Rebuild a feature store from an HDF5 export."""
    from vssl.features_store import import_hdf5

    import_hdf5(source, store)
    err.print(f"wrote {store}")


# ---------------------------------------------------------------- extract
# (commands of the extraction stage go here)

# ---------------------------------------------------------------- backbones
# (`vssl backbones` goes here)

# ---------------------------------------------------------------- aggregate
# (commands of the aggregation stage go here)

# ---------------------------------------------------------------- probe
# (commands of the probe stage go here)

# ---------------------------------------------------------------- demo
# (`vssl demo` goes here)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point: user errors become one line and exit code 2."""
    try:
        app(args=argv, prog_name="vssl")
    except VsslError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        err.print("interrupted; finished work is kept in the store, re-run the same command to resume")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
