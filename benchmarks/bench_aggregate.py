"""Stage-two training throughput: our step vs an official-style step, fp32 and bf16, in one run.

The "official-style" step recomputes what the released SCALE code (Separius/SCALE,
src/scale.py + the body of train.py's loop) computes, written here independently: the
input projection of every clip (masked ones included), manual softmax attention, the
prediction head on *every* clip, the full (2BK) x (2BK) MCM logit matrix with a row
log-softmax, and only then the masked rows are kept; SET with two log-softmaxes. Our step is
`vssl.aggregate`'s training-loop body (resident batch gather, set sampling, forward,
backward, AdamW). Both run on identical weights and batches, interleaved round by round so a
noisy shared machine slows both alike; the table gives the best and the median wall time
per step, and the process CPU time per step (with --threads 1 the measure least disturbed by
other jobs, since time spent waiting for a core is not counted).

Also reported: FLOPs per step (torch's FlopCounterMode), this machine's measured GEMM FLOP/s
in fp32 and bf16, and the fraction of it each step reaches.

    python benchmarks/bench_aggregate.py                   # default model, D=768, B=512, 8+8 clips
    python benchmarks/bench_aggregate.py --videos 2000 --rounds 3 --batch-size 128   # quicker
    python benchmarks/bench_aggregate.py --losses 8        # fp32 vs bf16 losses after 8 epochs
    python benchmarks/bench_aggregate.py --train-epoch auto  # one epoch of the real loop, 10k videos
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vssl.aggregate import ScaleConfig, ScaleModel, sample_sets
from vssl.aggregate.data import ResidentFeed
from vssl.device import autocast
from vssl.aggregate.optim import lr_at, make_optimizer, param_groups
from vssl.features_store.synthetic import make_synthetic_store


# ----------------------------------------------------------------------------- the baseline


def _official_block(block, x: torch.Tensor) -> torch.Tensor:
    """Pre-norm block with explicit softmax attention (the released code's ViT block)."""
    b, n, c = x.shape
    attn = block.attn
    h = attn.heads
    q, k, v = attn.qkv(block.norm1(x)).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    probs = ((q @ k.transpose(-2, -1)) * (c // h) ** -0.5).softmax(dim=-1)
    probs = F.dropout(probs, attn.dropout, block.training)
    x = x + attn.proj_drop(attn.proj((probs @ v).transpose(1, 2).reshape(b, n, c)))
    return x + block.mlp(block.norm2(x))


def official_style_losses(model: ScaleModel, feats: torch.Tensor, boxes: torch.Tensor, set_size: int):
    """Dense computation as released: every clip projected and predicted, (2BK)^2 logits."""
    cfg = model.cfg
    b, k, d = feats.shape
    keep = torch.rand(b, k).argsort(dim=1)[:, : 2 * set_size]  # split_in_half
    x = feats.gather(1, keep[..., None].expand(-1, -1, d)).view(b, 2, set_size, d).float()
    y = boxes.gather(1, keep[..., None].expand(-1, -1, 7)).view(b, 2, set_size, 7)
    h = model.input_proj(x.view(2 * b, set_size, d))
    pos = model.box_mlp(y.view(2 * b, set_size, 7))
    mask = torch.rand(2 * b, set_size) < cfg.mask_ratio  # Bernoulli masking per clip
    h = torch.where(mask.unsqueeze(-1), model.msk_token.expand_as(h), h) + pos
    h = torch.cat((model.cls_token.expand(2 * b, -1, -1), h), dim=1)
    for block in model.blocks:
        h = _official_block(block, h)
    h = model.norm(h)
    z = F.normalize(model.set_head(h[:, 0]), dim=-1).view(b, 2, -1)
    logits = torch.einsum("nd,md->nm", z[:, 0], z[:, 1]) / cfg.set_temperature
    set_loss = (-torch.diag(torch.log_softmax(logits, 1)) - torch.diag(torch.log_softmax(logits, 0))).mean() * 0.5
    target = F.normalize(model.target_head(x), dim=-1).reshape(-1, cfg.proj_dim)
    pred = F.normalize(model.pred_head(h[:, 1:]), dim=-1).reshape(-1, cfg.proj_dim)
    dense = torch.einsum("nc,mc->nm", pred, target) / cfg.mcm_temperature
    flat = mask.view(-1)
    mcm_loss = -torch.masked_select(torch.diag(torch.log_softmax(dense, dim=1)), flat).mean()
    with torch.no_grad():
        _ = torch.masked_select(dense.argmax(1) == torch.arange(dense.shape[0]), flat).float().mean().item()
    return (set_loss + mcm_loss) / 2


# ----------------------------------------------------------------------------- steps


class Stepper:
    """One optimiser step of either implementation on a batch drawn from the resident view."""

    def __init__(self, kind: str, model: ScaleModel, source: ResidentFeed, cfg: ScaleConfig, precision: str,
                 set_size: int, num_masked: int) -> None:
        self.kind, self.model, self.source, self.cfg = kind, model, source, cfg
        self.precision, self.set_size, self.num_masked = precision, set_size, num_masked
        # the released loop uses the multi-tensor (foreach) AdamW; ours takes the fused kernel
        self.opt = (make_optimizer(model, cfg) if kind == "ours"
                    else torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, foreach=True))
        self.step_no = 0
        self.order = torch.randperm(len(source))

    def __call__(self) -> None:
        b = self.cfg.batch_size
        start = (self.step_no * b) % (len(self.source) - b + 1)
        idx = self.order[start:start + b]
        feats, boxes = self.source.features.index_select(0, idx), self.source.boxes.index_select(0, idx)
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step_no, 1000, self.cfg.lr, self.cfg.warmup)
        with autocast(torch.device("cpu"), self.precision):
            if self.kind == "ours":
                sets = sample_sets(b, feats.shape[1], self.set_size)
                loss = self.model.pretrain_losses(feats, boxes, sets, self.num_masked)["loss"]
            else:
                loss = official_style_losses(self.model, feats, boxes, self.set_size)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step_no += 1


def gemm_flops(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """Measured FLOP/s of one large square-ish GEMM in ``dtype`` (the machine's matmul ceiling)."""
    a, b = torch.randn(n, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n * 2048 * 2048 / best


def count_flops(stepper: Stepper) -> float:
    with FlopCounterMode(display=False) as counter:
        stepper()
    return float(counter.get_total_flops())


def compare_losses(epochs: int, videos: int, batch: int) -> None:
    """Train the default model on structured synthetic features in fp32 and in bf16 (same seed) and
    print the final metrics side by side: does the fast precision hurt the losses?"""
    from vssl.aggregate import train
    from vssl.aggregate.synthetic import structured_clip_features

    with tempfile.TemporaryDirectory() as tmp:
        feats, boxes = structured_clip_features(videos, 16, 768, seed=0, noise=0.5)
        make_synthetic_store(Path(tmp) / "s", feats, np.zeros(videos, int), ["train"] * videos, boxes=boxes)
        print(f"\nlosses after {epochs} epochs, default model, {videos} structured videos (D=768), batch {batch}:")
        print(f"{'precision':<10}{'loss':>9}{'L_MCM':>9}{'L_SET':>9}{'MCM top-1':>11}{'SET top-1':>11}{'videos/s':>10}")
        for precision in ("fp32", "bf16"):
            cfg = ScaleConfig(epochs=epochs, batch_size=batch, precision=precision, device="cpu")
            r = train(Path(tmp) / "s", "random16", Path(tmp) / precision, cfg, quiet=True)
            f = r.final
            print(f"{precision:<10}{f['loss']:>9.4f}{f['mcm_loss']:>9.4f}{f['set_loss']:>9.4f}"
                  f"{100 * f['mcm_top1']:>10.1f}%{100 * f['set_top1']:>10.1f}%{r.videos_per_s:>10.1f}")


def train_epoch(videos: int, clips: int, dim: int, batch: int, precision: str) -> None:
    """One epoch of the real `train()` (loop, metrics, checkpoint) at the default model settings."""
    from vssl.aggregate import train

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        feats = rng.standard_normal((videos, clips, dim), dtype=np.float32).astype(np.float16)
        make_synthetic_store(Path(tmp) / "s", feats, np.zeros(videos, int), ["train"] * videos)
        del feats
        cfg = ScaleConfig(epochs=1, batch_size=batch, precision=precision, device="cpu")
        r = train(Path(tmp) / "s", "random16", Path(tmp) / "run", cfg, quiet=True)
        print(f"train(): 1 epoch, {videos} videos, batch {batch}, {r.precision}: {r.videos_per_s:.1f} videos/s "
              f"({r.steps} steps, loss {r.final['loss']:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=10_000)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5, help="timed steps per variant (interleaved)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--losses", type=int, default=0, metavar="EPOCHS",
                    help="instead: train EPOCHS epochs in fp32 and bf16 and compare the losses")
    ap.add_argument("--train-epoch", metavar="PRECISION", default="",
                    help="instead: time one epoch of the real train() loop at PRECISION (auto, bf16, fp32)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.losses:
        compare_losses(args.losses, videos=1024, batch=128)
        return
    if args.train_epoch:
        train_epoch(args.videos, args.clips, args.dim, args.batch_size, args.train_epoch)
        return
    cfg = ScaleConfig(batch_size=args.batch_size)
    set_size, num_masked = cfg.resolve_set_size(args.clips), cfg.num_masked(cfg.resolve_set_size(args.clips))

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        feats = rng.standard_normal((args.videos, args.clips, args.dim), dtype=np.float32).astype(np.float16)
        store = make_synthetic_store(Path(tmp) / "store", feats, np.zeros(args.videos, int), ["train"] * args.videos)
        del feats
        view = store.view("random16")
        source = ResidentFeed(view, np.arange(args.videos), torch.device("cpu"))
        print(f"store: {args.videos} videos x {args.clips} clips x D={args.dim} float16 "
              f"({source.features.numel() * 2 / 2**20:.0f} MiB), built+loaded in {time.perf_counter() - t:.1f}s; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")

        torch.manual_seed(0)
        base = ScaleModel(cfg, args.dim)
        variants = {}
        for precision in ("fp32", "bf16"):
            for kind in ("official-style", "ours"):
                variants[(kind, precision)] = Stepper(kind, copy.deepcopy(base), source, cfg, precision,
                                                      set_size, num_masked)
        flops = {key: count_flops(s) for key, s in variants.items() if key[1] == "fp32"}
        for s in variants.values():  # warm-up (allocator, oneDNN primitive caches)
            s()
        times: dict = {key: [] for key in variants}
        cpu: dict = {key: [] for key in variants}
        for _ in range(args.rounds):
            for key, s in variants.items():
                t, c = time.perf_counter(), time.process_time()
                s()
                times[key].append(time.perf_counter() - t)
                cpu[key].append(time.process_time() - c)
        peak = {"fp32": gemm_flops(torch.float32), "bf16": gemm_flops(torch.bfloat16)}

    b = args.batch_size
    best = {key: min(v) for key, v in times.items()}  # least disturbed by other jobs on a shared machine
    med = {key: statistics.median(v) for key, v in times.items()}
    print(f"\nbatch {b} videos, sets {set_size}+{set_size} clips, {num_masked} masked per set, model width "
          f"{cfg.width} x {cfg.layers} layers; best (median) of {args.rounds} interleaved steps per variant\n")
    print("| variant | s/step best (median) | videos/s | GFLOP/step | % of GEMM peak | vs official-style, "
          "wall best (median) | CPU s/step | vs official-style, CPU time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    cpu_best = {key: min(v) for key, v in cpu.items()}
    for (kind, precision), sec in best.items():
        gf = flops[(kind, "fp32")] / 1e9
        frac = flops[(kind, "fp32")] / sec / peak[precision]
        print(f"| {kind} {precision} | {sec:.3f} ({med[(kind, precision)]:.3f}) | {b / sec:.1f} | {gf:.1f} | "
              f"{100 * frac:.1f}% | {best[('official-style', precision)] / sec:.2f}x "
              f"({med[('official-style', precision)] / med[(kind, precision)]:.2f}x) | {cpu_best[(kind, precision)]:.3f} | "
              f"{cpu_best[('official-style', precision)] / cpu_best[(kind, precision)]:.2f}x |")
    print(f"\nmachine GEMM (4096x2048 @ 2048x2048): fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s ({peak['bf16'] / peak['fp32']:.1f}x)")
    print(f"ours bf16 (the CPU default here) vs official-style fp32 (as released): "
          f"{best[('official-style', 'fp32')] / best[('ours', 'bf16')]:.2f}x "
          f"({med[('official-style', 'fp32')] / med[('ours', 'bf16')]:.2f}x median)")


if __name__ == "__main__":
    main()
