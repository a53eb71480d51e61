"""benchmarks/gpu_check.sh's CPU mode: every check the CPU can run passes, so the GPU script does not rot."""

from __future__ import annotations

import pytest

from benchmarks import gpu_check

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cpu_mode_runs_every_cpu_check_and_prints_one_table(tmp_path, capsys):
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = out[out.index("| check |"):]
    for name in ("extract fp32", "extract bf16", "aggregate resident", "aggregate streaming", "resident = streaming",
                 "resume", "export", "probes", "k-NN bf16 vs faiss", "backbone throughput"):
        assert f"| {name} | ok |" in table, name
    assert "| extract fp16 | skipped | needs CUDA |" in table and "FAIL" not in table


def test_dry_run_prints_the_plan_only(capsys):
    assert gpu_check.main(["--device", "cpu", "--dry-run"]) == 0
    assert "checks: videos, extract, aggregate, probes, knn, throughput" in capsys.readouterr().out
