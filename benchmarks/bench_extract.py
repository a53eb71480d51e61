"""End-to-end extraction rate with `tiny`, next to decode-only and model-only rates of the same clips.

decode-only: decode + sample + crop/resize every video's clips (what the DataLoader workers do);
model-only:  normalize + backbone on as many uint8 clips, same batch size (what the main process does);
end-to-end:  `vssl.extract.pipeline.extract` into a fresh store (includes store writes).
With workers=0 everything runs serially in one process, so end-to-end should be close to
decode + model (goal: within 1.2x). With --workers N (and on a GPU) decoding overlaps with
the model and end-to-end approaches max(decode, model) instead of the sum.

    python benchmarks/bench_extract.py [--views uniform:5x3] [--workers 0] [--repeat 3] [VIDEO_DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vssl.extract.backbones import create_backbone  # noqa: E402
from vssl.extract.clips import cut_video  # noqa: E402
from vssl.extract.inputs import collect_inputs  # noqa: E402
from vssl.extract.embedding import Batcher  # noqa: E402
from vssl.extract.pipeline import extract  # noqa: E402
from vssl.extract.samplers import parse_views  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("videos", nargs="?", default=str(REPO.parent / "shared" / "data" / "videos"))
    ap.add_argument("--views", default="uniform:5x3")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3, help="copies of each video (more work per run)")
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "videos"
        for r in range(args.repeat):
            for f in sorted(Path(args.videos).iterdir()):
                (src / f"copy{r}").mkdir(parents=True, exist_ok=True)
                shutil.copy(f, src / f"copy{r}" / f.name)
        inputs = collect_inputs(src)
        model = create_backbone("tiny")
        views = parse_views(args.views, frames=model.spec.frames, stride=model.spec.stride, size=model.spec.size)

        def decode_only():
            out = []
            for v in inputs.videos:
                out.extend(cut_video(inputs.resolve(v), views, v.path).clips.values())
            return out

        batcher = Batcher(model, torch.device("cpu"), "fp32", args.batch_size)

        def model_only():
            for k in range(0, n_clips, args.batch_size):
                batcher.forward(allc[k:k + args.batch_size])

        def end_to_end(run=[0]):  # noqa: B006 - a fresh store per call
            run[0] += 1
            s = extract(inputs, Path(tmp) / f"store{run[0]}", views=args.views, workers=args.workers,
                        batch_size=args.batch_size, progress=False, device="cpu")
            assert s.clips == n_clips and s.failed == 0

        clips = decode_only()  # warm-up (file cache, decoder libraries); also gives the clips
        n_clips = sum(c.shape[0] for c in clips)
        allc = torch.cat(clips)
        times = {"decode": [], "model": [], "e2e": []}
        for _ in range(2):  # interleaved, best of two: the machine is shared
            for key, fn in (("decode", decode_only), ("model", model_only), ("e2e", end_to_end)):
                t = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t)
        t_decode, t_model, t_e2e = (min(times[k]) for k in ("decode", "model", "e2e"))

    print(f"{len(inputs.videos)} videos, {n_clips} clips ({args.views}, tiny {model.spec.frames}x{model.spec.stride} "
          f"@{model.spec.size}px), batch {args.batch_size}, workers {args.workers}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'stage':26} {'seconds':>8} {'clips/s':>9}")
    for name, sec in [("decode-only", t_decode), ("model-only", t_model), ("decode + model (sum)", t_decode + t_model),
                      ("end-to-end extract", t_e2e)]:
        print(f"{name:26} {sec:8.2f} {n_clips / sec:9.1f}")
    print(f"end-to-end / (decode + model) = {t_e2e / (t_decode + t_model):.2f}")


if __name__ == "__main__":
    main()
