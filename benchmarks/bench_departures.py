"""Measure vssl's switchable departures from the released SCALE protocol, option against option.

One generated dataset (the demo's procedural videos, ``--videos`` of them, 30% test), extracted
once with the demo's backbone and views (efficientnet-lite0, 2 frames at stride 8, 64 px;
``random:16`` to pretrain and train on, ``uniform:5x3`` to evaluate), serves every item:

  knn-rule       k-NN video vector: ``dino`` (mean of l2-normalized clips, uncentred) vs
                 ``released`` (raw mean, centred): the backbone's row, and SCALE's on every
                 baseline run
  box-encoding   SCALE pretrained, exported and probed with ``absolute`` vs ``released`` boxes
  mask-mode      SCALE pretrained with ``fixed`` vs ``bernoulli`` (the released coin) masking
  standardize    the Transformer and SCALE_ft rows with vs without head-input standardisation

SCALE rows (k-NN, SCALE_linear, SCALE_ft) are measured once per pretraining seed (``--seeds``);
the baseline runs (absolute boxes, fixed masking) serve every item. Each option's rows are
scored on the same test videos; the difference of two options is the paired 95% interval of
:func:`vssl.probe.compare.paired_difference` (exact for one deterministic row, a paired
bootstrap over the test videos of the seeds' mean hit rate for several seeds).

    python benchmarks/bench_departures.py --out DIR [--videos 540] [--seeds 3] \\
        [--items knn-rule,box-encoding,mask-mode,standardize] [--rows knn,linear,ft]

Everything it makes is kept under ``--out`` (videos, store, runs, ``results.json``), and a re-run
reuses what is there (generation, extraction, runs and reports are all resumed or skipped).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vssl.aggregate import ScaleConfig, export, train
from vssl.demo.dataset import generate_dataset
from vssl.demo.run import DemoConfig
from vssl.extract.pipeline import extract
from vssl.probe import KnnConfig, LinearConfig, ProbeRequest, TransformerConfig, run_probes
from vssl.probe.compare import paired_difference
from vssl.probe.transformer import FinetuneConfig

TRAIN_VIEW, EVAL_VIEW = "random16", "uniform5x3"
ITEMS = ("knn-rule", "box-encoding", "mask-mode", "standardize")
BASELINE = {"box_encoding": "absolute", "mask_mode": "fixed"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare_store(out: Path, videos: int) -> Path:
    """The demo's videos and store, generated and extracted once (both resume)."""
    demo = DemoConfig()
    store = out / "store.zarr"
    manifest = generate_dataset(out / "videos", num_videos=videos, seed=0)
    extract(manifest, store, backbone=demo.backbone, views=[demo.train_views, demo.eval_views], frames=demo.frames,
            stride=demo.stride, size=demo.size, workers=0, seed=0, device="cpu", progress=False)
    return store


def scale_run(args, store: Path, seed: int, **settings) -> Path:
    """A SCALE run with the demo's architecture and ``settings`` (trained once, then reused)."""
    demo = DemoConfig()
    name = "_".join(f"{v}" for v in {**BASELINE, **settings}.values()) + f"_e{args.epochs}_s{seed}"
    run = args.out / "runs" / name
    cfg = ScaleConfig(epochs=args.epochs, batch_size=demo.batch_size, width=demo.width, pred_hidden=demo.pred_hidden,
                      target_hidden=demo.target_hidden, seed=seed, device="cpu", checkpoint_every=args.epochs,
                      **{**BASELINE, **settings})
    if not (run / "checkpoint.pt").exists():
        t = time.perf_counter()
        train(store, TRAIN_VIEW, run, cfg, quiet=True)
        log(f"trained {name} in {time.perf_counter() - t:.0f} s")
    export(store, run, EVAL_VIEW, device="cpu", quiet=True)
    return run


def trained(args, seed: int) -> dict:
    """Explicit training settings of every trained probe: a fixed budget of ``--probe-epochs``
    (no step floor), the same for both options of an item, independent of later defaults."""
    return dict(epochs=args.probe_epochs, device="cpu", precision="fp32", seed=seed, min_steps=0)


def probe(args, store: Path, name: str, seed: int = 0, **request) -> dict:
    """One probe report (cached as JSON under ``--out/reports``): {(probe, features): row}."""
    path = args.out / "reports" / f"{name}_p{args.probe_epochs}.json"
    if not path.exists():
        t = time.perf_counter()
        report = run_probes(ProbeRequest(store=store, view=EVAL_VIEW, seed=seed, quiet=True, **request))
        path.parent.mkdir(parents=True, exist_ok=True)
        report.write_json(path)
        rows = {f"{r.probe}/{r.features}": np.asarray(r.correct).reshape(-1).astype(int).tolist()
                for r in report.results}
        path.with_suffix(".hits.json").write_text(json.dumps(rows))
        log(f"probed {name} in {time.perf_counter() - t:.0f} s")
    doc = json.loads(path.read_text())
    hits = json.loads(path.with_suffix(".hits.json").read_text())
    return {f"{r['probe']}/{r['features']}": {**r, "hits": hits[f"{r['probe']}/{r['features']}"]}
            for r in doc["results"]}


def scale_rows(args, store: Path, run: Path, name: str, seed: int, **options) -> dict:
    """The SCALE rows of ``args.rows`` on one run (plus, with ``ft``, the Transformer: same config)."""
    request = {"scale_run": run}
    if "knn" in args.rows:
        request["knn"] = KnnConfig(device="cpu", rule=options.get("knn_rule"))
    if "linear" in args.rows:
        request["linear"] = LinearConfig(**trained(args, seed), lrs=(1e-3, 3e-3, 1e-2), weight_decays=(0.0, 1e-4),
                                         batch_size=256, solver="minibatch")
    if "ft" in args.rows:
        head = dict(**trained(args, seed), batch_size=16, standardize=options.get("standardize", True))
        request["finetune"] = FinetuneConfig(**head)
        if options.get("transformer"):
            request["transformer"] = TransformerConfig(**head)
    return probe(args, store, name, seed, **request)


def difference(rows_a: list[dict], rows_b: list[dict], a: str, b: str) -> dict:
    """Mean ± std over seeds of each option's top-1 and the paired 95% interval of a - b."""
    hits_a = np.array([r["hits"] for r in rows_a], bool)
    hits_b = np.array([r["hits"] for r in rows_b], bool)
    d = paired_difference(hits_a, hits_b, a, b)
    top_a, top_b = hits_a.mean(axis=1) * 100, hits_b.mean(axis=1) * 100
    per_seed = (top_a - top_b) if len(top_a) == len(top_b) else np.array([d.diff])
    return {"a": a, "b": b, "seeds": len(hits_a), "n_test": hits_a.shape[1],
            "diff_per_seed": per_seed.round(2).tolist(),
            "top1_a": float(top_a.mean()), "std_a": float(top_a.std(ddof=1)) if len(top_a) > 1 else 0.0,
            "top1_b": float(top_b.mean()), "std_b": float(top_b.std(ddof=1)) if len(top_b) > 1 else 0.0,
            "diff": d.diff, "low": d.low, "high": d.high, "method": d.method, "resolved": d.resolved,
            "better": d.better}


def run_rows(args, store: Path, seed: int, **settings) -> dict:
    """The SCALE rows (``--rows``) of one run."""
    run = scale_run(args, store, seed, **settings)
    return scale_rows(args, store, run, f"{run.name}_{'_'.join(args.rows)}", seed)


def compare_runs(args, store: Path, option: str, values: tuple[str, str]) -> list[dict]:
    """SCALE pretrained with each of ``values`` of ``option``, seed by seed; each row's difference."""
    per = {v: [] for v in values}
    for seed in range(args.seeds):
        for v in values:
            per[v].append(run_rows(args, store, seed, **{option: v}))
    rows = sorted(row for row in per[values[1]][0] if row in per[values[0]][0] and row.endswith("/scale"))
    return [{"row": row, **difference([r[row] for r in per[values[1]]], [r[row] for r in per[values[0]]],
                                      f"{option}={values[1]}", f"{option}={values[0]}")} for row in rows]


def knn_rule(args, store: Path) -> list[dict]:
    """dino vs released: the backbone's k-NN (training-free: one deterministic row each), and SCALE's
    on each baseline run; then SCALE − backbone under each rule (the comparison the rule decides)."""
    out, by_rule = [], {}
    for rule in ("dino", "released"):
        by_rule[rule] = [scale_rows(replace_rows(args, ("knn",)), store, scale_run(args, store, seed),
                                    f"knn_{rule}_e{args.epochs}_s{seed}", seed, knn_rule=rule)
                         for seed in range(args.seeds)]
    for features in ("backbone", "scale"):
        row = f"knn/{features}"
        a = [r[row] for r in by_rule["released"]][:1 if features == "backbone" else None]
        b = [r[row] for r in by_rule["dino"]][:1 if features == "backbone" else None]
        out.append({"row": row, **difference(a, b, "knn-rule=released", "knn-rule=dino")})
    for rule in ("dino", "released"):
        out.append({"row": f"knn scale - backbone ({rule})",
                    **difference([r["knn/scale"] for r in by_rule[rule]],
                                 [r["knn/backbone"] for r in by_rule[rule]], "SCALE k-NN", "backbone k-NN")})
    return out


def standardize(args, store: Path) -> list[dict]:
    """Transformer and SCALE_ft with vs without head-input standardisation, on each baseline run."""
    per = {flag: [scale_rows(replace_rows(args, ("ft",)), store, scale_run(args, store, seed),
                             f"ft_standardize{int(flag)}_e{args.epochs}_s{seed}", seed, standardize=flag,
                             transformer=True)
                  for seed in range(args.seeds)] for flag in (True, False)}
    rows = ("transformer/backbone", "scale_ft/scale")
    return [{"row": row, **difference([r[row] for r in per[False]], [r[row] for r in per[True]],
                                      "standardize=off", "standardize=on")} for row in rows]


def replace_rows(args, rows: tuple[str, ...]):
    return argparse.Namespace(**{**vars(args), "rows": rows})


def render(results: dict) -> str:
    lines = ["| item | row | option a | top-1 a (mean ± std) | option b | top-1 b | a − b [95% CI] | a − b per seed "
             "| seeds × test |", "|---|---|---|---|---|---|---|---|---|"]
    for item, rows in results["items"].items():
        for r in rows:
            lines.append(f"| {item} | {r['row']} | {r['a']} | {r['top1_a']:.1f} ± {r['std_a']:.1f} | {r['b']} | "
                         f"{r['top1_b']:.1f} ± {r['std_b']:.1f} | {r['diff']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}]"
                         f"{' *' if r['resolved'] else ''} | {', '.join(f'{v:+.1f}' for v in r['diff_per_seed'])} "
                         f"| {r['seeds']} × {r['n_test']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="work directory (kept; a re-run reuses it)")
    ap.add_argument("--videos", type=int, default=540, help="generated videos (30%% test)")
    ap.add_argument("--seeds", type=int, default=3, help="SCALE pretraining (and probe) seeds")
    ap.add_argument("--epochs", type=int, default=100, help="SCALE pretraining epochs")
    ap.add_argument("--probe-epochs", type=int, default=30, help="epochs of the trained probes")
    ap.add_argument("--items", default=",".join(ITEMS))
    ap.add_argument("--rows", default="knn,linear,ft", help="SCALE rows of box-encoding and mask-mode")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared machine)")
    args = ap.parse_args()
    args.rows = tuple(args.rows.split(","))
    torch.set_num_threads(args.threads)
    items = [i for i in args.items.split(",") if i]
    unknown = set(items) - set(ITEMS)
    if unknown:
        ap.error(f"unknown items {sorted(unknown)}; choose from {', '.join(ITEMS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    store = prepare_store(args.out, args.videos)
    log(f"store ready ({time.perf_counter() - t:.0f} s)")
    results = {"videos": args.videos, "seeds": args.seeds, "epochs": args.epochs, "probe_epochs": args.probe_epochs,
               "items": {}}
    for item in items:
        results["items"][item] = {"knn-rule": lambda: knn_rule(args, store),
                                  "box-encoding": lambda: compare_runs(args, store, "box_encoding",
                                                                       ("absolute", "released")),
                                  "mask-mode": lambda: compare_runs(args, store, "mask_mode", ("fixed", "bernoulli")),
                                  "standardize": lambda: standardize(args, store)}[item]()
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        log(f"{item} done")
    print(render(results))


if __name__ == "__main__":
    main()
