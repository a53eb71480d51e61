"""Clips/s of a VideoMAE ViT-B (random weights) in fp32 and bf16 autocast, and the share of the
machine's own matmul FLOP/s that reaches the model.

The model's FLOPs are counted analytically (multiply-add = 2 FLOPs; patch embedding, qkv,
attention scores and weighted sum, projection, MLP), the machine's peak is a large square
matmul timed in the same run and the same precision, so the "efficiency" column compares
like with like on whatever machine runs it.

    python benchmarks/bench_backbones.py [--batches 1,4,8] [--frames 16] [--size 224] [--repeat 3]
                                         [--device auto] [--write-doc]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harness import machine, markdown_table, timeit, write_section  # noqa: E402
from vssl.extract.backbones.video_vit import VIDEOMAE_SPEC, VideoViT  # noqa: E402
from vssl.extract.backbones.vit_layers import ViTShape  # noqa: E402

VIT_B = ViTShape(embed_dim=768, depth=12, num_heads=12, mlp_hidden=3072, qkv_bias="qv")


def vit_flops(shape: ViTShape, frames: int, size: int, tubelet: int = 2, patch: int = 16) -> float:
    """FLOPs of one clip through the video ViT (matmuls only; norms/softmax/GELU are < 1%)."""
    n = (frames // tubelet) * (size // patch) ** 2
    d, h = shape.embed_dim, shape.mlp_hidden
    embed = 2 * n * (3 * tubelet * patch * patch) * d
    per_block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * h
    return embed + shape.depth * per_block


def matmul_flops_per_s(dtype: torch.dtype, device: torch.device, n: int = 2048, repeat: int = 5) -> float:
    """The machine's attainable matmul rate: the best of ``repeat`` timings (a peak, so the best)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def run():
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()
    return max(2 * n ** 3 / timeit(run, repeat=1, warmup=0) for _ in range(repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--write-doc", action="store_true", help="update the backbones section of docs/PERFORMANCE.md")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.manual_seed(0)
    model = VideoViT(VIT_B, VIDEOMAE_SPEC, final_norm=False, fc_norm=True).to(device).freeze()
    flops = vit_flops(VIT_B, args.frames, args.size)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        clips = torch.randn(batch, 3, args.frames, args.size, args.size, device=device)
        for precision in ("fp32", "bf16"):
            def run():
                with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                            enabled=precision == "bf16"):
                    model(clips)
                if device.type == "cuda":
                    torch.cuda.synchronize()

            # The peak is re-measured right before and after each model timing: on a shared machine the
            # load changes over minutes, and the ratio must compare like with like.
            before = matmul_flops_per_s(dtypes[precision], device)
            seconds = timeit(run, repeat=args.repeat, warmup=1)
            peak = max(before, matmul_flops_per_s(dtypes[precision], device))
            rate = batch / seconds
            rows.append([batch, precision, rate, rate * flops / 1e9, peak / 1e9, rate * flops / peak])
            print(f"batch {batch} {precision}: {rate:.3g} clips/s", file=sys.stderr, flush=True)
    fp32 = {r[0]: r[2] for r in rows if r[1] == "fp32"}
    for r in rows:
        r.insert(3, r[2] / fp32[r[0]])
    header = ["batch", "precision", "clips/s", "vs fp32", "model GFLOP/s", "matmul GFLOP/s", "share of matmul peak"]
    table = markdown_table(header, rows)
    print(table)
    print(f"\nViT-B/16 video, {args.frames}x{args.size}: {flops / 1e9:.1f} GFLOPs per clip; {device}; {machine()}")
    if args.write_doc:
        cmd = f"python benchmarks/bench_backbones.py --batches {args.batches} --frames {args.frames} --size {args.size}"
        write_section("backbones", f"""## Backbones: video ViT-B throughput, fp32 vs bf16

`{cmd} --write-doc` — VideoMAE ViT-B/16 (random weights, {flops / 1e9:.1f} GFLOPs per {args.frames}x{args.size} clip,
counted analytically), `torch.inference_mode`, bf16 via `torch.autocast`; "matmul GFLOP/s" is a
2048x2048 matmul (best of 5) timed in the same precision right before and after each row (load average at the start:
{os.getloadavg()[0]:.1f}); {device}, {machine()}.

{table}
""")


if __name__ == "__main__":
    main()
