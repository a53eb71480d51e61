"""Conv backbones in NCHW vs channels-last vs channels-last + bf16, side by side in one run.

    python benchmarks/bench_memory_format.py [--size 128] [--batch 32] [--threads 2]

Prints frames/s of EfficientNet-Lite0's image trunk in each layout and the ratios to plain
fp32 NCHW (the figures in docs/PERFORMANCE.md come from this script).
"""

from __future__ import annotations

import argparse
import time

import torch

from vssl.device import autocast
from vssl.extract.backbones import create_backbone


def frames_per_s(fn, batch: int, repeats: int = 6) -> float:
    fn()  # warm-up (oneDNN picks kernels on the first call)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return repeats * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    trunk = create_backbone("efficientnet-lite0").encoder.eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    cpu = torch.device("cpu")
    with torch.inference_mode():
        plain = frames_per_s(lambda: trunk(x), args.batch)
        with autocast(cpu, "bf16"):
            plain_bf16 = frames_per_s(lambda: trunk(x), args.batch)
        trunk = trunk.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        last = frames_per_s(lambda: trunk(xc), args.batch)
        with autocast(cpu, "bf16"):
            bf16 = frames_per_s(lambda: trunk(xc), args.batch)
    print(f"EfficientNet-Lite0 {args.size}px, batch {args.batch}, {args.threads} threads (frames/s):")
    print(f"  fp32 NCHW           {plain:7.0f}  1.00x")
    print(f"  fp32 channels_last  {last:7.0f}  {last / plain:.2f}x")
    print(f"  bf16 NCHW           {plain_bf16:7.0f}  {plain_bf16 / plain:.2f}x")
    print(f"  bf16 channels_last  {bf16:7.0f}  {bf16 / plain:.2f}x")


if __name__ == "__main__":
    main()
