"""Stage one's speed goal: the default `vssl extract`, end to end, against the backbone run the plain way.

    python benchmarks/bench_extract_goal.py [--videos 24] [--workers 0,1] [--vit-clips 8] [--skip-vit]

Two measurements, each side by side in one run (rows interleaved, best of ``--rounds``):

EfficientNet-Lite0 (ImageNet weights, per frame, 4 frames at 128 px, extract's default views
``uniform:5x3``) on UCF-101-like videos (generated: 240-320 px, 25 fps, 6-8 s, H.264):
  decode-only       decode + crop of the same clips in one process (what bounds the run when the
                    model is fast);
  plain model-only  the same module the plain way: fp32, NCHW, ``inference_mode``, on the clips already
                    decoded and normalised (what a user would time first);
  default e2e       ``extract()`` with its defaults (``--precision auto``, channels-last) into a fresh
                    store: decode + crop + model + store writes. Goal: >= 1.8x the plain model-only rate.

VideoMAE ViT-B (random weights saved as a checkpoint, 16x4 at 224 px, ``uniform:2x1``):
  model-only bf16   normalise + backbone under bf16 autocast on decoded clips;
  default e2e       ``extract(--checkpoint ...)``, decoding overlapped with the model (the decode-ahead
                    thread of ``--workers 0``, or worker processes). Goal: within 1.1x of model-only bf16.

Rates are clips/s. The machine is whatever runs this: the ratios are the result.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vssl.demo.dataset import generate_dataset  # noqa: E402
from vssl.device import resolve_precision  # noqa: E402
from vssl.extract.backbones import create_backbone  # noqa: E402
from vssl.extract.backbones.base import Backbone  # noqa: E402
from vssl.extract.clips import cut_video  # noqa: E402
from vssl.extract.config import ExtractConfig  # noqa: E402
from vssl.extract.inputs import collect_inputs  # noqa: E402
from vssl.extract.embedding import Batcher  # noqa: E402
from vssl.extract.pipeline import extract  # noqa: E402
from vssl.extract.samplers import parse_views  # noqa: E402
from vssl.extract.transforms import normalize  # noqa: E402


def plain(model: Backbone) -> Backbone:
    """``model`` as a user's first try would run it: contiguous NCHW weights and inputs, fp32."""
    for module in model.modules():
        if isinstance(module, Backbone):
            module.memory_format = None  # instance attribute: Backbone.forward leaves inputs as they are
    return model.to(memory_format=torch.contiguous_format)


def decoded_clips(inputs, views, limit: int | None = None) -> torch.Tensor:
    clips = []
    for v in inputs.videos:
        clips.extend(cut_video(inputs.resolve(v), views, v.path).clips.values())
    x = torch.cat(clips)
    return x[:limit] if limit else x


def best(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Seconds of each function, interleaved, best of ``rounds`` (the machine may be shared)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


def model_only(model: Backbone, clips: torch.Tensor, batch: int, precision: str, mean, std) -> Callable[[], None]:
    batcher = Batcher(model, torch.device("cpu"), precision, batch, (mean, std))

    def run() -> None:
        for k in range(0, clips.shape[0], batch):
            batcher.forward(clips[k:k + batch])
    return run


def plain_model_only(model: Backbone, clips: torch.Tensor, batch: int, mean, std) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            for k in range(0, clips.shape[0], batch):
                model(normalize(clips[k:k + batch], mean, std))
    return run


def end_to_end(inputs, tmp: Path, views: str, workers: int, batch: int, n_clips: int, **kw) -> Callable[[], None]:
    runs = [0]

    def run() -> None:
        runs[0] += 1
        s = extract(inputs, tmp / f"store-{kw['backbone']}-{workers}-{runs[0]}", views=views, workers=workers, batch_size=batch,
                    progress=False, device="cpu", **kw)
        assert s.clips == n_clips and s.failed == 0, (s.clips, n_clips, s.failures[:1])
    return run


def efficientnet(args, tmp: Path) -> None:
    manifest = generate_dataset(tmp / "ucf-like", num_videos=args.videos, seed=0, frames=(150, 200),
                                sizes=(240, 320))
    inputs = collect_inputs(manifest)
    shape = dict(frames=4, stride=8, size=128)
    views = args.views
    fast = create_backbone("efficientnet-lite0", **shape)
    slow = plain(create_backbone("efficientnet-lite0", **shape))
    mean, std = fast.spec.mean, fast.spec.std
    clips = decoded_clips(inputs, parse_views(views, **shape))
    n = clips.shape[0]
    auto = resolve_precision("auto", torch.device("cpu"))
    fns = {"decode-only (decode + crop, 1 process)": lambda: decoded_clips(inputs, parse_views(views, **shape)),
           "plain model-only (fp32, NCHW)": plain_model_only(slow, clips, args.batch_size, mean, std),
           f"model-only (default: {auto}, channels-last)": model_only(fast, clips, args.batch_size, auto, mean, std)}
    for w in args.workers:
        fns[f"default e2e, workers {w}"] = end_to_end(inputs, tmp, views, w, args.batch_size, n,
                                                      backbone="efficientnet-lite0", **shape)
    report(f"EfficientNet-Lite0, {len(inputs.videos)} videos, {n} clips of 4x128 px ({views}), batch {args.batch_size}",
           best(fns, args.rounds), n, "plain model-only (fp32, NCHW)", goal=1.8)


def vit_b(args, tmp: Path) -> None:
    from vssl.extract.backbones.video_vit import VIDEOMAE_SPEC, VideoViT
    from vssl.extract.backbones.vit_layers import ViTShape

    ckpt = tmp / "videomae-vitb-random.pth"
    model = VideoViT(ViTShape(embed_dim=768, depth=12, num_heads=12, mlp_hidden=3072, qkv_bias="qv"), VIDEOMAE_SPEC)
    torch.save({"model": model.state_dict()}, ckpt)
    del model
    manifest = generate_dataset(tmp / "ucf-like-vit", num_videos=max(1, args.vit_clips // 2), seed=1,
                                frames=(150, 200), sizes=(240, 320))
    inputs = collect_inputs(manifest)
    views = "uniform:2x1"
    vit = create_backbone("videomae", checkpoint=ckpt)
    spec = vit.spec
    clips = decoded_clips(inputs, parse_views(views, frames=spec.frames, stride=spec.stride, size=spec.size))
    n = clips.shape[0]
    fns = {"model-only bf16": model_only(vit, clips, args.vit_batch, "bf16", spec.mean, spec.std)}
    for w in args.workers:
        fns[f"default e2e, workers {w}"] = end_to_end(inputs, tmp, views, w, args.vit_batch, n,
                                                      backbone="videomae", checkpoint=str(ckpt))
    report(f"VideoMAE ViT-B, {len(inputs.videos)} videos, {n} clips of 16x224 px, batch {args.vit_batch}",
           best(fns, args.rounds), n, "model-only bf16", goal=None)


def report(title: str, seconds: dict[str, float], n: int, reference: str, goal: float | None) -> None:
    ref = n / seconds[reference]
    print(f"\n{title}; torch threads {torch.get_num_threads()}")
    print(f"| {'row':44} | clips/s | vs {reference} |")
    for name, sec in seconds.items():
        rate = n / sec
        print(f"| {name:44} | {rate:7.2f} | {rate / ref:.2f}x |")
    if goal:
        print(f"goal: default e2e >= {goal}x {reference}")
    else:
        print(f"goal: {reference} / default e2e <= 1.1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--views", default=ExtractConfig().views, help="EfficientNet-Lite0's views (default: extract's)")
    ap.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--vit-clips", type=int, default=8)
    ap.add_argument("--vit-batch", type=int, default=4)
    ap.add_argument("--skip-vit", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        efficientnet(args, Path(tmp))
        if not args.skip_vit:
            vit_b(args, Path(tmp))


if __name__ == "__main__":
    main()
