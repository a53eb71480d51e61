"""The extraction pipeline end to end with the `tiny` backbone and videos written by the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.videos import frame_number, write_broken, write_video
from vssl.cli import main as cli_main
from vssl.errors import StoreError, VsslError
from vssl.extract.backbones import Backbone, InputSpec
from vssl.extract.inputs import collect_inputs
from vssl.extract.pipeline import checkpoint_sha256, extract
from vssl.extract.samplers import parse_views, sample_clips
from vssl.extract.transforms import crop_resize, normalize
from vssl.features_store import STATUS_DONE, STATUS_FAILED, FeatureStore, verify_store

REPO = Path(__file__).resolve().parents[2]
SPEC = InputSpec(frames=4, stride=3, size=16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


class Recorder(Backbone):
    """Records every batch it receives; features = per-channel means of first and last frame."""

    def __init__(self, spec: InputSpec = SPEC) -> None:
        super().__init__(embed_dim=6, spec=spec, family="test")
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return torch.cat([x[:, :, 0].mean((2, 3)), x[:, :, -1].mean((2, 3))], 1)

    def clips(self) -> torch.Tensor:
        return torch.cat(self.seen)

    def pixels(self) -> np.ndarray:
        """What the backbone saw, back in [0, 255]: (N, 3, T, H, W)."""
        m = torch.tensor(self.spec.mean).view(3, 1, 1, 1)
        s = torch.tensor(self.spec.std).view(3, 1, 1, 1)
        return ((self.clips() * s + m) * 255).numpy()


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    st = FeatureStore.open(path)
    out = {"status": st.video_status(), "num_frames": st.num_frames(), "errors": st.errors(), "paths": st.paths()}
    for v in st.view_names():
        f, b = st.view(v).read(np.arange(st.num_videos))
        out[f"{v}/features"], out[f"{v}/boxes"], out[f"{v}/done"] = f, b, st.view(v).done()
    return out


def assert_same_store(a: Path, b: Path) -> None:
    x, y = store_arrays(a), store_arrays(b)
    assert x.keys() == y.keys()
    for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two classes of small videos (lengths 9..40), one AVI with B-frames."""
    root = tmp_path_factory.mktemp("videos")
    for c, cls in enumerate(["jump", "run"]):
        for i in range(3):
            write_video(root / cls / f"v{i}.mp4", 9 + 8 * i + c * 7)
    write_video(root / "run" / "w.avi", 33, codec="mpeg4", b_frames=2)
    return root


def test_backbone_receives_the_right_frames_and_crops(tmp_path):
    root = tmp_path / "v"
    paths = [write_video(root / "a" / f"{n:02d}.mp4", n) for n in (5, 30, 47)]
    model = Recorder()
    s = extract(root, tmp_path / "s", model=model, backbone="recorder", views="uniform:3x2", batch_size=4,
                progress=False)
    assert (s.done, s.failed, s.clips) == (3, 0, 18)
    pix = model.pixels()
    assert pix.shape == (18, 3, 4, 16, 16)
    st = FeatureStore.open(tmp_path / "s")
    _, boxes = st.view("uniform3x2").read(np.arange(3))
    spec = parse_views("uniform:3x2", frames=4, stride=3, size=16)["uniform3x2"]
    k = 0
    for v, path in enumerate(paths):
        n = int(path.stem)
        assert st.num_frames()[v] == n
        for clip, box in zip(sample_clips(spec, n, 48, 64, f"a/{path.name}"), boxes[v]):
            seen = [frame_number(pix[k][:, t]) for t in range(4)]
            first = round(box[0] * n)
            expected = [min(first + 3 * j, n - 1) for j in range(4)]  # stride 3, last frame repeated
            assert seen == expected == list(clip.frames)
            assert box[3] == pytest.approx((expected[-1] + 1) / n)
            k += 1
    # uniform:3x2 on 64x48: squares of side 48 at x = 0 and 16
    np.testing.assert_allclose(boxes[1, :2, [1, 2, 4, 5]].T, [[0, 0, 1, 0.75], [0, 0.25, 1, 1]])


def test_random_crops_and_flips_land_where_the_boxes_say(tmp_path):
    path = write_video(tmp_path / "v" / "ramp.mp4", 40, width=96, height=64, pattern="ramp", pix_fmt="yuv444p")
    model = Recorder()
    extract(tmp_path / "v", tmp_path / "s", model=model, backbone="recorder", views="random:12", progress=False)
    pix = model.pixels()
    _, boxes = FeatureStore.open(tmp_path / "s").view("random12").read([0])
    assert 0 < boxes[0, :, 6].sum() < 12
    for clip, (t0, y0, x0, t1, y1, x1, flip) in zip(pix, boxes[0]):
        red = clip[0].mean(axis=(0, 1))  # R rises with x in the source: mean over t and y, per column
        left, right = 255 * x0 * 96 / 95, 255 * (x1 * 96 - 1) / 95
        if flip:
            left, right = right, left
        assert red[0] == pytest.approx(left, abs=12) and red[-1] == pytest.approx(right, abs=12)
        green = clip[1].mean(axis=(0, 2))  # G rises with y
        assert green[0] == pytest.approx(255 * y0 * 64 / 63, abs=12)
        assert green[-1] == pytest.approx(255 * (y1 * 64 - 1) / 63, abs=12)
        assert frame_number(np.full((1, 1, 3), [16, 16, clip[2, 0].mean()])) % 8 == round(t0 * 40) % 8
    assert path.exists()


@pytest.mark.slow
def test_bad_videos_are_marked_failed_and_the_run_goes_on(tmp_path):
    root = tmp_path / "v"
    write_video(root / "ok.mp4", 30)
    write_video(root / "five.mp4", 5)
    write_broken(root / "corrupt.mp4", "truncated")
    write_broken(root / "zero.avi", "zero_frames")
    write_broken(root / "text.mp4", "text")
    (root / "corrupt.full.mp4").unlink()
    model = Recorder()
    s = extract(root, tmp_path / "s", model=model, backbone="recorder", views="uniform:2x1", progress=False)
    assert (s.processed, s.done, s.failed) == (5, 2, 3)
    st = FeatureStore.open(tmp_path / "s")
    by_name = dict(zip(st.paths().tolist(), range(5)))
    status, errors = st.video_status(), st.errors()
    for bad in ("corrupt.mp4", "zero.avi", "text.mp4"):
        assert status[by_name[bad]] == STATUS_FAILED and bad in errors[by_name[bad]]
    assert status[by_name["five.mp4"]] == STATUS_DONE and st.num_frames()[by_name["five.mp4"]] == 5
    assert not st.view("uniform2x1").done()[by_name["text.mp4"]]
    assert verify_store(st) == []
    again = extract(root, tmp_path / "s", model=Recorder(), backbone="recorder", views="uniform:2x1", progress=False)
    assert (again.processed, again.skipped_done, again.skipped_failed) == (0, 2, 3)
    write_video(root / "text.mp4", 12)  # the user fixes one file
    fixed = extract(root, tmp_path / "s", model=Recorder(), backbone="recorder", views="uniform:2x1",
                    retry_failed=True, progress=False)
    assert (fixed.done, fixed.failed, fixed.skipped_done) == (1, 2, 2)
    st = FeatureStore.open(tmp_path / "s")
    assert st.video_status()[by_name["text.mp4"]] == STATUS_DONE and st.errors()[by_name["text.mp4"]] == ""


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path, dataset):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "extract_killer.py"), str(dataset),
                           str(tmp_path / "killed")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    partial = FeatureStore.open(tmp_path / "killed").video_status()
    assert (partial == STATUS_DONE).sum() == 4 and (partial == 0).sum() == 3  # two chunks of two written
    kw = dict(views="random:3,uniform:2x2", chunk_videos=2, batch_size=5, frames=4, size=32, progress=False)
    resumed = extract(dataset, tmp_path / "killed", **kw)
    assert resumed.processed == 3 and resumed.skipped_done == 4
    extract(dataset, tmp_path / "full", **kw)
    assert_same_store(tmp_path / "killed", tmp_path / "full")


@pytest.mark.slow
def test_seed_views_and_shards(tmp_path, dataset):
    kw = dict(chunk_videos=2, batch_size=7, progress=False, frames=4, size=32)  # small: fast on CPU
    extract(dataset, tmp_path / "both", views="random:3,uniform:2x2", seed=5, **kw)
    extract(dataset, tmp_path / "again", views="random:3,uniform:2x2", seed=5,
            **{**kw, "batch_size": 3, "workers": 2})
    assert_same_store(tmp_path / "both", tmp_path / "again")  # same seed, other batching and workers
    # --views a,b equals two separate runs into one store
    extract(dataset, tmp_path / "sep", views="uniform:2x2", **kw)
    extract(dataset, tmp_path / "sep", views="random:3", seed=5, **kw)
    assert_same_store(tmp_path / "both", tmp_path / "sep")
    # shards: every video processed exactly once, same store as one run
    counts = [extract(dataset, tmp_path / "sharded", views="random:3,uniform:2x2", seed=5, shard=f"{i}/3", **kw)
              .processed for i in range(3)]
    assert sum(counts) == 7 and all(counts)
    with pytest.raises(VsslError, match="chunk-aligned"):
        extract(dataset, tmp_path / "sharded", views="uniform:2x2", ranges=[(1, 3)], **kw)
    assert_same_store(tmp_path / "both", tmp_path / "sharded")
    # another seed gives other random clips, the same uniform ones
    extract(dataset, tmp_path / "seed6", views="random:3,uniform:2x2", seed=6, **kw)
    a, b = store_arrays(tmp_path / "both"), store_arrays(tmp_path / "seed6")
    assert not np.array_equal(a["random3/boxes"], b["random3/boxes"])
    np.testing.assert_array_equal(a["uniform2x2/boxes"], b["uniform2x2/boxes"])


@pytest.mark.slow
def test_store_records_backbone_and_refuses_other_setups(tmp_path, dataset):
    ckpt = tmp_path / "ckpt.pt"
    from vssl.extract.backbones import create_backbone

    torch.save(create_backbone("tiny").state_dict(), ckpt)
    extract(dataset, tmp_path / "s", checkpoint=ckpt, views="a=random:2", chunk_videos=4, progress=False)
    st = FeatureStore.open(tmp_path / "s")
    import hashlib

    assert st.backbone.checkpoint_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert (st.backbone.name, st.backbone.family, st.backbone.frames, st.backbone.size) == ("tiny", "tiny", 8, 64)
    assert st.view("a").spec["sampler"] == "random" and st.view("a").spec["seed"] == 0
    with pytest.raises(StoreError, match="another backbone"):
        extract(dataset, tmp_path / "s", checkpoint=ckpt, views="a=random:2", frames=4, progress=False)
    with pytest.raises(StoreError, match="view 'a' exists"):
        extract(dataset, tmp_path / "s", checkpoint=ckpt, views="a=random:2", seed=1, progress=False)
    with pytest.raises(StoreError, match="another backbone"):
        extract(dataset, tmp_path / "s", views="a=random:2", progress=False)  # no checkpoint: other sha
    d = tmp_path / "hfdir"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "sub" / "w.bin").write_bytes(b"123")
    h = checkpoint_sha256(d)
    (d / "sub" / "w.bin").write_bytes(b"124")
    assert checkpoint_sha256(d) != h


@pytest.mark.slow
def test_bf16_on_cpu_is_close_to_fp32(tmp_path, dataset):
    extract(dataset, tmp_path / "a", views="uniform:1x1", progress=False)
    extract(dataset, tmp_path / "b", views="uniform:1x1", precision="bf16", progress=False)
    a, b = store_arrays(tmp_path / "a"), store_arrays(tmp_path / "b")
    np.testing.assert_allclose(b["uniform1x1/features"].astype(np.float32),
                               a["uniform1x1/features"].astype(np.float32), rtol=0.05, atol=0.02)
    with pytest.raises(VsslError, match="fp16 needs CUDA"):
        extract(dataset, tmp_path / "c", precision="fp16", device="cpu", progress=False)


def test_manifest_inputs(tmp_path, dataset):
    (tmp_path / "m.csv").write_text(f"path,label,split\n{dataset}/jump/v0.mp4,jump,train\n"
                                    f"{dataset}/run/v1.mp4,run,\n{dataset}/run/w.avi,,test\n")
    inp = collect_inputs(tmp_path / "m.csv", split="val")
    assert inp.classes == ["jump", "run"]
    assert [(v.label, v.split) for v in inp.videos] == [(0, "train"), (1, "val"), (-1, "test")]
    rel = tmp_path / "sub"
    rel.mkdir()
    (rel / "a.mp4").write_bytes((dataset / "jump" / "v1.mp4").read_bytes())
    (tmp_path / "m.tsv").write_text("sub/a.mp4\t3\n")
    s = extract(tmp_path / "m.tsv", tmp_path / "s", views="uniform:1x1", progress=False)
    assert s.done == 1 and FeatureStore.open(tmp_path / "s").labels().tolist() == [3]
    dir_inputs = collect_inputs(dataset, split="train")
    assert dir_inputs.classes == ["jump", "run"] and {v.split for v in dir_inputs.videos} == {"train"}
    assert [v.path for v in dir_inputs.videos][:2] == ["jump/v0.mp4", "jump/v1.mp4"]


@pytest.mark.slow
def test_clips_from_real_videos_hold_sequentially_decoded_frames(tmp_path, shared_videos):
    model = Recorder(InputSpec(frames=4, stride=5, size=24, mean=SPEC.mean, std=SPEC.std))
    extract(shared_videos, tmp_path / "s", model=model, backbone="recorder", views="random:3,uniform:2x1",
            batch_size=6, progress=False)
    st = FeatureStore.open(tmp_path / "s")
    assert (st.video_status() == STATUS_DONE).all()
    seen = iter(model.clips())
    specs = parse_views("random:3,uniform:2x1", frames=4, stride=5, size=24)
    for v, rel in enumerate(st.paths()):
        with av.open(str(shared_videos / rel)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert st.num_frames()[v] == len(frames)
        h, w = frames[0].shape[:2]
        for spec in specs.values():
            for clip in sample_clips(spec, len(frames), h, w, rel):
                ref = normalize(crop_resize([frames[i] for i in clip.frames], clip.crop, 24, clip.flip),
                                SPEC.mean, SPEC.std)
                assert torch.equal(next(seen), ref), (rel, clip)


@pytest.mark.slow
def test_cli_extract_on_a_folder(tmp_path, capsys, vssl_cli):
    dataset = tmp_path / "videos"
    write_video(dataset / "a" / "x.mp4", 20)
    write_video(dataset / "b" / "y.mp4", 12)
    with pytest.raises(SystemExit) as ok:
        cli_main(["extract", str(dataset), "--out", str(tmp_path / "s"), "--backbone", "tiny",
                  "--views", "uniform:5x3", "--quiet"])
    assert ok.value.code == 0
    assert "2 done" in capsys.readouterr().out
    st = FeatureStore.open(tmp_path / "s")
    assert st.view("uniform5x3").read_features([0]).shape == (1, 15, 128) and st.view("uniform5x3").done().all()
    # the real console entry point, as a user runs it: one line on stderr, exit code 2
    proc = vssl_cli("extract", dataset, "--out", tmp_path / "s", "--views", "uniform:5x3", "--size", "32", "--quiet")
    assert proc.returncode == 2
    assert "another backbone" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_awkward_videos_extract_with_exact_frames(tmp_path):
    root = tmp_path / "v"
    vfr = [0, 10, 80, 90, 100, 200, 210, 215, 300, 310, 400, 405, 500, 560, 600, 610]
    write_video(root / "a_vfr.mp4", len(vfr), pts=vfr)
    write_video(root / "b_odd.mp4", 23, width=37, height=91, pix_fmt="yuv444p")
    write_video(root / "c_one.mp4", 1)
    write_video(root / "d_gray.mkv", 20, codec="ffv1", pix_fmt="gray", pattern="gray")
    model = Recorder()
    s = extract(root, tmp_path / "s", model=model, backbone="recorder", views="uniform:2x2", progress=False)
    assert (s.done, s.failed) == (4, 0)
    st = FeatureStore.open(tmp_path / "s")
    assert st.num_frames().tolist() == [16, 23, 1, 20]
    _, boxes = st.view("uniform2x2").read(np.arange(4))
    pix = model.pixels().reshape(4, 4, 3, 4, 16, 16)
    for v, n in enumerate([16, 23, 1, 20]):
        for k in range(4):
            first = round(boxes[v, k, 0] * n)
            seen = [frame_number(pix[v, k][:, t]) for t in range(4)]
            expected = [min(first + 3 * j, n - 1) for j in range(4)]
            if v == 3:  # grayscale carries n % 8 as its grey level
                assert [x % 8 for x in seen] == [e % 8 for e in expected]
            else:
                assert seen == expected
    np.testing.assert_allclose(boxes[1, :2, [1, 2, 4, 5]].T, [[0, 0, 37 / 91, 1], [54 / 91, 0, 1, 1]])


def test_input_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("a.mp4,1,train,extra\n")
    (tmp_path / "v.mp4").write_bytes(b"")
    for source, match in [(tmp_path / "nope", "no such"), (tmp_path / "empty", "no video files"),
                          (tmp_path / "bad.csv", "row 1"), (tmp_path / "v.mp4", "is a video")]:
        with pytest.raises(VsslError, match=match) as e:
            collect_inputs(source)
        assert "\n" not in str(e.value)
