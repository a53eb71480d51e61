"""`vssl demo --quick` end to end, through the real console entry point."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_demo_quick_runs_the_whole_pipeline(tmp_path, vssl_cli):
    r = vssl_cli("demo", "--quick", "--out", tmp_path / "demo", "--quiet", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in r.stderr
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    rows = {(x["probe"], x["features"]) for x in report["results"]}
    assert {("knn", "backbone"), ("linear", "backbone"), ("knn", "scale"), ("scale_linear", "scale")} <= rows
    for x in report["results"]:
        assert 0 <= x["top1"] <= x["top5"] <= 100 and x["n_test"] > 0
    # the printed table carries the measured numbers, and the files it names exist
    knn = next(x for x in report["results"] if x["probe"] == "knn" and x["features"] == "backbone")
    assert f"{knn['top1']:.2f}" in r.stdout
    for name in ("store.zarr", "scale_run/checkpoint.pt", "scale_run/metrics.csv", "confusion.png", "loss_curve.png",
                 "report.html"):
        assert (tmp_path / "demo" / name).exists(), name
    assert f"report page: {tmp_path / 'demo' / 'report.html'}" in " ".join(r.stdout.split())
    page = (tmp_path / "demo" / "report.html").read_text()
    assert "training curves of" in page and "feature map of the test videos" in page
    assert "SCALE" in r.stdout and "event-order classes" in r.stdout
    # SCALE_ft and Transformer side by side, a difference stated only beyond its interval
    assert {("transformer", "backbone"), ("scale_ft", "scale")} <= rows
    line = next(x for x in r.stdout.splitlines() if "SCALE_ft" in x and "Transformer" in x)
    assert "interval" in line and ("within noise" in line or "is better" in line)
