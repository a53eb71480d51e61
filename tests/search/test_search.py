"""`vssl search`: a store video's or a new file's nearest videos and moments, against numpy."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_vssl
from tests.probe_helpers import run_cli
from tests.videos import write_class_folder, write_video
from vssl.extract.pipeline import extract
from vssl.features_store import FeatureStore
from vssl.search.query import query_clips

pytestmark = pytest.mark.usefixtures("one_thread")

#: a random, an evaluation and a ragged (dense, one clip a second) view, each with a token view
SETTINGS = dict(backbone="tiny", views="random:2,uniform:2x2,dense:1.0", frames=4, stride=2, size=32,
                batch_size=4, device="cpu", tokens="1x2x2")
FPS = 25
#: the film's scenes, one second each: a still of random pixels per scene
SCENES = 4


def write_frames(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    """An MP4 of the RGB ``frames`` (near-lossless, so a scene decodes the same in every file)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"crf": "0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def scene(j: int) -> list[np.ndarray]:
    """One second of scene ``j``: the same still of random pixels, ``FPS`` frames."""
    still = np.random.default_rng(100 + j).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return [still] * FPS


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two classes of short videos (one a copy of another: tied similarities), a film of distinct
    one-second scenes, and a broken file (not in any gallery)."""
    root = write_class_folder(tmp_path_factory.mktemp("search_videos"),
                              {"a/v0.mp4": 30, "a/v1.mp4": 61, "b/v2.mp4": 17})
    shutil.copy(root / "a" / "v0.mp4", root / "b" / "v0copy.mp4")
    write_frames(root / "film" / "film.mp4", [f for j in range(SCENES) for f in scene(j)])
    return root


@pytest.fixture(scope="module")
def store(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("search_store") / "s"
    summary = extract(folder, out, progress=False, **SETTINGS)
    assert summary.done == 5 and summary.failed == 1
    return out


def search_json(capsys, *args) -> dict:
    """``vssl search ARGS --json`` run in this process (the CLI's own code path, without a start-up)."""
    code, out, err = run_cli(capsys, "search", *args, "--json", "--quiet")
    assert code == 0, err
    return json.loads(out)


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_ranking(store: FeatureStore, view: str, query_row: int, set_tokens: np.ndarray | None = None):
    """The gallery written out in numpy: each usable video's mean of l2-normalised clips (with a run: of
    [C_i ⊕ SET]), l2-normalised; cosine similarity to the query's; a stable sort (ties: lower row first);
    the query itself left out. Returns (paths, similarities) best first."""
    rows = np.flatnonzero(store.usable(view))
    vectors = {}
    for r in rows:
        got = store.view(view).read(np.array([r]))
        clips = got.features[0, :int(got.counts[0])].astype(np.float64)
        if set_tokens is not None:
            clips = np.concatenate([clips, np.repeat(set_tokens[r][None].astype(np.float64), len(clips), 0)], 1)
        vectors[r] = l2(l2(clips).mean(axis=0))
    gallery = [r for r in rows if r != query_row]
    sims = np.array([vectors[r] @ vectors[query_row] for r in gallery])
    order = np.argsort(-sims, kind="stable")
    return [store.paths()[gallery[i]] for i in order], sims[order]


@pytest.mark.parametrize("view", ["uniform2x2", "dense1"])
def test_a_store_video_finds_its_neighbours_as_numpy_ranks_them(store, folder, view, capsys):
    s = FeatureStore.open(store)
    row = s.paths().tolist().index("a/v0.mp4")
    want_paths, want_sims = numpy_ranking(s, view, row)
    got = search_json(capsys, store, "a/v0.mp4", "--view", view, "-k", "10")
    assert got["query_row"] == row and got["view"] == view and got["features"] == "backbone"
    assert [h["path"] for h in got["hits"]] == want_paths  # itself left out, ties by gallery order
    np.testing.assert_allclose([h["similarity"] for h in got["hits"]], want_sims, atol=1e-5)
    assert [h["rank"] for h in got["hits"]] == list(range(1, len(want_paths) + 1))
    assert got["hits"][0]["path"] == "b/v0copy.mp4" and got["hits"][0]["label"] == "b"  # its copy: similarity 1
    assert got["hits"][0]["similarity"] == pytest.approx(1.0, abs=1e-6)
    # the file itself, by its full path, is the store video (its path ends with the recorded one)
    by_file = search_json(capsys, store, folder / "a" / "v0.mp4", "--view", view, "-k", "2")
    assert by_file["query_row"] == row and by_file["hits"] == got["hits"][:2]


def test_the_table_and_the_one_line_refusals(store, capsys):
    code, out, err = run_cli(capsys, "search", store, "a/v1.mp4", "--view", "uniform2x2", "-k", "2", "--quiet")
    assert code == 0, err
    assert "rank" in out and "similarity" in out and "a/v0.mp4" in out
    several = run_vssl("search", store, "a/v1.mp4")  # the real command: three pooled views, name one
    assert several.returncode == 2 and len(several.stderr.strip().splitlines()) == 1
    assert "dense1, random2, uniform2x2" in several.stderr and "--view" in several.stderr
    code, _, err = run_cli(capsys, "search", store, "nowhere/x.mp4", "--view", "uniform2x2")
    assert code == 2 and "nowhere/x.mp4" in err and len(err.strip().splitlines()) == 1


def test_a_new_file_is_embedded_as_extract_would_store_it(store, tmp_path):
    """Bit for bit in every view, the random and token ones included: a new file is keyed by its name, as
    ``extract`` keys a file at the top of the folder (or manifest) it reads."""
    new = write_video(tmp_path / "new" / "q.mp4", 45)
    (tmp_path / "new" / "list.csv").write_text("q.mp4,x\n")
    extract(tmp_path / "new" / "list.csv", tmp_path / "s2", progress=False, **SETTINGS)
    s, s2 = FeatureStore.open(store), FeatureStore.open(tmp_path / "s2")
    assert len(s.view_names()) == 6
    for view in s.view_names():
        q = query_clips(s, view, new)
        want = s2.view(view).read(np.array([0]))
        count = int(want.counts[0])
        assert q.row is None and q.features.dtype == want.features.dtype
        np.testing.assert_array_equal(q.features, want.features[0, :count], err_msg=view)
        np.testing.assert_array_equal(q.boxes, want.boxes[0, :count], err_msg=view)
        assert q.duration == pytest.approx(45 / 25)


def test_moments_find_the_film_and_the_second(store, tmp_path, capsys):
    """A scene cut out of the film finds the film's clip that starts at that scene's second."""
    for j in (1, 2):
        clip = write_frames(tmp_path / f"scene{j}.mp4", scene(j))
        got = search_json(capsys, store, clip, "--view", "dense1", "--moments", "-k", "3")
        assert got["moments"] and got["query_row"] is None
        best = got["hits"][0]
        assert best["path"] == "film/film.mp4" and best["clip"] == j
        assert best["start"] == pytest.approx(float(j), abs=1e-3)
    own = search_json(capsys, store, "film/film.mp4", "--view", "dense1", "--moments", "-k", "50")
    assert own["hits"] and all(h["path"] != "film/film.mp4" for h in own["hits"])  # its own clips left out


def test_a_moved_checkpoint_is_named_and_found_with_the_flag(folder, tmp_path, capsys):
    from vssl.extract.backbones import create_backbone

    model = create_backbone("tiny", None, None, frames=4, stride=2, size=32)
    ckpt = tmp_path / "ckpt" / "tiny.pt"
    ckpt.parent.mkdir()
    torch.save(model.state_dict(), ckpt)
    settings = {**SETTINGS, "views": "uniform:2x2"}
    extract(folder, tmp_path / "s", checkpoint=str(ckpt), progress=False, **settings)
    query = write_video(tmp_path / "q.mp4", 40)
    before = search_json(capsys, tmp_path / "s", query)
    moved = tmp_path / "elsewhere" / "tiny.pt"
    moved.parent.mkdir()
    ckpt.rename(moved)
    code, _, err = run_cli(capsys, "search", tmp_path / "s", query)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--checkpoint" in err and str(ckpt) in err
    assert search_json(capsys, tmp_path / "s", "a/v1.mp4")["hits"]  # a store video needs no backbone
    assert search_json(capsys, tmp_path / "s", query, "--checkpoint", moved)["hits"] == before["hits"]
    other = tmp_path / "other.pt"
    torch.save({k: v + 1 for k, v in model.state_dict().items()}, other)
    code, _, err = run_cli(capsys, "search", tmp_path / "s", query, "--checkpoint", other)
    assert code == 2 and "not the checkpoint" in err and len(err.strip().splitlines()) == 1
    shutil.copy(other, ckpt)            # the recorded path holds other weights now (retrained in place)
    code, _, err = run_cli(capsys, "search", tmp_path / "s", query)
    assert code == 2 and "changed since" in err and "--checkpoint" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def run(store, tmp_path_factory) -> Path:
    from vssl.aggregate import ScaleConfig, train

    out = tmp_path_factory.mktemp("search_run") / "run"
    cfg = ScaleConfig(width=16, layers=1, heads=2, pred_hidden=32, target_hidden=32, proj_dim=8, epochs=1,
                      batch_size=16, device="cpu", precision="fp32", seed=0)
    train(store, "uniform2x2", out, cfg, quiet=True)
    return out


def test_scale_features_of_a_store_video_and_of_a_new_file(store, folder, run, tmp_path, capsys):
    got = search_json(capsys, store, "a/v1.mp4", "--view", "uniform2x2", "--scale", run, "-k", "10")
    assert got["features"] == "scale" and got["run"] == str(run)
    s = FeatureStore.open(store)  # the export the search made
    tokens = s.row_group(f"aggregates/{run.name}/uniform2x2").read("set_token", np.arange(s.num_videos))
    want_paths, want_sims = numpy_ranking(s, "uniform2x2", s.paths().tolist().index("a/v1.mp4"), tokens)
    assert [h["path"] for h in got["hits"]] == want_paths
    np.testing.assert_allclose([h["similarity"] for h in got["hits"]], want_sims, atol=1e-5)
    # the same video as a file of no store: its clips embedded, its SET token encoded by the run
    copy = tmp_path / "elsewhere" / "same.mp4"
    copy.parent.mkdir()
    shutil.copy(folder / "a" / "v1.mp4", copy)
    new = search_json(capsys, store, copy, "--view", "uniform2x2", "--scale", run, "-k", "1")
    assert new["query_row"] is None and new["hits"][0]["path"] == "a/v1.mp4"
    assert new["hits"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_a_matching_index_answers_and_a_stale_one_is_refused(store, tmp_path, capsys):
    from vssl.search.index import GallerySpec, write_store_index

    copy = tmp_path / "s"
    shutil.copytree(store, copy)
    exact = search_json(capsys, copy, "a/v1.mp4", "--view", "uniform2x2")
    assert exact["searched"] == "exact search"
    write_store_index(FeatureStore.open(copy), GallerySpec("uniform2x2"), "hnsw", quiet=True)
    indexed = search_json(capsys, copy, "a/v1.mp4", "--view", "uniform2x2")
    assert "hnsw index" in indexed["searched"]
    assert [h["path"] for h in indexed["hits"]] == [h["path"] for h in exact["hits"]]  # all of a tiny gallery
    np.testing.assert_allclose([h["similarity"] for h in indexed["hits"]], [h["similarity"] for h in exact["hits"]],
                               atol=1e-6)
    chunk = next(p for p in sorted((copy / "views" / "uniform2x2").rglob("*")) if p.is_file())
    data = chunk.read_bytes()
    chunk.unlink()
    chunk.write_bytes(data)  # the same rows rewritten: the index can no longer vouch for them
    code, _, err = run_cli(capsys, "search", copy, "a/v1.mp4", "--view", "uniform2x2")
    assert code == 2 and "stale" in err and "vssl index" in err and len(err.strip().splitlines()) == 1
    assert "--kind hnsw" in err                          # rebuilt as the kind it was, not as the default


def test_a_view_extracted_in_fp16_embeds_a_new_file_on_a_gpu_only(store, tmp_path):
    from vssl.errors import VsslError

    copy = tmp_path / "s"
    shutil.copytree(store, copy)
    FeatureStore.open(copy, "r+").view("uniform2x2").update_record(precision="fp16")
    query = write_video(tmp_path / "q.mp4", 20)
    with pytest.raises(VsslError, match="fp16 on a GPU.*--device cuda"):
        query_clips(FeatureStore.open(copy), "uniform2x2", query, device="cpu")
    assert query_clips(FeatureStore.open(copy), "uniform2x2", "a/v1.mp4", device="cpu").row is not None
