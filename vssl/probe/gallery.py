"""The retrieval figure: test queries and their nearest training videos, one middle frame each.

``vssl probe --retrieval --gallery out.png`` draws what retrieval papers show next to their R@k
table: each row a query video and its top-5 neighbours, every tile the video's middle frame with a
green border when it shares the query's class (multi-label: any label), red when it does not, grey
when either is unlabelled (and for the query itself). The neighbours are the retrieval row's own,
in its order (:func:`vssl.search.exact.exact_search`'s tie rule), so the figure shows what R@k counted.

Frames are decoded from the videos, found under the folder the view was extracted from (its
``extract`` record's ``input_root``) or ``--video-root`` when the folder has moved. A video that
cannot be read (gone, corrupt) is a grey placeholder with its name: a figure is never lost to one
bad file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vssl.errors import VsslError

log = logging.getLogger("vssl.probe")

#: neighbours drawn per query (the figure retrieval papers show)
NEIGHBOURS = 5
#: the pixels of one frame in a tile (frames are scaled to fit, aspect kept)
FRAME_W, FRAME_H = 160, 120
#: border width, label strip below a frame, space between tiles, extra space after the query column
BORDER, LABEL_H, GAP, QUERY_GAP, MARGIN, TITLE_H = 5, 30, 6, 18, 10, 22

SAME = (30, 160, 60)        # green: a neighbour of the query's class
OTHER = (210, 35, 35)       # red: another class
NEUTRAL = (130, 130, 130)   # the query, or an unlabelled video
PLACEHOLDER = (200, 200, 200)
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Tile:
    """One video of the figure: its file (None: not known), the text under it (lines split at
    newlines), and whether it shares the query's class (None: the query, or no label to compare)."""

    video: Path | None
    label: str
    same: bool | None


@dataclass(frozen=True)
class GalleryRow:
    """A query and its neighbours, best first."""

    query: Tile
    neighbours: list[Tile]


def tile_box(row: int, col: int, titled: bool = False) -> tuple[int, int, int, int]:
    """Outer box ``(x0, y0, x1, y1)`` (border included, x1/y1 exclusive) of the tile at ``row``,
    ``col`` of the figure (column 0: the query)."""
    w, h = FRAME_W + 2 * BORDER, FRAME_H + 2 * BORDER
    x0 = MARGIN + col * (w + GAP) + (QUERY_GAP if col > 0 else 0)
    y0 = MARGIN + (TITLE_H if titled else 0) + row * (h + LABEL_H + GAP)
    return x0, y0, x0 + w, y0 + h


def draw_gallery(path: str | Path, rows: Sequence[GalleryRow], title: str | None = None,
                 frame_of: Callable[[Path], np.ndarray] | None = None) -> None:
    """Write the figure of ``rows`` to ``path`` (PNG, or any format PIL infers from the suffix).

    ``frame_of`` reads a video's frame (default :func:`middle_frame`); a tile whose video is None
    or cannot be read is drawn as a placeholder with its name, with one warning for them all.
    """
    from PIL import Image, ImageDraw

    if not rows:
        raise VsslError("--gallery: no query to draw (the test split is empty)")
    read = frame_of or middle_frame
    cols = 1 + max(len(r.neighbours) for r in rows)
    right, bottom = tile_box(len(rows) - 1, cols - 1, title is not None)[2:]
    image = Image.new("RGB", (right + MARGIN, bottom + LABEL_H + MARGIN), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font()
    if title is not None:
        draw.text((MARGIN, MARGIN), _fit(draw, title, right - MARGIN, font), fill=(0, 0, 0), font=font)
    unreadable: list[str] = []
    for r, row in enumerate(rows):
        for c, tile in enumerate([row.query, *row.neighbours]):
            box = tile_box(r, c, title is not None)
            frame = _read_or_none(read, tile.video, unreadable)
            _draw_tile(image, draw, box, tile, frame, font)
    if unreadable:
        log.warning("--gallery: %d video(s) could not be read and are drawn as placeholders (first: %s)",
                    len(unreadable), unreadable[0])
    image.save(path)


def middle_frame(video: Path) -> np.ndarray:
    """The middle frame of ``video`` (RGB uint8 ``H x W x 3``), decoded as extraction decodes (the
    project's reader: seek where the file allows it, in order where it does not)."""
    from vssl.extract.decode import open_video

    with open_video(video) as reader:
        n = reader.info.num_frames
        if n < 1:
            raise VsslError(f"{video}: no frames")
        for _, frame in reader.frames([n // 2]):
            return np.asarray(frame)
    raise VsslError(f"{video}: frame {n // 2} not decoded")


def _read_or_none(read: Callable[[Path], np.ndarray], video: Path | None, unreadable: list[str]) -> np.ndarray | None:
    """``read(video)``, or None (noted in ``unreadable``) for a missing or undecodable file: one bad
    file must not cost the figure, whatever the decoder raised."""
    if video is None:
        return None
    try:
        return read(video)
    except Exception as exc:  # noqa: BLE001 - any decoder failure becomes a placeholder
        why = " ".join(str(exc).split())[:200]
        unreadable.append(why if str(video) in why else f"{video}: {why}")
        return None


def _draw_tile(image, draw, box: tuple[int, int, int, int], tile: Tile, frame: np.ndarray | None, font) -> None:
    """A bordered frame (or placeholder) in ``box`` and the tile's label under it."""
    from PIL import Image

    x0, y0, x1, y1 = box
    colour = NEUTRAL if tile.same is None else (SAME if tile.same else OTHER)
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
    inner = (x0 + BORDER, y0 + BORDER)
    if frame is None:
        draw.rectangle((inner[0], inner[1], inner[0] + FRAME_W - 1, inner[1] + FRAME_H - 1), fill=PLACEHOLDER)
        name = tile.video.name if tile.video is not None else "no video"
        draw.text((inner[0] + 4, inner[1] + FRAME_H // 2 - 6), _fit(draw, name, FRAME_W - 8, font),
                  fill=(60, 60, 60), font=font)
    else:
        picture = Image.fromarray(np.ascontiguousarray(frame[..., :3]).astype(np.uint8), "RGB")
        scale = min(FRAME_W / picture.width, FRAME_H / picture.height)   # up or down, aspect kept
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                 Image.Resampling.BILINEAR)
        draw.rectangle((inner[0], inner[1], inner[0] + FRAME_W - 1, inner[1] + FRAME_H - 1), fill=(0, 0, 0))
        image.paste(picture, (inner[0] + (FRAME_W - picture.width) // 2, inner[1] + (FRAME_H - picture.height) // 2))
    for i, line in enumerate(tile.label.split("\n")[:2]):
        draw.text((x0, y1 + 2 + 13 * i), _fit(draw, line, x1 - x0, font), fill=(0, 0, 0), font=font)


def _font():
    from PIL import ImageFont

    return ImageFont.load_default(size=11)


def _fit(draw, text: str, width: int, font) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


# ------------------------------------------------------------- rows from a retrieval result


def resolve_video_root(store, view: str, override: str | Path | None = None) -> Path:
    """The folder the videos of ``view`` are found under: ``override`` (``--video-root``), else
    the folder the view was extracted from (its record's ``input_root``). A missing folder is one
    line naming ``--video-root``; checked before probing, so no run is lost to it."""
    if override is not None:
        root = Path(override).expanduser()
        if not root.is_dir():
            raise VsslError(f"--video-root {override}: not a directory; give the folder the videos of "
                            f"{store.path} were extracted from")
        return root
    recorded = store.view(view).record.get("input_root")
    if recorded is None:
        raise VsslError(f"{store.path} view '{view}' records no video folder (extracted by an older vssl); give "
                        "--video-root DIR, the folder its videos were extracted from")
    if not Path(recorded).is_dir():
        raise VsslError(f"the videos of {store.path} were extracted from {recorded}, which is not there; give "
                        "--video-root DIR (where that folder is now)")
    return Path(recorded)


def query_positions(n_test: int, n_queries: int) -> np.ndarray:
    """Which test videos (positions in the test split's row order) the figure shows: ``n_queries``
    spread evenly from the first, so a store whose videos are ordered by class (a folder scan) shows
    queries of many classes, and one run always draws the same ones."""
    m = min(int(n_queries), int(n_test))
    return (np.arange(m, dtype=np.int64) * n_test) // max(m, 1)


def gallery_rows(report: Any, result: Any, store, n_queries: int, video_root: str | Path | None = None,
                 k: int = NEIGHBOURS) -> list[GalleryRow]:
    """The figure's rows of one retrieval row: ``n_queries`` test videos (:func:`query_positions`)
    and each one's ``k`` first neighbours.

    ``result.neighbours`` ``[n_test, >= k]`` holds store rows of gallery videos, best first, a row
    per test video in the order of ``report.test_indices`` (the test videos' store rows); a negative
    entry (a gallery smaller than k) is left out.
    """
    if n_queries < 1:
        raise VsslError(f"--gallery-queries {n_queries}: give at least 1")
    root = resolve_video_root(store, report.view, video_root)
    test_rows = np.asarray(report.test_indices, dtype=np.int64)
    neighbours = np.asarray(result.neighbours, dtype=np.int64)
    if neighbours.shape[0] != len(test_rows):
        raise VsslError(f"retrieval row {result.name}: {neighbours.shape[0]} neighbour lists for "
                        f"{len(test_rows)} test videos")
    paths, classes = store.paths(), ClassesOf(store)
    rows = []
    for p in query_positions(len(test_rows), n_queries):
        q = int(test_rows[p])
        query = Tile(_file(root, paths[q]), f"query: {classes.name(q)}\n{Path(paths[q]).name}", None)
        tiles = [Tile(_file(root, paths[g]), f"{rank}. {classes.name(g)}\n{Path(paths[g]).name}", classes.same(q, g))
                 for rank, g in enumerate((int(g) for g in neighbours[p, :k] if g >= 0), 1)]
        rows.append(GalleryRow(query, tiles))
    return rows


def _file(root: Path, recorded: str) -> Path:
    """A store path on this machine: relative ones under ``root``, absolute ones as recorded."""
    path = Path(recorded)
    return path if path.is_absolute() else root / path


class ClassesOf:
    """The classes of a store's videos: each video's names and whether two share one."""

    def __init__(self, store) -> None:
        self.names = list(store.classes)
        hot = store.multi_hot()
        self.hot = hot.astype(bool) if hot is not None else None
        self.labels = store.labels()

    def of(self, row: int) -> list[int]:
        """Class indices of store row ``row`` (empty: unlabelled)."""
        if self.hot is not None:
            return np.flatnonzero(self.hot[row]).tolist()
        return [int(self.labels[row])] if self.labels[row] >= 0 else []

    def name(self, row: int) -> str:
        ids = self.of(row)
        if not ids:
            return "unlabelled"
        return ";".join(self.names[i] if i < len(self.names) else str(i) for i in ids)

    def same(self, a: int, b: int) -> bool | None:
        """Whether videos ``a`` and ``b`` share a class (None: one of them has no label)."""
        x, y = set(self.of(a)), set(self.of(b))
        return bool(x & y) if x and y else None


def draw_report_gallery(report: Any, store, path: str | Path, n_queries: int,
                        video_root: str | Path | None = None) -> None:
    """``--gallery``: the figure of the report's first retrieval row (the backbone's features)."""
    results = list(getattr(report, "retrieval", None) or [])
    if not results:
        raise VsslError("--gallery draws the neighbours of a retrieval row; this report has none (add --retrieval)")
    result = results[0]
    rows = gallery_rows(report, result, store, n_queries, video_root)
    title = (f"{result.name} ({result.features}) · {report.view}: '{report.test_split}' queries, "
             f"'{report.train_split}' gallery · top-{NEIGHBOURS}")
    draw_gallery(path, rows, title)
