"""The report page, opened in a real browser (headless Chromium): no console error, every image
drawn, every number of its tables the JSON report's, the main table within a 1366-px screen."""

from __future__ import annotations

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
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")), errors


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
    html = (tmp_path / "page.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html   # nothing to fetch
    for statement in (c["statement"] for c in doc["comparisons"]):
        assert statement in html.replace("&#x27;", "'")
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
    assert code == 0 and "--store" in err and "feature map" in err
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
