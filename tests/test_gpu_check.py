"""benchmarks/gpu_check.sh's CPU mode: every row compares a measured number with a stated bound,
every check the CPU can run passes, and a wrong result makes its row fail and the script exit 1."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from benchmarks import gpu_check

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = ("videos", "extract fp32", "extract bf16", "extract fp32 = cpu rows", "aggregate resident",
        "aggregate streaming", "resident = streaming", "resume", "aggregate loss = cpu", "export = cpu",
        "probe knn/backbone", "probe linear/backbone", "probe transformer/backbone", "probe knn/scale",
        "probe scale_linear/scale", "probe scale_ft/scale", "k-NN bf16 vs faiss", "backbone throughput fp32",
        "backbone throughput bf16")


def _main(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = gpu_check.main(["--device", "cpu", *args])
    return code, out.getvalue()


def _table(out: str) -> dict[str, tuple[str, str]]:
    """``{check: (status, figures)}`` of the final table."""
    rows = [line.split(" | ") for line in out[out.index("| check |"):].splitlines()[2:] if line.startswith("| ")]
    return {cells[0][2:]: (cells[1], cells[2]) for cells in rows}


@pytest.fixture(scope="module")
def cpu_run(one_thread, tmp_path_factory):
    """One whole CPU-mode run; its --out is where the fault tests re-run single checks."""
    out = tmp_path_factory.mktemp("gpu_check")
    code, printed = _main("--out", str(out))
    return out, code, printed


@pytest.mark.slow
def test_cpu_mode_runs_every_cpu_check_against_its_bound(cpu_run):
    _, code, printed = cpu_run
    table = _table(printed)
    assert code == 0 and "FAIL" not in printed, printed
    for name in ROWS:
        status, figures = table[name]
        assert status == "ok" and "(bound " in figures, (name, figures)       # a number and what it must meet
    assert table["extract fp16"] == ("skipped", "needs CUDA")
    assert all(status in ("ok", "skipped") for status, _ in table.values())


def _reversed_rows(real):
    return lambda c: tuple(a[::-1] for a in real(c))                       # every video gets another's rows


CPU_TOP1 = {"knn/backbone": (50.0, 6, np.eye(6)), "linear/backbone": (50.0, 6, np.eye(6))}


def _shifted_top1(real):
    """Every probe 50 points off the CPU's (both sides stand-ins: the row's comparison is what fails)."""
    return lambda c: {name: (top1 + 50.0, n, scores) for name, (top1, n, scores) in CPU_TOP1.items()}


def _zero_bf16(real):
    """A backbone whose bf16 output is all zeros (not run: the rows compare outputs and rates)."""
    return lambda c, x: {"fp32": (100.0, np.ones((4, 8))), "bf16": (100.0, np.zeros((4, 8)))}


@pytest.mark.slow
@pytest.mark.parametrize("check, seam, wrong, row", [
    ("export", "device_export", _reversed_rows, "export = cpu"),
    ("probes", "device_probes", _shifted_top1, "probe linear/backbone"),
    ("throughput", "device_throughput", _zero_bf16, "backbone throughput bf16"),
])
def test_a_wrong_device_result_fails_its_row_and_the_run(cpu_run, monkeypatch, check, seam, wrong, row):
    out = cpu_run[0]
    monkeypatch.setattr(gpu_check, seam, wrong(getattr(gpu_check, seam)))
    monkeypatch.setattr(gpu_check, "cpu_probes", lambda c: CPU_TOP1)
    code, printed = _main("--out", str(out), "--checks", check)
    status, figures = _table(printed)[row]
    assert code == 1 and status == "FAIL" and "OFF: bound" in figures, printed
    assert f"FAILED: {row}" in printed or f", {row}" in printed.splitlines()[-1]


def test_k_nn_neighbours_other_than_faiss_fail(monkeypatch):
    from vssl.probe import knn

    real = knn.search

    def search(train, test, cfg, *args, **kwargs):
        scores, idx = real(train, test, cfg, *args, **kwargs)
        return (scores, (idx + 1) % len(train)) if cfg.backend == "torch" else (scores, idx)

    monkeypatch.setattr(knn, "search", search)
    code, printed = _main("--checks", "knn")
    assert code == 1 and _table(printed)["k-NN bf16 vs faiss"][0] == "FAIL"


def test_a_row_without_a_bound_is_refused(tmp_path):
    c = gpu_check.Check(tmp_path, None, None)
    with pytest.raises(ValueError, match="states no bound"):
        c.row("figures only", [gpu_check.Figure("clips/s", 100.0)], 0.0)
    assert not c.row("nan", [gpu_check.at_most("diff", float("nan"), 1.0)], 0.0)      # NaN is never within


def test_dry_run_prints_the_plan_only():
    code, printed = _main("--dry-run")
    assert code == 0
    assert "checks: videos, extract, aggregate, export, probes, knn, throughput" in printed
