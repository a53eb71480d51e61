"""One training step of the attentive probe on cached tokens vs the same step recomputing the encoder.

    python benchmarks/bench_attentive_step.py [--batches 2] [--steps 2] [--grids full,2x4x4]
                                              [--frames 16] [--size 224] [--write-doc]

The released protocol (vjepa2 ``evals/video_classification_frozen/eval.py``) runs the frozen encoder
under ``no_grad`` at every step, then the probe forward, backward and AdamW step. vssl caches the
encoder's tokens once (``vssl extract --tokens``) and trains on them. Both are measured here, each in
one run: the step times of all modes in one process, their steps interleaved (the same machine load for
each), and each mode's memory in a fresh process of its own (so its peak RSS is its own):

- ``recompute``: a VideoMAE-shaped ViT-B/16 (random weights) on a batch of clips of ``frames x size``,
  then the step on its ``full`` token grid (8x14x14 = 1568 tokens of 768 for 16x224), as released;
- ``cached <grid>``: the same step on tokens read as cached (float16 -> float32), at each grid of
  ``--grids`` (``full``: the encoder's own; ``T'xH'xW'``: average-pooled as ``--tokens`` stores them).

The probe is :class:`AttentiveClassifier` as released (depth 4, 16 heads, width 768, 174 classes,
SSv2's). Reported: the median step time after one warm-up round (``--steps`` steps on the full grid,
6 a round on pooled ones, which are cheap and noisier), the ratio to ``recompute``, and
the resident memory after a warm-up step (weights, gradients, AdamW's state, inputs), the peak
during one more step above it (activations, and the encoder's work in ``recompute``; Linux
``/proc/self/clear_refs`` resets the peak, ``VmHWM`` reads it), and the whole process's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harness import machine, markdown_table, write_section  # noqa: E402

WIDTH, HEADS, DEPTH, CLASSES = 768, 16, 4, 174
#: steps a round on pooled grids (a step there costs ~1 s and varies most with the machine's load)
POOLED_STEPS = 6


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Restart VmHWM from the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def grid_of(spec: str, frames: int, size: int) -> tuple[int, int, int]:
    """The token grid of ``spec`` (``full``: the encoder's, tubelet 2 and patch 16)."""
    full = (frames // 2, size // 16, size // 16)
    return full if spec == "full" else tuple(int(v) for v in spec.split("x"))


def make_step(mode: str, args: argparse.Namespace) -> Callable[[], float]:
    """One training step of ``mode`` (``recompute`` or a cached grid) with its own probe and AdamW;
    calling it returns the seconds spent in the encoder (0 on cached tokens)."""
    from vssl.probe.attentive_pooler import AttentiveClassifier

    torch.manual_seed(0)
    probe = AttentiveClassifier(WIDTH, CLASSES, num_heads=HEADS, depth=DEPTH)
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-4, weight_decay=0.01)
    labels = torch.randint(0, CLASSES, (args.batch,))
    if mode == "recompute":
        from vssl.extract.backbones.video_vit import VIDEOMAE_SPEC, VideoViT
        from vssl.extract.backbones.vit_layers import ViTShape

        shape = ViTShape(embed_dim=WIDTH, depth=12, num_heads=12, mlp_hidden=4 * WIDTH, qkv_bias="qv")
        encoder = VideoViT(shape, VIDEOMAE_SPEC, final_norm=False, fc_norm=True).freeze()
        clips = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    else:
        cached = torch.randn(args.batch, tokens_count(mode, args), WIDTH).half()

    def step() -> float:
        t0 = time.perf_counter()
        if mode == "recompute":
            with torch.no_grad():
                tokens = encoder.forward_features(clips)
        else:
            tokens = cached.float()
        encoder_s = time.perf_counter() - t0 if mode == "recompute" else 0.0
        loss = torch.nn.functional.cross_entropy(probe(tokens), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return encoder_s

    return step


def timing(modes: list[str], args: argparse.Namespace) -> list[dict]:
    """Step times of every mode in one process, their steps interleaved round by round: a shared
    machine's load moves within minutes, and interleaving gives each mode the same load.
    Round 0 is the warm-up (AdamW's state, the allocator); pooled grids take several steps a round."""
    steps = {mode: make_step(mode, args) for mode in modes}
    times: dict[str, list[float]] = {m: [] for m in modes}
    encoder: dict[str, list[float]] = {m: [] for m in modes}
    for round_ in range(args.steps + 1):
        for mode in modes:
            for _ in range(1 if tokens_count(mode, args) == full_tokens(args) else POOLED_STEPS):
                t0 = time.perf_counter()
                encoder_s = steps[mode]()
                if round_:
                    times[mode].append(time.perf_counter() - t0)
                    encoder[mode].append(encoder_s)
    return [{"mode": m, "tokens": tokens_count(m, args), "seconds": statistics.median(times[m]),
             "encoder_seconds": statistics.median(encoder[m])} for m in modes]


def memory(mode: str, args: argparse.Namespace) -> dict:
    """Resident memory of ``mode`` alone in this process: after a warm-up step, and the peak of one more."""
    step = make_step(mode, args)
    step()
    steady_mb = _status_mb("VmRSS")        # weights, gradients, optimizer state, inputs
    reset = _reset_peak()
    step()
    peak = _status_mb("VmHWM")
    return {"mode": mode, "steady_mb": steady_mb, "step_peak_mb": peak - steady_mb if reset else float("nan"),
            "process_peak_mb": peak}


def full_tokens(args: argparse.Namespace) -> int:
    t, h, w = grid_of("full", args.frames, args.size)
    return t * h * w


def tokens_count(mode: str, args: argparse.Namespace) -> int:
    t, h, w = grid_of("full" if mode == "recompute" else mode, args.frames, args.size)
    return t * h * w


def run_child(job: str, batch: int, args: argparse.Namespace):
    """``job`` (``timing:MODE,MODE..`` or ``memory:MODE``) in a fresh process: its peak RSS is its own."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, __file__, "--child", job, "--batch", str(batch), "--steps", str(args.steps),
           "--frames", str(args.frames), "--size", str(args.size)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(batch: int, args: argparse.Namespace) -> list[dict]:
    """Every mode's row at one batch size: times from one interleaved process, memory from one process each."""
    modes = ["recompute", *args.grids.split(",")]
    rows = run_child("timing:" + ",".join(modes), batch, args)
    return [{"batch": batch, **row, **run_child(f"memory:{row['mode']}", batch, args)} for row in rows]


def report(rows: list[dict], args: argparse.Namespace, load: float) -> str:
    base = {r["batch"]: r for r in rows if r["mode"] == "recompute"}
    mb = lambda v: round(v) if v == v else "n/a"  # noqa: E731 - NaN where the kernel cannot reset the peak
    table = [[r["batch"], r["mode"] if r["mode"] == "recompute" else f"cached {r['mode']}", r["tokens"],
              r["seconds"], r["encoder_seconds"], base[r["batch"]]["seconds"] / r["seconds"], mb(r["steady_mb"]),
              mb(r["step_peak_mb"]), mb(r["process_peak_mb"])]
             for r in rows]
    header = ["batch", "step", "tokens per video", "s per step", "of which encoder (s)", "speed-up vs recompute",
              "steady RSS MB", "step peak above steady MB", "process peak MB"]
    return "\n".join([
        "## Attentive probe: cached tokens vs recomputing the encoder",
        "",
        f"`python benchmarks/bench_attentive_step.py --batches {args.batches} --steps {args.steps} "
        f"--grids {args.grids} --write-doc` — one AdamW step (forward, backward, update) of "
        f"`AttentiveClassifier` (depth {DEPTH}, {HEADS} heads, width {WIDTH}, {CLASSES} classes) on a batch of "
        f"videos of one {args.frames}x{args.size} clip each; `recompute` runs a VideoMAE-shaped "
        "ViT-B/16 (random weights, `no_grad`, fp32) first, as the released eval does; `cached` reads the "
        "tokens as stored (float16). Median of the steps after a warm-up round, the modes' steps interleaved "
        "in one process; memory: each mode alone in a fresh process, one step after a warm-up step "
        f"(load average at the start: {load:.1f}); {machine()}.",
        "",
        markdown_table(header, table),
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="2", help="batch sizes to time, comma-separated")
    ap.add_argument("--batch", type=int, default=2, help=argparse.SUPPRESS)  # a child's batch
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--grids", default="full,2x4x4", help="cached token grids to time (full or T'xH'xW')")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--write-doc", action="store_true",
                    help="update the attentive-step section of docs/PERFORMANCE.md")
    args = ap.parse_args()
    if args.child:
        job, arg = args.child.split(":", 1)
        print(json.dumps(timing(arg.split(","), args) if job == "timing" else memory(arg, args)))
        return
    load = os.getloadavg()[0]
    rows = [row for batch in args.batches.split(",") for row in measure(int(batch), args)]
    text = report(rows, args, load)
    print(text)
    if args.write_doc:
        write_section("attentive_step", text)


if __name__ == "__main__":
    main()
