"""VideoMAE V2 (OpenGVLab/VideoMAEv2) through the videomae family, on its released key layout at tiny width.

What differs from VideoMAE v1 files, from VideoMAEv2's ``models/modeling_finetune.py`` /
``modeling_pretrain.py`` and ``run_class_finetuning.py``: ViT-g's 14-px patches in the Conv3d tubelet
embedding, MLP ratio 48/11, ``q_bias``/``v_bias``, ``fc_norm`` with no ``norm`` weights (``nn.Identity``
under mean pooling), a 710-way ``head``, the ``module`` container (``model|module`` is its loader's
default), ``backbone.``-prefixed keys that its loader strips, and pretrain files with ``encoder.norm``
next to the decoder. Reference: transformers' VideoMAE on the same weights.
"""

from __future__ import annotations

import pytest
import torch

from tests.backbone_helpers import TOL, hf_videomae_to_mcg, randomize_, rel_err
from vssl.extract.backbones import InputSpec, create_backbone
from vssl.extract.backbones.video_vit import VideoViT

transformers = pytest.importorskip("transformers")

DEPTH, DIM, HEADS, FRAMES, PATCH, SIZE = 2, 128, 2, 4, 14, 42
MLP = int(DIM * 48 / 11)  # ViT-g's ratio


def _config(**kw):
    cfg = dict(image_size=SIZE, patch_size=PATCH, num_frames=FRAMES, tubelet_size=2, hidden_size=DIM,
               num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=MLP, layer_norm_eps=1e-6,
               num_labels=710)
    return transformers.VideoMAEConfig(**(cfg | kw))


@pytest.fixture(scope="module")
def clips():
    return torch.randn(2, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def finetuned_ref(clips):
    """VideoMAEv2's finetuned embedding ``fc_norm(mean(tokens))`` (its fc_norm eps is 1e-6)."""
    model = randomize_(transformers.VideoMAEForVideoClassification(_config()), seed=11)
    model.fc_norm.eps = 1e-6
    seen = {}
    model.classifier.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
    with torch.no_grad():
        model(pixel_values=clips.permute(0, 2, 1, 3, 4))
    return model.state_dict(), seen["x"]


def _ours(path, clips):
    model = create_backbone("videomae", path, frames=FRAMES, size=SIZE)
    with torch.no_grad():
        return model, model(clips)


@pytest.mark.parametrize("prefix", ["", "backbone."])
def test_finetuned_vit_g_layout(tmp_path, finetuned_ref, clips, prefix):
    hf, ref = finetuned_ref
    sd = hf_videomae_to_mcg(hf, DEPTH)
    assert sd["patch_embed.proj.weight"].shape[-3:] == (2, PATCH, PATCH) and sd["head.weight"].shape[0] == 710
    assert "norm.weight" not in sd and "blocks.0.attn.q_bias" in sd
    torch.save({"module": {prefix + k: v for k, v in sd.items()}, "epoch": 34}, tmp_path / "vit_g_k710_ft.pth")
    model, ours = _ours(tmp_path / "vit_g_k710_ft.pth", clips)
    assert model.fc_norm is not None and model.norm is None and model.patch_embed.proj.kernel_size == (2, 14, 14)
    assert rel_err(ours, ref) <= TOL


def test_pretrain_vit_g_layout(tmp_path, clips):
    base = randomize_(transformers.VideoMAEModel(_config(use_mean_pooling=False)), seed=12)
    with torch.no_grad():
        ref = base(pixel_values=clips.permute(0, 2, 1, 3, 4)).last_hidden_state.mean(dim=1)
    sd = hf_videomae_to_mcg(base.state_dict(), DEPTH, pretrain=True)
    assert "encoder.norm.weight" in sd and "decoder.head.weight" in sd
    torch.save({"model": sd}, tmp_path / "vit_g_hybrid_pt_1200e.pth")
    model, ours = _ours(tmp_path / "vit_g_hybrid_pt_1200e.pth", clips)
    assert model.fc_norm is None and model.norm is not None
    assert rel_err(ours, ref) <= TOL


def test_vit_g_and_h_shapes_from_the_file():
    # the published ViT-g (1408, 40 x 16 heads, MLP 6144, 14-px patches) and ViT-h (1280, 16 heads)
    meta = lambda *s: torch.empty(*s, device="meta")  # noqa: E731  shapes only
    for dim, mlp, patch in ((1408, 6144, 14), (1280, 5120, 16)):
        sd = {"patch_embed.proj.weight": meta(dim, 3, 2, patch, patch), "blocks.0.attn.qkv.weight": meta(3 * dim, dim),
              "blocks.0.attn.q_bias": meta(dim), "blocks.0.attn.v_bias": meta(dim),
              "blocks.0.mlp.fc1.weight": meta(mlp, dim), "fc_norm.weight": meta(dim)}
        arch = VideoViT.arch_from_state_dict(sd, InputSpec(), "v2.pth")
        assert (arch["shape"].num_heads, arch["shape"].mlp_hidden, arch["patch"]) == (16, mlp, patch)
        assert arch["shape"].qkv_bias == "qv" and arch["fc_norm"] and not arch["final_norm"]
