"""The report page: one HTML file, its styles and images inline, no script, no network.

Sections, in reading order: what was run (store, backbone and checkpoint hash, the view's recipe,
the SCALE run's settings, each probe's settings, vssl's version); the probe table with intervals
and seeds; every comparison in words; the best row's (and any chosen row's) confusion matrix and
per-class numbers; each SCALE run's training curves; the test videos' feature map; the retrieval
gallery where one was drawn. Every number in a table is the JSON report's, rounded for display;
each numeric cell carries its row and field (``data-row``, ``data-field``), so a reader (or a
test) can check the page against the report.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from vssl.errors import VsslError

from vssl.aggregate.checkpoint import checkpoint_path

from .feature_map import check_method, test_video_maps
from .figures import confusion_figure, feature_map_figure, png_data_uri, training_curves_figure
from .read import RunRecord, read_report, read_run

#: the headline columns of each kind of row: (JSON field, column title)
COLUMNS = {"single": (("top1", "top-1"), ("top5", "top-5"), ("balanced_accuracy", "bal. acc.")),
           "multi": (("mAP", "mAP"),), "regression": (("mse", "MSE"), ("r2", "R²"))}

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d232a; margin: 0;
       background: #f6f7f9; }
main { max-width: 1240px; margin: 0 auto; padding: 18px 24px 48px; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 2px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #dde;
     padding-bottom: 4px; } h3 { font-size: 15px; margin: 16px 0 6px; }
.sub { color: #5b6570; margin: 0 0 12px; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e4e7eb; text-align: left; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv td:first-child { color: #5b6570; white-space: nowrap; }
table.kv td { max-width: 980px; overflow-wrap: anywhere; }
.results { width: 100%; }
tr.best td { background: #eef6ee; }
.tag { font-size: 11px; padding: 1px 5px; border-radius: 3px; background: #fde8c8; color: #7a4a00; }
ul.statements li { margin: 3px 0; }
img { max-width: 100%; height: auto; display: block; margin: 6px 0; }
details { margin: 4px 0; } summary { cursor: pointer; color: #33507a; }
.wide { overflow-x: auto; } .note { color: #5b6570; font-style: italic; }
code { font-size: 12px; background: #f0f2f5; padding: 0 3px; border-radius: 3px; overflow-wrap: anywhere; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any, digits: int = 2) -> str:
    """A JSON number as the page shows it ("—" for none)."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else esc(value)


def row_name(r: dict[str, Any]) -> str:
    """A row's name as the terminal table and the predictions file give it (``knn_k20``)."""
    return r["probe"] if not r.get("variant") else f"{r['probe']}_{r['variant']}"


def row_key(r: dict[str, Any]) -> str:
    return f"{row_name(r)}/{r['features']}"


def kv_table(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in pairs if v not in (None, "", {}))
    return f'<table class="kv">{rows}</table>'


def code(value: Any) -> str:
    return f"<code>{esc(value)}</code>"


def settings_block(title: str, settings: dict[str, Any] | None) -> str:
    """A folded block of settings (JSON), for the many keys a reader looks up rather than reads."""
    if not settings:
        return ""
    body = esc(json.dumps(settings, indent=2, sort_keys=True, default=str))
    return f"<details><summary>{esc(title)}</summary><pre><code>{body}</code></pre></details>"


# ---------------------------------------------------------------------- sections


def what_was_run(doc: dict[str, Any], runs: Sequence[RunRecord]) -> str:
    ctx = doc.get("context") or {}
    bb = ctx.get("backbone") or {}
    view = ctx.get("view") or {}
    record = view.get("extract") or {}
    sha = bb.get("checkpoint_sha256")
    pairs = [
        ("store", code(doc["store"])),
        ("backbone", esc(bb.get("name", "")) + (f" ({esc(bb['family'])})" if bb.get("family") else "")),
        ("checkpoint", code(bb["checkpoint"]) if bb.get("checkpoint") else "the backbone's own weights / none"),
        ("checkpoint sha256", code(sha) if sha else None),
        ("clips", ", ".join(x for x in (f"{bb.get('frames')} frames", f"stride {bb.get('stride')}",
                                         f"{bb.get('size')} px", esc(bb.get("precision") or record.get("precision") or ""))
                            if x) if bb else None),
        ("view", code(doc["view"]) + (f" — {esc(json.dumps(view.get('spec'), sort_keys=True))}" if view.get("spec")
                                      else "")),
        ("recipe", esc(record.get("recipe") or "default") + (f", {record.get('fps')} fps time base"
                                                            if record.get("fps") else "")),
        ("splits", f"train '{esc(doc['train_split'])}' → test '{esc(doc['test_split'])}'"
                   + (f", low-shot {doc['low_shot']:g}" if doc.get("low_shot") else "")
                   + (f", target {esc(doc['target'])}" if doc.get("target") else "")),
        ("train view", code(ctx["train_view"]) if ctx.get("train_view") else None),
        ("seeds", ", ".join(str(s) for s in doc.get("seeds", []))),
        ("SCALE run", code((ctx.get("scale_run") or {}).get("dir")) if ctx.get("scale_run") else None),
        ("vssl", esc(ctx.get("vssl_version", "?"))),
    ]
    blocks = [settings_block("settings that extracted the view", record),
              settings_block("SCALE run settings", (ctx.get("scale_run") or {}).get("config"))]
    blocks += [settings_block(f"run {r.path} settings", r.config) for r in runs
               if str(r.path) != str((ctx.get("scale_run") or {}).get("dir"))]
    blocks += [settings_block(f"probe {name} settings", s) for name, s in (ctx.get("probes") or {}).items()]
    return "<h2>What was run</h2>" + kv_table(pairs) + "".join(blocks)


def results_table(doc: dict[str, Any]) -> str:
    results = doc["results"]
    if not results:
        return "" if doc.get("retrieval") else "<h2>Results</h2><p class='note'>No probe rows.</p>"
    task = results[0].get("task", "single")
    columns = COLUMNS[task]
    seeds = len(doc.get("seeds", [])) > 1
    head = "".join(f"<th>{esc(t)}</th>" for _, t in columns)
    body = []
    for i, r in enumerate(results):
        cells = []
        for f, _ in columns:
            shown = number(r.get(f))
            spread = (r.get("std") or {}).get(f)
            if seeds and spread is not None and r.get(f) is not None:
                shown += f" ± {number(spread)}"
            cells.append(f'<td class="num" data-row="{esc(row_key(r))}" data-field="{f}">{shown}</td>')
        ci = r.get("ci") or {}
        interval = f"[{number(ci.get('low'))}, {number(ci.get('high'))}]" if ci else "—"
        tags = " <span class='tag'>transductive</span>" if r.get("transductive") else ""
        rule = (r.get("params") or {}).get("rule") if r["probe"] == "knn" else None
        name = row_name(r) + (f" ({rule})" if rule else "")
        per_seed = ""
        if seeds:
            values = (r.get("seeds") or {}).get(columns[0][0]) or []
            per_seed = f"<td>{esc(', '.join(number(v) for v in values))}</td>"
        best = ' class="best"' if i == doc.get("best") else ""
        body.append(f"<tr{best}><td>{esc(name)}{tags}</td><td>{esc(r['features'])}</td>{''.join(cells)}"
                    f'<td class="num" data-row="{esc(row_key(r))}" data-field="ci">{interval}</td>'
                    f'<td class="num">{r["n_train"]}</td><td class="num">{r["n_test"]}</td>{per_seed}</tr>')
    seed_head = "<th>each seed</th>" if seeds else ""
    title = "mean ± std over seeds; " if seeds else ""
    return ("<h2>Results</h2>"
            f"<p class='sub'>{title}95% interval of the first column's metric ({esc(_methods(results))}); the best row "
            "is shaded.</p>"
            f'<table class="results" id="results"><thead><tr><th>probe</th><th>features</th>{head}<th>95% CI</th>'
            f"<th>#train</th><th>#test</th>{seed_head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _methods(results: Sequence[dict[str, Any]]) -> str:
    methods = sorted({(r.get("ci") or {}).get("method", "") for r in results} - {""})
    return ", ".join(methods) or "none"


def statements(differences: Sequence[dict[str, Any]]) -> str:
    """The report's comparisons in words, as a list (empty without any)."""
    items = [d.get("statement") for d in differences if d.get("statement")]
    return f"<ul class='statements'>{''.join(f'<li>{esc(s)}</li>' for s in items)}</ul>" if items else ""


def comparisons(doc: dict[str, Any]) -> str:
    listed = statements(doc.get("comparisons", []))
    if not listed:
        return ""
    return ("<h2>Comparisons</h2><p class='sub'>The best row against each other row on the same test videos; "
            "“better” only where the paired interval of the difference excludes 0.</p>" + listed)


def retrieval_table(doc: dict[str, Any]) -> str:
    """The retrieval rows (R@k, mAP, intervals) and their comparisons, where ``--retrieval`` ran."""
    rows = doc.get("retrieval") or []
    if not rows:
        return ""
    ks = rows[0]["ks"]
    head = "".join(f"<th>R@{k}</th>" for k in ks) + "<th>mAP</th>"
    body = []
    for r in rows:
        key = row_key(r)
        # a cut-off that covers the whole gallery counts every query with a match: marked, as on the terminal
        cells = [f'<td class="num" data-row="{esc(key)}" data-field="R@{k}">{number(r["recall"].get(f"R@{k}"))}'
                 f'{"*" if k >= r["n_gallery"] else ""}</td>' for k in ks]
        cells.append(f'<td class="num" data-row="{esc(key)}" data-field="mAP">{number(r.get("mAP"))}</td>')
        ci = (r.get("ci") or {}).get(f"R@{ks[0]}") or {}
        interval = f"[{number(ci.get('low'))}, {number(ci.get('high'))}]" if ci else "—"
        tags = " <span class='tag'>transductive</span>" if r.get("transductive") else ""
        body.append(f"<tr><td>{esc(row_name(r))}{tags}</td><td>{esc(r['features'])}</td>{''.join(cells)}"
                    f'<td class="num" data-row="{esc(key)}" data-field="ci">{interval}</td>'
                    f'<td class="num">{r["n_queries"]}</td><td class="num">{r["n_gallery"]}</td></tr>')
    return ("<h2>Retrieval</h2><p class='sub'>Each test video queries the training videos (cosine similarity, exact "
            f"search); 95% bootstrap interval of R@{ks[0]} over the queries.</p>"
            f'<table class="results" id="retrieval"><thead><tr><th>probe</th><th>features</th>{head}<th>95% CI</th>'
            f"<th>#queries</th><th>#gallery</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
            + ("<p class='note'>* k covers the whole gallery: every query with a match counts, whatever its "
               "ranking.</p>" if any(k >= r["n_gallery"] for r in rows for k in ks) else "")
            + statements(doc.get("retrieval_comparisons", [])))


def row_detail(doc: dict[str, Any], r: dict[str, Any], why: str) -> str:
    """A row's confusion matrix and per-class numbers."""
    classes = doc.get("classes") or list(r.get("per_class") or {})
    parts = [f"<h3>{esc(row_name(r))} ({esc(r['features'])}) — {esc(why)}</h3>"]
    if r.get("confusion") is not None and classes:
        top1 = r.get("top1")
        title = f"{row_name(r)} ({r['features']})" + (f": top-1 {top1:.1f}%" if top1 is not None else "")
        parts.append(f'<img alt="confusion matrix of {esc(row_key(r))}" src="{png_data_uri(confusion_figure(r["confusion"], classes, title))}">')
    multi = r.get("task") == "multi"
    values = (r.get("per_class_ap") if multi else r.get("per_class")) or {}
    field = "per_class_ap" if multi else "per_class"
    stats = r.get("per_class_stats") or {}
    if values:
        rows = []
        for c in classes:
            s = stats.get(c) or {}
            extra = "" if multi else (f'<td class="num">{number(s.get("precision"))}</td>'
                                      f'<td class="num">{s.get("support", "—")}</td>')
            rows.append(f"<tr><td>{esc(c)}</td>"
                        f'<td class="num" data-row="{esc(row_key(r))}" data-field="{field}:{esc(c)}">'
                        f"{number(values.get(c))}</td>{extra}</tr>")
        head = "<th>AP</th>" if multi else "<th>accuracy (recall)</th><th>precision</th><th>support</th>"
        parts.append(f"<div class='wide'><table><thead><tr><th>class</th>{head}</tr></thead>"
                     f"<tbody>{''.join(rows)}</tbody></table></div>")
    return "".join(parts)


def best_rows(doc: dict[str, Any], chosen: Sequence[str]) -> str:
    results = doc["results"]
    if not results or results[0].get("task") == "regression":     # a target's rows have no classes
        return ""
    picked: list[tuple[dict[str, Any], str]] = []
    if doc.get("best") is not None:
        picked.append((results[doc["best"]], "the best row"))
    for name in chosen:
        found = [r for r in results if name in (row_key(r), row_name(r))]
        if not found:
            known = ", ".join(row_key(r) for r in results)
            raise VsslError(f"--row {name}: no such row in the report; its rows: {known}")
        picked += [(r, "chosen") for r in found if all(r is not p for p, _ in picked)]
    return "<h2>Per class</h2>" + "".join(row_detail(doc, r, why) for r, why in picked)


def stage_two(runs: Sequence[RunRecord]) -> str:
    parts = []
    for run in runs:
        if not run.metrics:
            parts.append(f"<h3>{esc(run.path)}</h3><p class='note'>no metrics.csv in the run folder</p>")
            continue
        last = run.metrics[-1]
        parts.append(f"<h3>{esc(run.path)}</h3><p class='sub'>{len(run.metrics)} epochs, last loss "
                     f"{last.get('loss', float('nan')):.4f}</p>"
                     f'<img alt="training curves of {esc(run.path)}" src="{png_data_uri(training_curves_figure(run.metrics))}">')
    return "<h2>Stage two</h2>" + "".join(parts) if parts else ""


def feature_map(image: str | None, why_not: str | None) -> str:
    if image is None:
        return f"<h2>Feature map</h2><p class='note'>{esc(why_not)}</p>" if why_not else ""
    return ("<h2>Feature map</h2><p class='sub'>The test videos, each its k-NN vector (mean of l2-normalised clips), "
            f'coloured by class.</p><img alt="feature map of the test videos" src="{image}">')


def gallery(doc: dict[str, Any]) -> str:
    path = doc.get("gallery")
    if not path:
        return ""
    file = Path(path)                                # recorded absolute by `vssl probe --gallery`
    if not file.is_file():
        return f"<h2>Retrieval gallery</h2><p class='note'>the gallery {esc(path)} is no longer there</p>"
    uri = "data:image/png;base64," + base64.b64encode(file.read_bytes()).decode("ascii")
    return ("<h2>Retrieval gallery</h2><p class='sub'>Test queries and their nearest training videos (green: same class, "
            f'red: another).</p><img alt="retrieval gallery" src="{uri}">')


# ---------------------------------------------------------------------- the page


def render(doc: dict[str, Any], runs: Sequence[RunRecord] = (), chosen: Sequence[str] = (),
           map_image: str | None = None, map_note: str | None = None) -> str:
    """The page's HTML for report ``doc`` (a JSON report of :data:`~vssl.probe.report.REPORT_FORMAT`)."""
    title = f"vssl report — {doc['view']} of {Path(doc['store']).name}"
    body = [f"<h1>{esc(title)}</h1>",
            f"<p class='sub'>written {esc(time.strftime('%Y-%m-%d %H:%M'))} from a format-{doc['format']} report</p>",
            what_was_run(doc, runs), results_table(doc), comparisons(doc), retrieval_table(doc), best_rows(doc, chosen),
            stage_two(runs), feature_map(map_image, map_note), gallery(doc)]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body><main>{''.join(body)}</main></body></html>\n")


def write_page(report: str | Path | dict[str, Any], out: str | Path, runs: Sequence[str | Path] = (),
               store: str | Path | None = None, chosen: Sequence[str] = (), method: str = "tsne",
               quiet: bool = True) -> list[str]:
    """Write the page of ``report`` (a JSON report file, or its dict) to ``out``; return what it left
    out, one line each (for the caller to print).

    ``runs``: SCALE run folders whose training curves it shows (the report's own run is added when
    its folder is still there). ``store``: where the store is now, for the feature map (default: the
    report's path); a store that is not there leaves the map out, and says so.
    """
    check_method(method)
    doc = read_report(report) if not isinstance(report, dict) else report
    notes: list[str] = []
    folders = [Path(r) for r in runs]
    own = _own_run(doc)
    if own is not None and not checkpoint_path(own).is_file():
        if not folders:
            notes.append(f"the report's SCALE run {own} is not there: its curves and map panel are left out; "
                         "give --run where it is now")
        own = None
    if own is not None and all(own.resolve() != f.resolve() for f in folders):
        folders.append(own)
    records = [read_run(f) for f in folders]
    # the map's SCALE panel: the report's run where it still is, else the first --run (a moved run)
    map_run = own if own is not None else (folders[0] if folders and _own_run(doc) is not None else None)
    image, note = _feature_map(doc, store, map_run, method, quiet)
    notes += [note] if note else []
    html_text = render(doc, records, chosen, image, note)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html_text, encoding="utf-8")
    tmp.replace(out)
    return notes


def _own_run(doc: dict[str, Any]) -> Path | None:
    """The SCALE run the report's rows were computed with, as the report records it (None: none)."""
    run = (doc.get("context") or {}).get("scale_run") or {}
    return Path(run["dir"]) if run.get("dir") else None


def _feature_map(doc: dict[str, Any], store: str | Path | None, run: Path | None, method: str,
                 quiet: bool) -> tuple[str | None, str | None]:
    """The map's image, or why it is left out (one line)."""
    from vssl.features_store import FeatureStore

    if doc.get("target") or (doc["results"] and doc["results"][0].get("task") == "regression"):
        return None, "no feature map: the rows are a regression target, not classes"
    if not doc.get("classes"):
        return None, "no feature map: the report names no classes"
    where = Path(store) if store is not None else Path(doc["store"])
    if not FeatureStore.exists(where):
        return None, f"no feature map: the store is not at {where}; give --store where it is now"
    maps, labels = test_video_maps(doc, where, run, method, quiet)
    classes = doc.get("classes") or []
    return png_data_uri(feature_map_figure(maps, labels, classes, method)), None
