"""Unusable features (inf/NaN from fp16 overflow, values a float16 view cannot hold) fail their video,
and a store records the precision its features were embedded at."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from tests.extract.test_extract import Recorder
from vssl.cli import main as cli_main
from vssl.device import resolve_precision
from tests.videos import write_video
from vssl.errors import StoreError
from vssl.extract.finite import unusable_reason, unusable_rows
from vssl.extract.pipeline import extract
from vssl.features_store import STATUS_DONE, STATUS_FAILED, FeatureStore, verify_store


class Overflowing(Recorder):
    """Returns inf on one clip of its ``poisoned``-th batch (one video per batch in these tests)."""

    def __init__(self, poisoned: int, value: float = float("inf")) -> None:
        super().__init__()
        self.poisoned, self.value = poisoned, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if len(self.seen) - 1 == self.poisoned:
            y[-1, 2] = self.value
        return y


@pytest.fixture
def videos(tmp_path):
    for i in range(3):
        write_video(tmp_path / "v" / f"{i}.mp4", 12 + 4 * i)
    return tmp_path / "v"


def run(videos, out, model, **kw):
    kw.setdefault("precision", "fp32")  # the messages and records below name it
    return extract(videos, out, model=model, backbone="recorder", views="uniform:2x1", batch_size=2,
                   progress=False, **kw)


@pytest.mark.slow
def test_inf_features_fail_their_video_and_the_run_goes_on(tmp_path, videos):
    s = run(videos, tmp_path / "s", Overflowing(poisoned=1))
    assert (s.processed, s.done, s.failed) == (3, 2, 1)
    (path, reason), = s.failures
    assert path == "1.mp4" and reason == "inf features in clip 1 of view 'uniform2x1' under fp32 " \
                                         "(the backbone produced them; check its checkpoint and input normalisation)"
    st = FeatureStore.open(tmp_path / "s")
    assert st.video_status().tolist() == [STATUS_DONE, STATUS_FAILED, STATUS_DONE]
    assert st.view("uniform2x1").done().tolist() == [True, False, True]
    assert np.isfinite(st.view("uniform2x1").read(np.arange(3)).features).all()
    assert verify_store(st) == []
    again = run(videos, tmp_path / "s", Recorder(), retry_failed=True)  # the fixed backbone redoes it alone
    assert (again.done, again.failed, again.skipped_done) == (1, 0, 2)


@pytest.mark.slow
def test_values_beyond_the_store_dtype_fail_only_where_the_dtype_cannot_hold_them(tmp_path, videos):
    s = run(videos, tmp_path / "half", Overflowing(poisoned=0, value=1e6))
    assert s.failed == 1 and "exceed float16's range" in s.failures[0][1] and "--dtype float32" in s.failures[0][1]
    assert run(videos, tmp_path / "full", Overflowing(poisoned=0, value=1e6), dtype="float32").failed == 0


def test_reasons_name_fp16_overflow():
    rows = np.array([[0.0, 1.0], [np.inf, np.nan], [7e4, 0.0]], np.float32)
    assert unusable_rows(rows, "float16").tolist() == [False, True, True]
    assert unusable_rows(rows, "float32").tolist() == [False, True, False]
    assert unusable_reason(rows[1], "v", 4, "fp16", "float16").startswith(
        "NaN/inf features in clip 4 of view 'v' under fp16 (fp16 overflows where bf16 and fp32 do not")


def forget_precisions(store, view: str, view_record: str | None) -> None:
    """Make ``store`` look as an older vssl left it: no precision in the backbone record, and the view's
    record holding ``view_record`` as its precision (the flag as given; None: no such key)."""
    root = zarr.open_group(str(store), mode="r+")
    backbone = dict(root.attrs["backbone"])
    del backbone["precision"]
    root.attrs["backbone"] = backbone
    group = root[f"views/{view}"]
    record = {k: v for k, v in group.attrs["extract"].items() if k != "precision"}
    group.attrs["extract"] = record if view_record is None else {**record, "precision": view_record}


def test_resuming_with_another_precision_is_refused_old_stores_resume_in_theirs(tmp_path, videos):
    run(videos, tmp_path / "s", Recorder(), chunk_videos=2, shard="0/2")
    assert FeatureStore.open(tmp_path / "s").backbone.precision == "fp32"
    with pytest.raises(StoreError, match=r"precision: store has 'fp32', got 'bf16'\); resume with the same .*"
                                         r"--precision"):
        run(videos, tmp_path / "s", Recorder(), chunk_videos=2, precision="bf16")
    # before auto existed a view recorded the flag as given, an explicit one: what its rows were computed in
    forget_precisions(tmp_path / "s", "uniform2x1", view_record="fp32")
    with pytest.raises(StoreError, match=r"view 'uniform2x1' was extracted in fp32, this run computes bf16; .*"
                                         r"resume with --precision fp32"):
        run(videos, tmp_path / "s", Recorder(), chunk_videos=2, precision="bf16")
    resumed = run(videos, tmp_path / "s", Recorder(), chunk_videos=2, precision="fp32")
    assert (resumed.done, resumed.skipped_done) == (1, 2)
    assert FeatureStore.open(tmp_path / "s").backbone.precision == ""  # old stores still open and read
    assert FeatureStore.open(tmp_path / "s").usable("uniform2x1").all()


@pytest.mark.slow
def test_a_view_records_the_precision_it_was_computed_in_and_never_mixes_two(tmp_path, videos, capsys):
    """The view records the precision ``auto`` resolved to; a view of an older store that records none
    resumes under an explicit --precision only (before, ``auto`` added bf16 rows to fp32 ones where the
    CPU or GPU has bf16); another precision than the recorded one is one line naming the flag, exit 2."""
    out = tmp_path / "s"
    args = ["extract", str(videos), "--out", str(out), "--views", "uniform:2x1", "--chunk-videos", "2",
            "--frames", "4", "--size", "32", "--device", "cpu", "--quiet"]

    def cli(*more: str) -> int:
        capsys.readouterr()
        with pytest.raises(SystemExit) as ended:
            cli_main([*args, *more])
        return ended.value.code

    def redo_video_2() -> None:
        FeatureStore.open(out, "r+").view("uniform2x1").mark(np.array([2]), np.array([False]))

    auto = resolve_precision("auto", torch.device("cpu"))
    assert cli() == 0  # --precision auto
    assert FeatureStore.open(out).view("uniform2x1").record["precision"] == auto  # resolved, never "auto"
    forget_precisions(out, "uniform2x1", view_record="auto")  # a view an older vssl's store got under auto
    redo_video_2()
    assert cli() == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "view 'uniform2x1' records no precision" in line
    assert "--precision fp32" in line
    assert not FeatureStore.open(out).view("uniform2x1").done()[2]  # nothing was written
    assert cli("--precision", "fp32") == 0  # the user says what it was extracted in: resumed, and recorded
    st = FeatureStore.open(out)
    assert st.view("uniform2x1").done().all() and st.view_precision("uniform2x1") == "fp32"
    redo_video_2()
    assert cli("--precision", "bf16") == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "view 'uniform2x1' was extracted in fp32, this run computes bf16" in line
    assert "resume with --precision fp32" in line
    assert cli() == (0 if auto == "fp32" else 2)  # auto: only where it resolves to the recorded fp32
