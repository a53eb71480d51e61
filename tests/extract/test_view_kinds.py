"""The view-kind seam: a new kind is one registered class, and extraction stores it whatever its count."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from tests.plugins import install_plugin
from tests.videos import write_video
from vssl.errors import VsslError
from vssl.extract.pipeline import extract
from vssl.extract.samplers import (VIEW_KINDS, Clip, SamplerSpec, VideoGeometry, clip_frames, parse_view,
                                   parse_views, view_kind)
from vssl.features_store import FeatureStore, store_summary, verify_store

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class EveryClips(SamplerSpec):
    """``every:N`` — one full-frame clip starting every N frames: as many clips as the video allows."""

    step: int = 1

    kind: ClassVar[str] = "every"
    syntax: ClassVar[str] = "every:N"
    fixed_count: ClassVar[bool] = False

    @property
    def num_clips(self) -> None:
        return None

    @property
    def default_name(self) -> str:
        return f"every{self.step}"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "step": self.step}

    @classmethod
    def parse(cls, args: str, options: dict[str, str], view: str, **clip: Any) -> "EveryClips":
        return cls(step=int(args), **clip)

    def place(self, video: VideoGeometry, video_key: str) -> list[Clip]:
        crop = (0, 0, video.height, video.width)
        out = []
        for start in range(0, max(video.num_frames - self.span, 0) + 1, self.step):
            frames = clip_frames(start, self, video.num_frames)
            out.append(Clip(frames, crop, False, (frames[0] / video.num_frames, 0.0, 0.0,
                                                  (frames[-1] + 1) / video.num_frames, 1.0, 1.0, 0.0)))
        return out


@pytest.fixture
def every_kind():
    view_kind(EveryClips)
    yield EveryClips
    VIEW_KINDS.pop("every")


def expected_starts(num_frames: int, span: int, step: int) -> list[int]:
    return list(range(0, max(num_frames - span, 0) + 1, step))


def test_builtin_kinds_are_registry_entries():
    assert {"random", "uniform"} <= set(VIEW_KINDS)
    assert VIEW_KINDS["random"].fixed_count and VIEW_KINDS["uniform"].fixed_count
    with pytest.raises(VsslError, match="expected random:K.* or uniform:TxS"):  # the error lists the kinds
        parse_views("nosuch:3", frames=4, stride=2, size=16)
    with pytest.raises(ValueError, match="registered twice"):
        view_kind(VIEW_KINDS["random"])


@pytest.mark.slow
def test_a_new_kind_is_one_entry_and_extracts_into_a_ragged_view(tmp_path, every_kind):
    name, spec = parse_view("every:6", frames=4, stride=2, size=16)
    assert name == "every6" and spec.num_clips is None
    with pytest.raises(VsslError, match="every:N"):
        parse_view("every", frames=4, stride=2, size=16)
    lengths = (5, 23, 40)
    for i, n in enumerate(lengths):
        write_video(tmp_path / "v" / "a" / f"{i}.mp4", n)
    summary = extract(tmp_path / "v", tmp_path / "s", views="every:6,uniform:2x1", chunk_videos=2, progress=False)
    store = FeatureStore.open(tmp_path / "s")
    view = store.view("every6")
    assert view.layout == "ragged" and store.view("uniform2x1").layout == "fixed"
    span = (store.backbone.frames - 1) * store.backbone.stride + 1
    starts = [expected_starts(n, span, 6) for n in store.num_frames().tolist()]
    assert view.counts().tolist() == [len(s) for s in starts]
    assert summary.clips == sum(len(s) for s in starts) + 2 * len(lengths)
    rows = view.read(np.arange(3))
    for v, (s, n) in enumerate(zip(starts, store.num_frames().tolist())):
        np.testing.assert_allclose(rows.boxes[v, :len(s), 0], np.array(s) / n)
        assert np.isfinite(rows.features[v, :len(s)].astype(np.float32)).all()
        assert np.abs(rows.features[v, :len(s)].astype(np.float32)).sum(axis=1).min() > 0
    assert view.spec == {"sampler": "every", "frames": store.backbone.frames, "stride": store.backbone.stride,
                         "size": store.backbone.size, "step": 6}
    assert verify_store(store) == []
    assert store_summary(store)["groups"]["views/every6"]["clips"] == sum(len(s) for s in starts)
    again = extract(tmp_path / "v", tmp_path / "s", views="every:6,uniform:2x1", progress=False)
    assert again.processed == 0 and again.skipped_done == 3  # resume: nothing left to do


@dataclass(frozen=True)
class LongOnlyClips(EveryClips):
    """``longonly:N``: like ``every:N`` but no clip at all in a video shorter than 30 frames."""

    kind: ClassVar[str] = "longonly"
    syntax: ClassVar[str] = "longonly:N"

    @property
    def default_name(self) -> str:
        return f"longonly{self.step}"

    def place(self, video: VideoGeometry, video_key: str) -> list[Clip]:
        return [] if video.num_frames < 30 else super().place(video, video_key)


@pytest.mark.slow
def test_a_video_given_no_clips_by_a_view_fails_alone_and_is_never_written_twice(tmp_path):
    view_kind(LongOnlyClips)
    try:
        for i, n in enumerate((12, 40, 35, 10, 50)):
            write_video(tmp_path / "v" / "a" / f"{i}.mp4", n)
        summary = extract(tmp_path / "v", tmp_path / "s", views="longonly:5,uniform:1x1", chunk_videos=5,
                          batch_size=3, progress=False)
    finally:
        VIEW_KINDS.pop("longonly")
    store = FeatureStore.open(tmp_path / "s")
    short = store.num_frames() == 0  # failed videos record no frame count
    assert summary.failed == 2 and summary.done == 3 and summary.processed == 5
    assert all("places no clip" in error for _, error in summary.failures), summary.failures
    assert (store.video_status() == 2).sum() == 2 and store.view("longonly5").done().sum() == 3
    assert verify_store(store) == [] and short.sum() <= 2


PLUGIN = """
    from dataclasses import dataclass
    from typing import ClassVar

    from vssl.extract.view_kinds.base import Clip, SamplerSpec, clip_box, clip_frames


    @dataclass(frozen=True)
    class FirstClips(SamplerSpec):
        \"\"\"firstn:N: the first N clips of the video, back to back, over the full frame.\"\"\"

        count: int = 1
        kind: ClassVar[str] = "firstn"
        syntax: ClassVar[str] = "firstn:N"

        @property
        def num_clips(self):
            return self.count

        @property
        def default_name(self):
            return f"first{self.count}"

        def to_dict(self):
            return {**super().to_dict(), "count": self.count}

        @classmethod
        def parse(cls, args, options, view, **clip):
            return cls(count=int(args), **clip)

        def place(self, video, video_key):
            crop = (0, 0, video.height, video.width)
            out = []
            for i in range(self.count):
                frames = clip_frames(i * self.span, self, video.num_frames)
                out.append(Clip(frames, crop, False, clip_box(frames, crop, False, video.num_frames, video.height,
                                                              video.width)))
            return out
"""


@pytest.mark.slow
def test_an_installed_plugin_kind_is_found_by_its_entry_point(tmp_path, monkeypatch, vssl_cli):
    """A package registers a kind in the ``vssl.view_kinds`` group; `vssl extract --views` then builds it."""
    install_plugin(tmp_path, monkeypatch, "kindplug", PLUGIN, "vssl.view_kinds", "firstn = kindplug:FirstClips")
    write_video(tmp_path / "v" / "a" / "0.mp4", 30)
    result = vssl_cli("extract", tmp_path / "v", "--out", tmp_path / "s", "--views", "firstn:2", "--frames", "4",
                      "--stride", "2", "--size", "16", "--quiet")
    assert result.returncode == 0, result.stderr
    view = FeatureStore.open(tmp_path / "s").view("first2")
    assert view.spec["sampler"] == "firstn" and view.counts().tolist() == [2]
    rows = view.read(np.arange(1))
    np.testing.assert_allclose(rows.boxes[0, :, 0], [0, 7 / 30])  # clip i starts at frame i * span (7)
    bad = vssl_cli("extract", tmp_path / "v", "--out", tmp_path / "s2", "--views", "nosuch:2", "--quiet")
    assert bad.returncode == 2 and "expected random:K" in bad.stderr


def extract_imports() -> dict[str, set[str]]:
    """Module → the vssl.extract modules it imports anywhere (top level or inside a function), backbones aside
    (their registry loads the families on purpose)."""
    root = Path(__file__).resolve().parents[2]
    files = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (root / "vssl" / "extract").rglob("*.py") if "backbones" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                deps |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def test_extract_modules_import_one_way():
    """No import cycle (samplers, the kinds and the time base once imported each other, lazily or late)."""
    graph = extract_imports()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    assert {"vssl.extract.samplers", "vssl.extract.timebase"} <= set(graph)
    assert [m for m in sorted(graph) if m in reaches(m)] == []
