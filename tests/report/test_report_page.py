"""The report page, opened in a real browser (headless Chromium): no console error, every image
drawn, every number of its tables the JSON report's, the main table within a 1366-px screen."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.probe_helpers import VIEW, run_cli, tiny_store_and_run

pytestmark = pytest.mark.usefixtures("one_thread")

#: injected into a copy of the page (the page itself has no script): what the browser saw, as JSON
CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const cells = [...document.querySelectorAll('td[data-row]')].map(td =>
      [td.dataset.row, td.dataset.field, td.textContent.trim()]);
  const results = document.getElementById('results');
  const out = {images: imgs.length, broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
               cells: cells, page_width: document.documentElement.scrollWidth, window_width: window.innerWidth,
               table_width: results ? results.getBoundingClientRect().right : 0};
  const pre = document.createElement('pre'); pre.id = 'vssl-check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("headless Chromium is missing on CI: .ci/run installs Debian's chromium package")
        pytest.skip("headless Chromium not installed (apt-get install chromium); CI installs it")
    return found


def browse(page: Path, tmp_path: Path) -> tuple[dict, list[str]]:
    """Open ``page`` (a copy with :data:`CHECK`) at 1366 px: (what the check saw, the console errors)."""
    probe = tmp_path / f"checked-{page.name}"
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    run = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1366,900",
                          "--enable-logging=stderr", "--log-level=0", "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="vssl-check">(.*?)</pre>', run.stdout, re.S)
    assert found, f"the page did not load in Chromium: {run.stderr[-2000:]}"
    errors = [line for line in run.stderr.splitlines() if "CONSOLE" in line and
              re.search(r"error|uncaught|failed", line, re.I)]
    return json.loads(html.unescape(found.group(1))), errors       # the dump escapes the text node


def screenshot(page: Path, out: Path) -> None:
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1366,3000", f"--screenshot={out}", page.as_uri()], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    store, run = tiny_store_and_run(root)
    return root, store, run


def shown(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def test_the_page_shows_the_reports_numbers_and_every_image(experiment, tmp_path, capsys):
    root, store, run = experiment
    code, _, err = run_cli(capsys, "probe", store, "--view", VIEW, "--knn", "--linear", "--scale", run,
                           "--report", tmp_path / "r.json", "--html", tmp_path / "page.html", "--quiet")
    assert code == 0, err
    assert "report page:" in err
    doc = json.loads((tmp_path / "r.json").read_text())
    seen, errors = browse(tmp_path / "page.html", tmp_path)
    assert errors == []
    assert seen["broken"] == [] and seen["images"] == 3     # confusion matrix, training curves, feature map
    assert seen["page_width"] <= seen["window_width"] and seen["table_width"] <= seen["window_width"]
    cells = {(r, f): text for r, f, text in seen["cells"]}
    for r in doc["results"]:
        key = f"{r['probe']}/{r['features']}"
        for field in ("top1", "top5", "balanced_accuracy"):
            assert cells[(key, field)] == shown(r[field]), (key, field)
        assert cells[(key, "ci")] == f"[{shown(r['ci']['low'])}, {shown(r['ci']['high'])}]"
    best = doc["results"][doc["best"]]
    for cls, acc in best["per_class"].items():
        assert cells[(f"{best['probe']}/{best['features']}", f"per_class:{cls}")] == shown(acc)
    page = (tmp_path / "page.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page   # nothing to fetch
    for statement in (c["statement"] for c in doc["comparisons"]):
        assert statement in html.unescape(page)
    screenshot(tmp_path / "page.html", tmp_path / "page.png")
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_the_checks_catch_a_broken_page(tmp_path):
    """The browser checks can fail: a missing image and a script error are reported."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><img alt='gone' src='missing.png'>"
                    "<script>undefinedFunction()</script></body></html>")
    seen, errors = browse(page, tmp_path)
    assert seen["broken"] == ["gone"]
    assert errors, "a script error must show as a console error"


def test_vssl_report_reads_a_moved_store_and_refuses_bad_input(experiment, tmp_path, capsys):
    root, store, run = experiment
    code, _, err = run_cli(capsys, "probe", store, "--view", VIEW, "--knn", "--report", tmp_path / "r.json", "--quiet")
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    doc["store"] = str(tmp_path / "moved-away")                # as if the store had moved
    (tmp_path / "moved.json").write_text(json.dumps(doc))
    code, _, err = run_cli(capsys, "report", tmp_path / "moved.json", "--out", tmp_path / "a.html", "--run", run)
    assert code == 0 and "--store" in err and "feature map" in err and len(err.strip().splitlines()) == 1
    assert "feature map of the test videos" not in (tmp_path / "a.html").read_text()
    assert "training curves of" in (tmp_path / "a.html").read_text()
    code, _, err = run_cli(capsys, "report", tmp_path / "moved.json", "--out", tmp_path / "b.html", "--store", store,
                           "--map", "pca", "--row", "knn/backbone")
    assert code == 0, err
    assert "feature map of the test videos" in (tmp_path / "b.html").read_text()
    doc["format"] = 99
    (tmp_path / "future.json").write_text(json.dumps(doc))
    for args, says in ((["report", tmp_path / "future.json"], "format 99"),
                       (["report", tmp_path / "r.json", "--run", tmp_path / "no-run"], "no such run folder"),
                       (["report", tmp_path / "nothing.json"], "no such report"),
                       (["report", tmp_path / "r.json", "--row", "mlp/backbone"], "no such row")):
        code, _, err = run_cli(capsys, *args, "--out", tmp_path / "c.html")
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c.html").exists()


#: class names a page must show as written (HTML-special characters, a matplotlib TeX pair)
ODD_CLASSES = ['<b>bold</b>', 'a&b "q"', "cost $5 or $6"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """One store, three ways: single-label (odd class names, and a token view), multi-label, a numeric target."""
    import numpy as np

    from vssl.features_store.schema import VideoEntry
    from vssl.features_store.synthetic import make_synthetic_store, uniform_boxes

    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    n, test = 45, 15
    y = np.arange(n) % 3
    x = (3 * rng.normal(size=(3, 8))[y][:, None] + rng.normal(size=(n, 4, 8))).astype(np.float32)
    splits = ["train"] * (n - test) + ["test"] * test
    year = [(("year", float(2000 + 3 * y[i] + rng.normal())),) for i in range(n)]
    single = [VideoEntry(f"v{i}.mp4", int(y[i]), splits[i], targets=year[i]) for i in range(n)]
    multi = [VideoEntry(f"v{i}.mp4", int(y[i]), splits[i], classes=(int(y[i]), int((y[i] + 1) % 3)) if i % 2
                        else (int(y[i]),)) for i in range(n)]
    store = make_synthetic_store(root / "single", x, y, splits, view=VIEW, classes=ODD_CLASSES, videos=single,
                                 dtype="float32", chunk_videos=16)
    make_synthetic_store(root / "multi", x, y, splits, view=VIEW, classes=ODD_CLASSES, videos=multi)
    tokens = x[:, :, None, :] + rng.normal(size=(n, 4, 4, 8)).astype(np.float32)
    store.create_view("v.tokens1x2x2", num_clips=4, spec={"sampler": "synthetic", "clips": 4}, dtype="float32",
                      clip_shape=(4, 8))
    for start, stop in store.chunk_ranges():
        idx = np.arange(start, stop)
        store.write_videos(idx, {"v.tokens1x2x2": (tokens[start:stop], uniform_boxes(len(idx), 4))},
                           num_frames=[64] * len(idx), fps=[25.0] * len(idx), errors=[None] * len(idx))
    return root


SHAPES = {"multi-label": ("multi", VIEW, ["--knn", "--linear"]),
          "regression": ("single", VIEW, ["--knn", "--target", "year"]),
          "seeds and a k grid": ("single", VIEW, ["--knn", "--knn-k", "5,10", "--linear", "--seeds", "2"]),
          "retrieval only": ("single", VIEW, ["--retrieval"]),
          "token view": ("single", "v.tokens1x2x2", ["--retrieval"])}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_report_shape_opens_with_its_numbers(shapes, tmp_path, capsys, shape):
    store, view, probes = SHAPES[shape]
    code, _, err = run_cli(capsys, "probe", shapes / store, "--view", view, *probes, "--device", "cpu", "--quiet",
                           "--report", tmp_path / "r.json", "--html", tmp_path / "p.html")
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    seen, errors = browse(tmp_path / "p.html", tmp_path)
    assert errors == [] and seen["broken"] == []
    assert seen["page_width"] <= seen["window_width"]
    cells = {(r, f): text for r, f, text in seen["cells"]}
    seeds = len(doc["seeds"]) > 1
    for r in doc["results"]:
        key = f"{r['probe'] if not r['variant'] else r['probe'] + '_' + r['variant']}/{r['features']}"
        field = {"single": "top1", "multi": "mAP", "regression": "mse"}[r["task"]]
        want = shown(r[field]) + (f" ± {shown(r['std'][field])}" if seeds else "")
        assert cells[(key, field)] == want, (key, field)
    for r in doc["retrieval"]:
        key = f"{r['probe']}/{r['features']}"
        for k in r["ks"]:
            covers_all = "*" if k >= r["n_gallery"] else ""           # marked: every query with a match counts
            assert cells[(key, f"R@{k}")] == shown(r["recall"][f"R@{k}"]) + covers_all
        assert cells[(key, "mAP")] == shown(r["mAP"])
    if doc["results"] and doc["results"][0]["task"] == "multi":
        best = doc["results"][doc["best"]]
        for cls, ap in best["per_class_ap"].items():
            assert cells[(f"{best['probe']}/{best['features']}", f"per_class_ap:{cls}")] == shown(ap)
    page = (tmp_path / "p.html").read_text()
    assert "<b>bold</b>" not in page                                           # a class name is never markup
    if doc["results"] and doc["results"][0]["task"] != "regression":
        assert "&lt;b&gt;bold&lt;/b&gt;" in page                                # but text, in the per-class table
    if doc["target"] is None:
        assert seen["images"] >= 1 and "feature map of the test videos" in page


def test_a_moved_scale_run_is_said_and_found_with_run(experiment, tmp_path, capsys):
    root, store, run = experiment
    code, _, err = run_cli(capsys, "probe", store, "--view", VIEW, "--knn", "--scale", run, "--quiet",
                           "--report", tmp_path / "r.json")
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["context"]["scale_run"]["dir"] == str(run.resolve())     # absolute: read from anywhere
    doc["context"]["scale_run"]["dir"] = str(tmp_path / "run-moved-away")
    (tmp_path / "moved.json").write_text(json.dumps(doc))
    code, _, err = run_cli(capsys, "report", tmp_path / "moved.json", "--out", tmp_path / "a.html", "--map", "pca")
    assert code == 0 and "SCALE run" in err and "--run" in err and len(err.strip().splitlines()) == 1
    assert "training curves of" not in (tmp_path / "a.html").read_text()
    code, _, err = run_cli(capsys, "report", tmp_path / "moved.json", "--out", tmp_path / "b.html", "--map", "pca",
                           "--run", run)
    assert code == 0 and err.strip() == ""
    page = (tmp_path / "b.html").read_text()
    assert "training curves of" in page and "feature map of the test videos" in page
