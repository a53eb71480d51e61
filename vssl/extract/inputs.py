"""What to extract: a class-per-folder directory or a CSV/TSV manifest → videos, labels, classes.

Paths are kept *relative to the input root* (the directory, or the manifest's folder), as
the datasets' official split lists name them (``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi``).
That relative path is what the store records and what seeds a video's random clips, so a
dataset moved to another disk or machine gives the same store.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from vssl.errors import VsslError
from vssl.features_store import VideoEntry

#: containers people keep videos in, all of which FFmpeg (PyAV) opens; a folder scan takes these
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".qt", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".m2v",
                            ".vob", ".flv", ".f4v", ".wmv", ".asf", ".3gp", ".3g2", ".ogv", ".ts", ".mts",
                            ".m2ts", ".mxf", ".dv", ".gif", ".y4m", ".mjpeg", ".mjpg"})


@dataclass(frozen=True)
class VideoInputs:
    """The videos of one extraction: entries (paths relative to ``root``) and class names."""

    root: Path
    videos: list[VideoEntry]
    classes: list[str]
    #: files a folder scan passed over, by kind (suffix, or "hidden files"): reported, never silent
    skipped: dict[str, int] = field(default_factory=dict)

    def skipped_lines(self) -> list[str]:
        """One line per kind of file that was not taken as a video."""
        lines = []
        for kind, n in sorted(self.skipped.items()):
            files = f"{n} {'hidden' if kind == 'hidden' else kind} file{'s' if n > 1 else ''}"
            why = ("names starting with '.'" if kind == "hidden" else
                   f"not a video container; vssl reads {', '.join(sorted(VIDEO_SUFFIXES))}")
            lines.append(f"skipped {files} under {self.root} ({why})")
        return lines

    def resolve(self, entry: VideoEntry) -> Path:
        """The file of ``entry`` on this machine."""
        p = Path(entry.path)
        return p if p.is_absolute() else self.root / p


def scan_directory(directory: str | Path, split: str = "") -> VideoInputs:
    """Every video file under ``directory`` (recursive, sorted); the first-level folder is the class.

    Files directly inside ``directory`` are unlabelled (-1). ``split`` is given to every video.
    """
    root = Path(directory)
    if not root.is_dir():
        raise VsslError(f"{root}: not a directory (give a folder of videos or a .csv/.tsv manifest)")
    files, skipped = [], Counter()
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        if any(part.startswith(".") for part in p.relative_to(root).parts):
            skipped["hidden"] += 1
        elif p.suffix.lower() in VIDEO_SUFFIXES:
            files.append(p)
        else:
            skipped[p.suffix.lower() or "suffix-less"] += 1
    if not files:
        raise VsslError(f"{root}: no video files found (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
    rel = [p.relative_to(root) for p in files]
    classes = sorted({r.parts[0] for r in rel if len(r.parts) > 1})
    index = {c: i for i, c in enumerate(classes)}
    videos = [VideoEntry(r.as_posix(), index[r.parts[0]] if len(r.parts) > 1 else -1, split) for r in rel]
    return VideoInputs(root, videos, classes, dict(skipped))


def read_manifest(manifest: str | Path, split: str = "") -> VideoInputs:
    """Read ``path,label[,split]`` rows (CSV, or TSV for ``.tsv``/tab-separated files).

    An optional header row starting with ``path`` is skipped; it may name more columns after
    ``path,label,split``, each numeric (empty = none): regression targets (``--target NAME``),
    e.g. LVU's ``year``. Labels are class names (sorted into class indices) or, when every label
    is an integer, class indices as they are; an empty label means unlabelled. A label ``a;b;c``
    gives the video several classes (a multi-label dataset: every label is then read that way).
    A row without a split gets ``split``.
    """
    path = Path(manifest)
    if not path.is_file():
        raise VsslError(f"manifest not found: {path}")
    text = path.read_text(encoding="utf-8-sig")
    delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in text.split("\n", 1)[0]) else ","
    rows = [[c.strip() for c in r] for r in csv.reader(text.splitlines(), delimiter=delimiter) if any(c.strip() for c in r)]
    header = ["path", "label", "split"]
    if rows and rows[0][0].lower() == "path":
        header = [h.lower() if i < 3 else h for i, h in enumerate(rows[0])]
        rows = rows[1:]
        if header[1:3] != ["label", "split"][:len(header) - 1] or any(not h for h in header):
            raise VsslError(f"{path}: header {header!r} must start path,label,split; then numeric columns")
    if not rows:
        raise VsslError(f"{path}: no rows (expected path,label[,split])")
    for n, r in enumerate(rows, 1):
        if len(r) > len(header) or not r[0]:
            raise VsslError(f"{path}: row {n} {r!r} is not {','.join(header)}")
    labels = [[part.strip() for part in r[1].split(";") if part.strip()] if len(r) > 1 else [] for r in rows]
    multi = any(";" in r[1] for r in rows if len(r) > 1)
    given = sorted({lab for labs in labels for lab in labs})
    numeric = all(_is_int(lab) for lab in given)
    classes = [] if numeric else given
    if numeric and multi and given:
        classes = [str(c) for c in range(max(int(lab) for lab in given) + 1)]
    index = {c: i for i, c in enumerate(classes)}
    targets = [_targets(path, n, header[3:], r[3:]) for n, r in enumerate(rows, 1)]
    videos = []
    for r, labs, values in zip(rows, labels, targets):
        ids = tuple(int(lab) if numeric else index[lab] for lab in labs)
        videos.append(VideoEntry(r[0], ids[0] if ids else -1, r[2] if len(r) > 2 and r[2] else split,
                                 ids if multi else (), values))
    return VideoInputs(path.parent, videos, classes)


def _targets(path: Path, row: int, names: list[str], cells: list[str]) -> tuple[tuple[str, float], ...]:
    """A row's numeric columns by header name (empty cells left out)."""
    out = []
    for name, cell in zip(names, cells):
        if not cell:
            continue
        try:
            out.append((name, float(cell)))
        except ValueError:
            raise VsslError(f"{path}: row {row}, column {name!r}: {cell!r} is not a number "
                            "(columns after path,label,split are numeric targets)") from None
    return tuple(out)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def collect_inputs(source: str | Path, split: str = "") -> VideoInputs:
    """A directory (class-per-subfolder) or a manifest file (.csv/.tsv/.txt)."""
    p = Path(source)
    if p.is_dir():
        return scan_directory(p, split)
    if p.is_file():
        if p.suffix.lower() in VIDEO_SUFFIXES:
            raise VsslError(f"{p} is a video; give its folder or a manifest listing it")
        return read_manifest(p, split)
    raise VsslError(f"{p}: no such directory or manifest")


def as_inputs(videos: VideoInputs | str | Path | Sequence[str | Path | VideoEntry], split: str = "",
              root: str | Path | None = None) -> VideoInputs:
    """The videos ``extract`` and ``embed`` take: inputs already collected, a folder or manifest
    (:func:`collect_inputs`), or a list of files (paths or entries, relative to ``root``)."""
    if isinstance(videos, VideoInputs):
        return videos
    if isinstance(videos, (str, Path)):
        return collect_inputs(videos, split)
    entries = [v if isinstance(v, VideoEntry) else VideoEntry(str(v)) for v in videos]
    return VideoInputs(Path(root or "."), entries, [])

