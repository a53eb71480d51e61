"""The retrieval figure (`vssl probe --gallery`): tiles, borders, placeholders, and where the videos are."""

from __future__ import annotations

import json

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.probe_helpers import probe_warnings, run_cli
from tests.videos import frame_number, write_broken, write_video
from vssl.errors import VsslError
from vssl.features_store import FeatureStore, VideoEntry
from vssl.features_store.synthetic import make_synthetic_store
from vssl.probe import gallery
from vssl.probe.gallery import GalleryRow, Tile, draw_gallery, gallery_rows, query_positions, tile_box

pytestmark = pytest.mark.usefixtures("one_thread")

VIEW = "uniform1x1"
# class -> frame counts of its videos; a video's middle frame shows the number count // 2
FRAMES = {"a": (20, 26, 32), "b": (22, 28, 34)}
GREEN, RED, GREY = (30, 160, 60), (210, 35, 35), (130, 130, 130)


def _write_videos(root: Path) -> Path:
    for cls, counts in FRAMES.items():
        for i, n in enumerate(counts):
            write_video(root / cls / f"{cls}{i}.mp4", n)
    return root


def _extract(videos: Path, out: Path):
    from vssl.extract.pipeline import extract

    return extract(videos, out, backbone="tiny", views="uniform:1x1", frames=4, stride=1, size=32, device="cpu",
                   precision="fp32", progress=False)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> tuple[Path, Path]:
    """Six videos of two classes (a0..a2, b0..b2, store rows 0..5) extracted from ``videos/``."""
    root = tmp_path_factory.mktemp("gallery")
    videos = _write_videos(root / "videos")
    _extract(videos, root / "store")
    return videos, root / "store"


def _fake_report(test_rows, neighbours, name="retrieval"):
    """A report and retrieval result as the probe gives them: the test videos' store rows and each
    one's neighbours (store rows, best first)."""
    report = SimpleNamespace(view=VIEW, test_indices=np.asarray(test_rows), test_split="test", train_split="train")
    result = SimpleNamespace(name=name, features="backbone", neighbours=np.asarray(neighbours, dtype=np.int64))
    report.retrieval = [result]
    return report, result


def _pixel(image: Image.Image, xy) -> tuple[int, int, int]:
    return image.getpixel(xy)[:3]


def _close(a, b, tol=12) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


def _middle_number(image: Image.Image, box) -> int:
    """The frame number shown in the middle of a tile's frame (tests/videos.py's colour code)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    crop = np.asarray(image.convert("RGB"))[cy - 10:cy + 10, cx - 10:cx + 10]
    return frame_number(crop)


def test_extraction_records_the_input_folder_outside_the_recipe(extracted, tmp_path):
    videos, store = extracted
    assert FeatureStore.open(store).view(VIEW).record["input_root"] == str(videos.resolve())
    # the folder is where the files lie, not how features were made: a copy elsewhere resumes the store
    moved = shutil.copytree(videos, tmp_path / "elsewhere")
    shutil.copytree(store, tmp_path / "store")
    summary = _extract(moved, tmp_path / "store")
    assert summary.skipped_done == 6
    assert FeatureStore.open(tmp_path / "store").view(VIEW).record["input_root"] == str(videos.resolve())


def test_figure_shows_middle_frames_with_class_borders(extracted, tmp_path):
    _, store_path = extracted
    store = FeatureStore.open(store_path)
    # queries a0 (row 0) and b2 (row 5); neighbours mix the classes
    report, result = _fake_report([0, 5], [[1, 3, 2, 4, 5, 0], [4, 0, 3, 1, 2, 5]])
    rows = gallery_rows(report, result, store, n_queries=2)
    assert [t.same for t in rows[0].neighbours] == [True, False, True, False, False]
    assert [t.same for t in rows[1].neighbours] == [True, False, True, False, False]
    assert rows[0].query.same is None and rows[0].query.video == extracted[0].resolve() / "a" / "a0.mp4"
    out = tmp_path / "g.png"
    draw_gallery(out, rows, title="retrieval (backbone)")
    image = Image.open(out)
    last = tile_box(1, 5, titled=True)
    assert image.size[0] > last[2] and image.size[1] > last[3]
    assert image.size[0] < last[2] + 40 and image.size[1] < last[3] + 80
    counts = {r: n for r, n in enumerate(FRAMES["a"] + FRAMES["b"])}    # store row -> frame count
    for r, shown in enumerate(([0, 1, 3, 2, 4, 5], [5, 4, 0, 3, 1, 2])):   # the query, then its top-5
        query = shown[0]
        for c, video in enumerate(shown):
            box = tile_box(r, c, titled=True)
            expected = GREY if c == 0 else (GREEN if (video < 3) == (query < 3) else RED)
            assert _pixel(image, (box[0] + 1, box[1] + 1)) == expected, (r, c)
            assert _pixel(image, (box[2] - 2, box[3] - 2)) == expected, (r, c)
            assert _middle_number(image, box) == counts[video] // 2, (r, c)


def test_unreadable_videos_are_placeholders(extracted, tmp_path):
    videos, store_path = extracted
    copy = shutil.copytree(videos, tmp_path / "copy")
    (copy / "a" / "a1.mp4").unlink()                             # gone
    write_broken(copy / "b" / "b0.mp4", "text")                  # not a video any more
    report, result = _fake_report([0], [[1, 3, 2]])
    rows = gallery_rows(report, result, FeatureStore.open(store_path), n_queries=1, video_root=copy)
    out = tmp_path / "g.png"
    with probe_warnings() as records:
        draw_gallery(out, rows)
    image = Image.open(out)
    for c, readable in enumerate((True, False, False, True)):
        x0, y0 = tile_box(0, c)[:2]
        inner = _pixel(image, (x0 + gallery.BORDER + 2, y0 + gallery.BORDER + 2))
        assert (inner == gallery.PLACEHOLDER) != readable, c
    assert len(records) == 1 and "2 video(s) could not be read" in records[0].getMessage()


def test_a_moved_folder_needs_video_root(tmp_path, capsys):
    videos = _write_videos(tmp_path / "videos")
    _extract(videos, tmp_path / "store")
    moved = videos.rename(tmp_path / "moved")
    store = FeatureStore.open(tmp_path / "store")
    report, result = _fake_report([0], [[3]])
    with pytest.raises(VsslError, match="--video-root DIR"):
        gallery_rows(report, result, store, n_queries=1)
    rows = gallery_rows(report, result, store, n_queries=1, video_root=moved)
    assert rows[0].neighbours[0].video == moved / "b" / "b0.mp4"
    out = tmp_path / "g.png"
    draw_gallery(out, rows)
    assert _middle_number(Image.open(out), tile_box(0, 1)) == FRAMES["b"][0] // 2
    # the CLI checks where the videos are before it probes: one line naming the flag, exit 2
    code, _, err = run_cli(capsys, "probe", tmp_path / "store", "--view", VIEW, "--quiet",
                           "--gallery", tmp_path / "g2.png")
    assert code == 2 and "--video-root DIR" in err and str(videos) in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "g2.png").exists()
    code, _, err = run_cli(capsys, "probe", tmp_path / "store", "--view", VIEW, "--quiet",
                           "--gallery", tmp_path / "g2.png", "--video-root", tmp_path / "nowhere")
    assert code == 2 and "--video-root" in err and "not a directory" in err


def test_queries_are_spread_evenly_over_the_test_split():
    assert query_positions(10, 4).tolist() == [0, 2, 5, 7]
    assert query_positions(3, 8).tolist() == [0, 1, 2]
    assert query_positions(8, 8).tolist() == list(range(8))


def test_multi_label_videos_match_on_a_shared_label(tmp_path):
    entries = [VideoEntry("q.mp4", 0, "test", (0, 1)), VideoEntry("x.mp4", 1, "train", (1, 2)),
               VideoEntry("y.mp4", 2, "train", (2,)), VideoEntry("z.mp4", -1, "train", ())]
    store = make_synthetic_store(tmp_path / "s", np.ones((4, 1, 4), np.float32), [0, 1, 2, -1],
                                 ["test", "train", "train", "train"], view=VIEW, classes=["p", "q", "r"],
                                 videos=entries)
    report, result = _fake_report([0], [[1, 2, 3]])
    rows = gallery_rows(report, result, store, n_queries=1, video_root=tmp_path)
    assert [t.same for t in rows[0].neighbours] == [True, False, None]
    assert rows[0].query.label.startswith("query: p;q")


def test_a_neighbour_list_of_another_length_and_bad_counts_are_refused(extracted):
    store = FeatureStore.open(extracted[1])
    report, result = _fake_report([0, 1], [[2, 3]])
    with pytest.raises(VsslError, match="2 test videos"):
        gallery_rows(report, result, store, n_queries=2)
    with pytest.raises(VsslError, match="--gallery-queries 0"):
        gallery_rows(*_fake_report([0], [[2]]), store, n_queries=0)


def test_draw_gallery_without_videos_draws_placeholders(tmp_path):
    rows = [GalleryRow(Tile(None, "query: a\nq.mp4", None), [Tile(tmp_path / "n.mp4", "1. a\nn.mp4", True)])]
    draw_gallery(tmp_path / "g.png", rows)
    x0, y0 = tile_box(0, 1)[:2]
    image = Image.open(tmp_path / "g.png")
    assert _pixel(image, (x0, y0)) == GREEN
    assert _pixel(image, (x0 + gallery.BORDER + 2, y0 + gallery.BORDER + 2)) == gallery.PLACEHOLDER


def _retrieval_registered() -> bool:
    from vssl.probe.registry import options

    return "retrieval" in options()


@pytest.mark.skipif(not _retrieval_registered(), reason="the retrieval rows are not registered")
def test_cli_draws_the_neighbours_numpy_ranks(tmp_path, capsys):
    """`vssl probe --gallery`: each drawn neighbour is the one an independent numpy ranking puts there
    (dino vectors, cosine, stable sort over the training split), its border the class agreement."""
    videos = tmp_path / "videos"
    lines = ["path,label,split"]
    for cls, counts in {"a": (20, 24, 28, 90), "b": (60, 66, 72, 40)}.items():
        for i, n in enumerate(counts):
            write_video(videos / cls / f"{cls}{i}.mp4", n)
            lines.append(f"{cls}/{cls}{i}.mp4,{cls},{'test' if i == 3 else 'train'}")
    (videos / "m.csv").write_text("\n".join(lines) + "\n")
    _extract(videos / "m.csv", tmp_path / "store")
    out = tmp_path / "g.png"
    code, _, err = run_cli(capsys, "probe", tmp_path / "store", "--view", VIEW, "--quiet", "--gallery", out,
                           "--report", tmp_path / "r.json", "--html", tmp_path / "r.html")
    assert code == 0, err
    # the JSON names the figure and the report page shows it, inline
    assert json.loads((tmp_path / "r.json").read_text())["gallery"] == str(out.resolve())
    page = (tmp_path / "r.html").read_text()
    assert 'alt="retrieval gallery" src="data:image/png;base64,' in page
    store = FeatureStore.open(tmp_path / "store")
    clips = store.view(VIEW).read(np.arange(8)).features.astype(np.float64)
    vec = (clips / np.linalg.norm(clips, axis=-1, keepdims=True)).mean(1)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    train, test = store.split_indices("train"), store.split_indices("test")
    image = Image.open(out)
    frames = {r: n for r, n in enumerate((20, 24, 28, 90, 60, 66, 72, 40))}
    for r, q in enumerate(test):
        order = train[np.argsort(-(vec[train] @ vec[q]), kind="stable")][:5]
        assert _middle_number(image, tile_box(r, 0, titled=True)) == frames[q] // 2
        for c, g in enumerate(order, 1):
            box = tile_box(r, c, titled=True)
            assert _middle_number(image, box) == frames[g] // 2, (r, c)
            same = store.labels()[g] == store.labels()[q]
            assert _pixel(image, (box[0] + 1, box[1] + 1)) == (GREEN if same else RED), (r, c)
