"""Token views hold the encoder's tokens at their own width, which is not always the embedding's: CLIP embeds
a clip as the projection of its class token (``out_dim``) while its patch tokens keep the transformer's width,
and ``efficientnet-lite0-frames`` embeds a clip as its frames' vectors concatenated while its map's tokens are
one frame's width."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import vssl
from tests.token_helpers import numpy_pool
from tests.videos import write_video
from vssl.extract.backbones.clip import CLIP_SPEC, CLIPVision
from vssl.extract.backbones.per_frame import PerFrame
from vssl.extract.pipeline import extract
from vssl.features_store import FeatureStore
from vssl.features_store.verify import verify_store

pytestmark = pytest.mark.usefixtures("one_thread")

#: CLIP at 2 frames of 32 px, 16 px patches: a 2 x 2 x 2 token grid, tokens 64 wide, embedding 16 wide
WIDTH, OUT = 64, 16
SETTINGS = dict(views="uniform:1x1", device="cpu", precision="fp32", dtype="float32", progress=False)


class RecordingCLIP(PerFrame):
    """A random per-frame CLIP that keeps the clips its ``forward_tokens`` sees (the last call's are a batch's)."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        spec = dataclasses.replace(CLIP_SPEC, frames=2, stride=1, size=32)
        encoder = CLIPVision(spec, width=WIDTH, depth=2, num_heads=2, mlp_hidden=128, out_dim=OUT, patch=16, grid=2)
        torch.nn.init.normal_(encoder.proj, std=0.1)
        super().__init__(encoder)
        self.seen: list[torch.Tensor] = []

    def forward_tokens(self, clips: torch.Tensor, layers: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        self.seen.append(clips.detach().clone())
        return super().forward_tokens(clips, layers)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("width_videos")
    write_video(root / "a" / "v0.mp4", 20)
    return root


def reference_tokens(model: RecordingCLIP, cells: tuple[int, int, int]) -> np.ndarray:
    """numpy: the model's own token grid of the clip it last embedded, pooled to ``cells``."""
    with torch.inference_mode():
        grid = model.forward_tokens(model.seen[-1])[0][1]
    return numpy_pool(grid.double().numpy(), cells)


def test_clip_token_view_holds_the_transformer_width_not_the_projection(video, tmp_path):
    model = RecordingCLIP().eval()
    assert model.embed_dim == OUT
    s = extract(video, tmp_path / "s", model=model, tokens="1x2x1", **SETTINGS)
    assert s.done == 1
    want = reference_tokens(model, (1, 2, 1))  # (1 clip, 2 cells, WIDTH)
    store = FeatureStore.open(tmp_path / "s")
    view = store.view("uniform1x1.tokens1x2x1")
    assert view.clip_shape == (2, WIDTH) and store.view("uniform1x1").clip_shape == (OUT,)
    np.testing.assert_allclose(view.read(np.array([0])).features[0], want, atol=1e-5)
    assert verify_store(store) == []
    # embed gives the same rows, and the full grid at the same width
    r = vssl.embed(video, model=RecordingCLIP().eval(), tokens="full", **SETTINGS)[0]
    assert r.error is None and r.features["uniform1x1.tokens2x2x2"].shape == (1, 8, WIDTH)
    assert r.features["uniform1x1"].shape == (1, OUT)


def test_kept_frames_token_view_is_one_frames_width(video, tmp_path):
    frames = 8  # the family's frames, kept side by side in the embedding
    settings = dict(backbone="efficientnet-lite0-frames", size=32, tokens="1x1x1", **SETTINGS)
    r = vssl.embed(video, **settings)[0]
    assert r.error is None
    pooled, token = r.features["uniform1x1"], r.features["uniform1x1.tokens1x1x1"]
    assert pooled.shape == (1, 1280 * frames) and token.shape == (1, 1, 1280)
    # the one cell averages every frame's map: the mean of the frames' (average-pooled) vectors
    np.testing.assert_allclose(token[0, 0], pooled[0].reshape(frames, 1280).mean(axis=0), rtol=1e-4, atol=1e-5)
    extract(video, tmp_path / "s", **settings)
    store = FeatureStore.open(tmp_path / "s")
    assert store.view("uniform1x1.tokens1x1x1").clip_shape == (1, 1280)
    assert store.view("uniform1x1").clip_shape == (1280 * frames,)
    assert verify_store(store) == []
