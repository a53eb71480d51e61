"""`vssl extract --tokens / --layers`: token and layer views cut from the same clips in the same pass, with
every guarantee of a view (resume, shards, verify, info, HDF5, npy), against numpy references."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import vssl
from tests.conftest import run_vssl
from tests.probe_helpers import run_cli
from tests.token_helpers import Blocks, blocks_reference, numpy_pool
from tests.videos import write_class_folder, write_video
from vssl.errors import StoreError
from vssl.extract import pipeline
from vssl.extract.pipeline import extract
from vssl.features_store import FeatureStore

pytestmark = pytest.mark.usefixtures("one_thread")

#: tiny at 4 frames, 32 px: its last map is 1 x 4 x 4 (strides 4 in time, 8 in space), width 128
TINY = ["--backbone", "tiny", "--frames", "4", "--stride", "2", "--size", "32", "--batch-size", "3",
        "--device", "cpu", "--quiet"]
VIEWS = "uniform:2x1,dense:1.0"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three readable videos of different lengths (a dense view gives them 2-3 clips) and one broken file."""
    return write_class_folder(tmp_path_factory.mktemp("token_videos"), {"a/v0.mp4": 30, "a/v1.mp4": 61, "b/v2.mp4": 45})


@pytest.fixture(scope="module")
def full_store(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("token_full") / "s"
    r = run_vssl("extract", folder, "--out", out, "--views", VIEWS, "--tokens", "full", *TINY)
    assert r.returncode == 0, r.stderr
    return out


def rows(store: FeatureStore, view: str):
    return store.view(view).read(np.arange(store.num_videos))


# ---------------------------------------------------------------- values


def matched(reference_pooled: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Index of the recorded clip each stored clip is (its pooled embedding is nearest)."""
    return np.abs(stored[:, None, :] - reference_pooled[None, :, :]).sum(-1).argmin(1)


def test_token_and_layer_views_equal_numpy_on_the_same_clips(folder, tmp_path):
    model = Blocks()
    views = "uniform:2x1,random:2,dense:1.0"
    s = extract(folder, tmp_path / "s", model=model, views=views, tokens="1x2x2", layers=3, batch_size=3,
                device="cpu", precision="fp32", dtype="float32", progress=False)
    assert s.done == 3 and s.failed == 1
    store = FeatureStore.open(tmp_path / "s")
    bases = ["uniform2x1", "random2", "dense1"]
    names = {f"{b}{layer}{tok}" for b in bases for layer in ("", ".layer-2", ".layer-3") for tok in ("", ".tokens1x2x2")}
    assert set(store.view_names()) == names
    assert model.calls["forward"] == 0  # one forward_tokens pass gives every view
    clips = np.concatenate([x.numpy() for x in model.seen])
    grids = blocks_reference(model, clips)  # blocks 1, 2, 3 (depth 3, 2, 1)
    for base in bases:
        plain = rows(store, base)
        real = plain.mask
        which = matched(grids[-1].mean(axis=(1, 2, 3)), plain.features[real])
        for depth in (1, 2, 3):
            grid = grids[-depth][which]
            layer = base if depth == 1 else f"{base}.layer-{depth}"
            pooled, tokens = rows(store, layer), rows(store, f"{layer}.tokens1x2x2")
            np.testing.assert_allclose(pooled.features[real], grid.mean(axis=(1, 2, 3)), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(tokens.features[real], numpy_pool(grid, (1, 2, 2)), rtol=1e-5, atol=1e-6)
            for r in (pooled, tokens):  # the same clips: same counts and boxes as the plain view
                np.testing.assert_array_equal(r.counts, plain.counts)
                np.testing.assert_array_equal(r.boxes, plain.boxes)
            record = store.view(f"{layer}.tokens1x2x2").record
            assert (record["tokens"], record["token_grid"], record["encoder_grid"]) == ("1x2x2", [1, 2, 2], [4, 4, 4])
            assert record.get("layer", -1) == -depth and store.view(layer).record.get("layer", -1) == -depth
        assert "tokens" not in store.view(base).record  # the plain view is recorded as before


def test_pooled_only_runs_call_the_model_as_before(folder, tmp_path):
    model = Blocks()
    extract(folder, tmp_path / "s", model=model, views="uniform:2x1", batch_size=3, device="cpu", progress=False)
    assert model.calls["forward_tokens"] == 0 and model.calls["forward"] > 0
    assert FeatureStore.open(tmp_path / "s").view_names() == ["uniform2x1"]


def test_full_tokens_average_to_the_pooled_view(full_store):
    """tiny pools by averaging its last map: the mean of its stored full grid is its stored embedding."""
    store = FeatureStore.open(full_store)
    for base in ("uniform2x1", "dense1"):
        plain, tokens = rows(store, base), rows(store, f"{base}.tokens1x4x4")
        assert tokens.features.shape[2:] == (16, 128) and tokens.features.dtype == np.float16
        np.testing.assert_array_equal(tokens.counts, plain.counts)
        real = plain.mask
        np.testing.assert_allclose(tokens.features[real].astype(np.float64).mean(axis=1),
                                   plain.features[real].astype(np.float64), rtol=2e-3, atol=2e-3)
        assert store.view(f"{base}.tokens1x4x4").record["encoder_grid"] == [1, 4, 4]
        assert store.view(f"{base}.tokens1x4x4").record["tokens"] == "full"
    assert not store.usable("uniform2x1.tokens1x4x4")[store.video_status() == 2].any()  # failed in every view


# ---------------------------------------------------------------- store guarantees


def test_resume_and_adding_a_grid_to_an_existing_store(folder, full_store, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(full_store, out)  # the store of a finished run
    before = {v: rows(FeatureStore.open(out), v).features.copy() for v in FeatureStore.open(out).view_names()}
    again = run_vssl("extract", folder, "--out", out, "--views", VIEWS, "--tokens", "full", *TINY, "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["processed"], summary["skipped_done"]) == (0, 3)
    added = run_vssl("extract", folder, "--out", out, "--views", VIEWS, "--tokens", "1x2x2", *TINY, "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["done"] == 3
    store = FeatureStore.open(out)
    for view, features in before.items():  # nothing done before is rewritten
        np.testing.assert_array_equal(rows(store, view).features, features)
    for base in ("uniform2x1", "dense1"):
        full, coarse = rows(store, f"{base}.tokens1x4x4"), rows(store, f"{base}.tokens1x2x2")
        real = full.mask
        grid = full.features[real].astype(np.float64).reshape(-1, 1, 4, 4, 128)
        np.testing.assert_allclose(coarse.features[real], numpy_pool(grid, (1, 2, 2)), rtol=2e-3, atol=2e-3)
    verify = run_vssl("store", "verify", out)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_shards_claim_chunks_of_token_views(folder, full_store, tmp_path):
    out = tmp_path / "s"
    for shard in ("0/2", "1/2"):
        r = run_vssl("extract", folder, "--out", out, "--views", VIEWS, "--tokens", "full", *TINY,
                     "--chunk-videos", "1", "--shard", shard)
        assert r.returncode == 0, r.stderr
    whole, sharded = FeatureStore.open(full_store), FeatureStore.open(out)
    assert sharded.view_names() == whole.view_names()
    for view in whole.view_names():
        a, b = rows(whole, view), rows(sharded, view)
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_allclose(a.features.astype(np.float32), b.features.astype(np.float32), rtol=1e-3, atol=1e-3)


def test_verify_and_info_show_token_views(full_store):
    r = run_vssl("store", "verify", full_store)
    assert r.returncode == 0, r.stdout + r.stderr
    info = run_vssl("store", "info", full_store, "--json")
    assert info.returncode == 0, info.stderr
    groups = json.loads(info.stdout)["groups"]
    entry = groups["views/uniform2x1.tokens1x4x4"]
    assert entry["clip_shape"] == [16, 128] and entry["num_clips"] == 2 and entry["done"] == 3
    assert entry["token_grid"] == [1, 4, 4] and entry["encoder_grid"] == [1, 4, 4]
    assert groups["views/dense1.tokens1x4x4"]["layout"] == "ragged"
    assert "token_grid" not in groups["views/uniform2x1"]


def test_hdf5_round_trip_and_npy_export_of_token_views(full_store, tmp_path):
    h5 = tmp_path / "s.h5"
    assert run_vssl("store", "export", full_store, h5).returncode == 0
    r = run_vssl("store", "import", h5, tmp_path / "back")
    assert r.returncode == 0, r.stderr
    store, back = FeatureStore.open(full_store), FeatureStore.open(tmp_path / "back")
    for view in ("uniform2x1.tokens1x4x4", "dense1.tokens1x4x4"):
        a, b = rows(store, view), rows(back, view)
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.counts, b.counts)
        assert back.view(view).record["token_grid"] == [1, 4, 4]
    npy = run_vssl("store", "export", full_store, tmp_path / "npy", "--format", "npy", "--view",
                   "dense1.tokens1x4x4")
    assert npy.returncode == 0, npy.stderr
    stored = rows(store, "dense1.tokens1x4x4")
    for i, path in enumerate(store.paths()):
        if store.video_status()[i] != 1:
            continue
        got = np.load(tmp_path / "npy" / Path(path).with_suffix(".npy"))
        assert got.shape == (stored.counts[i], 16, 128) and got.dtype == np.float32
        np.testing.assert_array_equal(got, stored.features[i, :stored.counts[i]].astype(np.float32))


def test_embed_returns_token_views_as_extract_stores_them(folder, full_store):
    files = [folder / "a" / "v0.mp4", folder / "a" / "v1.mp4"]
    got = vssl.embed([str(p.relative_to(folder)) for p in files], root=folder, backbone="tiny", views=VIEWS,
                     tokens="full", frames=4, stride=2, size=32, batch_size=3, device="cpu")
    store = FeatureStore.open(full_store)
    paths = store.paths().tolist()
    assert len(got) == 2
    for video in got:
        i = paths.index(str(Path(video.path).relative_to(folder)))
        for view in ("uniform2x1.tokens1x4x4", "dense1.tokens1x4x4"):
            stored = rows(store, view)
            assert video.features[view].shape == (stored.counts[i], 16, 128)
            np.testing.assert_array_equal(video.features[view], stored.features[i, :stored.counts[i]])
            np.testing.assert_array_equal(video.boxes[view], video.boxes[view.split(".tokens")[0]])


def test_toml_config_asks_for_tokens(folder, tmp_path):
    config = tmp_path / "x.toml"
    config.write_text('[extract]\ntokens = "1x1x1"\nviews = "uniform:2x1"\n')
    r = run_vssl("extract", folder, "--out", tmp_path / "s", "--config", config, *TINY)
    assert r.returncode == 0, r.stderr
    store = FeatureStore.open(tmp_path / "s")
    assert store.view_names() == ["uniform2x1", "uniform2x1.tokens1x1x1"]
    assert store.view("uniform2x1.tokens1x1x1").clip_shape == (1, 128)


# ---------------------------------------------------------------- chunking and refusals


def test_a_new_store_is_chunked_by_its_largest_view_tokens_included(folder, full_store, tmp_path):
    """tiny, full grid 1x4x4 x 128 float16 = 4 KiB per clip; the dense view is sized at 16 clips: 64 KiB a
    video, so 64 videos fill a 4 MiB chunk (pooled views alone: 256, the most)."""
    assert FeatureStore.open(full_store).chunk_videos == 64
    r = run_vssl("extract", folder, "--out", tmp_path / "pooled", "--views", VIEWS, *TINY)
    assert r.returncode == 0, r.stderr
    assert FeatureStore.open(tmp_path / "pooled").chunk_videos == 256


def test_a_token_view_too_large_for_the_chunks_is_refused_in_one_line(folder, tmp_path, monkeypatch):
    out = tmp_path / "s"
    settings = dict(backbone="tiny", frames=4, stride=2, size=32, views="uniform:2x1", device="cpu", progress=False)
    extract(folder, out, **settings)
    monkeypatch.setattr(pipeline, "MAX_CHUNK_VIEW_BYTES", 16 << 10)  # 16 KiB; 4 videos x 2 clips x 4 KiB
    with pytest.raises(StoreError) as err:
        extract(folder, out, tokens="full", **settings)
    message = str(err.value)
    assert "\n" not in message and "uniform2x1.tokens1x4x4" in message and "32.0 KiB per chunk" in message
    assert "new --out store" in message and "--tokens" in message
    assert FeatureStore.open(out).view_names() == ["uniform2x1"]  # nothing was added


@pytest.mark.parametrize("flags, words", [
    (["--tokens", "2x2"], "expected T'xH'xW'"),
    (["--tokens", "2x4x4"], "finer than the encoder's token grid 1x4x4"),
    (["--layers", "2"], "drop --layers"),
    (["--layers", "0"], "layers=0"),
])
def test_bad_token_settings_exit_2_before_a_store_exists(folder, tmp_path, capsys, flags, words):
    code, out, err = run_cli(capsys, "extract", folder, "--out", tmp_path / "s", "--views", "uniform:2x1",
                             *TINY, *flags)
    assert code == 2, out + err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_a_vit_gives_normed_tokens_that_average_to_its_embedding_at_every_layer(folder, tmp_path):
    """VideoMAE's mean pooling averages the final-normed patch tokens: a stored full grid averages to the
    stored embedding, for the last block and the one before (the same finish, docs/ARCHITECTURE.md)."""
    from vssl.extract.backbones.video_vit import VIDEOMAE_SPEC, VideoViT
    from vssl.extract.backbones.vit_layers import ViTShape

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = VideoViT(ViTShape(embed_dim=32, depth=3, num_heads=2, mlp_hidden=64, qkv_bias="qv"),
                     VIDEOMAE_SPEC.with_overrides(frames=4, size=32))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    extract(folder, tmp_path / "s", model=model, views="uniform:2x1,dense:1.0", tokens="full", layers=2,
            batch_size=3, device="cpu", precision="fp32", dtype="float32", progress=False)
    store = FeatureStore.open(tmp_path / "s")
    for name in ("uniform2x1", "uniform2x1.layer-2", "dense1", "dense1.layer-2"):
        plain, tokens = rows(store, name), rows(store, f"{name}.tokens2x2x2")
        real = plain.mask
        assert store.view(f"{name}.tokens2x2x2").record["encoder_grid"] == [2, 2, 2]
        np.testing.assert_allclose(tokens.features[real].mean(axis=1), plain.features[real], rtol=1e-4, atol=1e-5)
    layer2, last = rows(store, "uniform2x1.layer-2"), rows(store, "uniform2x1")
    assert not np.allclose(layer2.features, last.features)  # another block's output, not a copy


def test_resume_after_sigkill_fills_the_token_views_as_an_uninterrupted_run(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    videos = tmp_path / "videos"
    for i in range(5):
        write_video(videos / "a" / f"v{i}.mp4", 20 + 7 * i)
    proc = subprocess.run([sys.executable, str(repo / "tests" / "extract_killer.py"), str(videos), str(tmp_path / "killed"),
                           "uniform:2x1", "1x2x2"], env=dict(os.environ, PYTHONPATH=str(repo)), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    partial = FeatureStore.open(tmp_path / "killed")
    assert partial.view("uniform2x1.tokens1x2x2").done().sum() == 4  # two chunks of two written
    kw = dict(views="uniform:2x1", tokens="1x2x2", chunk_videos=2, batch_size=5, frames=4, size=32, progress=False)
    resumed = extract(videos, tmp_path / "killed", **kw)
    assert resumed.processed == 1 and resumed.skipped_done == 4
    extract(videos, tmp_path / "whole", **kw)
    killed, whole = FeatureStore.open(tmp_path / "killed"), FeatureStore.open(tmp_path / "whole")
    for view in ("uniform2x1", "uniform2x1.tokens1x2x2"):
        a, b = rows(killed, view), rows(whole, view)
        assert killed.view(view).done().all()
        np.testing.assert_allclose(a.features.astype(np.float32), b.features.astype(np.float32), rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(a.boxes, b.boxes)
