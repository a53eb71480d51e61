"""VideoMAE family: every released layout loads and matches transformers' VideoMAE on the same weights."""

from __future__ import annotations

import argparse

import pytest
import torch

from tests.backbone_helpers import (TOL, assert_tokens_match, hf_videomae_to_mcg, randomize_, rel_err, save_hf_dir,
                                    write_mindspore)
from vssl.errors import CheckpointError
from vssl.extract.backbones import create_backbone

transformers = pytest.importorskip("transformers")

DEPTH, DIM, HEADS, FRAMES, SIZE = 2, 128, 2, 4, 32


def _config(**kw):
    cfg = dict(image_size=SIZE, patch_size=16, num_frames=FRAMES, tubelet_size=2, hidden_size=DIM,
               num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=256, num_labels=3)
    cfg.update(kw)
    return transformers.VideoMAEConfig(**cfg)


@pytest.fixture(scope="module")
def clips():
    return torch.randn(2, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def finetuned():
    """HF classification model (fc_norm(mean(tokens)), fc_norm eps 1e-5) and its pooled output hook."""
    model = randomize_(transformers.VideoMAEForVideoClassification(_config(layer_norm_eps=1e-6)))
    return model


@pytest.fixture(scope="module")
def pretrained():
    """HF base model without mean pooling: layernorm(tokens), which MCG-NJU pretrain files pool by mean."""
    return randomize_(transformers.VideoMAEModel(_config(use_mean_pooling=False, layer_norm_eps=1e-6)), seed=3)


def _pooled_classification(model, clips) -> torch.Tensor:
    seen = {}
    handle = model.classifier.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
    with torch.no_grad():
        model(pixel_values=clips.permute(0, 2, 1, 3, 4))  # HF wants (B, T, C, H, W)
    handle.remove()
    return seen["x"]


def _pooled_pretrain(model, clips) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=clips.permute(0, 2, 1, 3, 4)).last_hidden_state.mean(dim=1)


def _ours(path, clips, **kw):
    model = create_backbone("videomae", path, frames=FRAMES, size=SIZE, **kw)
    with torch.no_grad():
        return model, model(clips)


def test_hf_dir_v5_names_matches_transformers(tmp_path, finetuned, clips):
    finetuned.save_pretrained(tmp_path / "hf")
    model, ours = _ours(tmp_path / "hf", clips)
    assert ours.shape == (2, DIM)
    assert (ours - _pooled_classification(finetuned, clips)).abs().max() <= TOL
    assert model.fc_norm is not None and model.norm is None  # finetuned pooling: fc_norm(mean)


def test_hf_dir_v4_names_and_config_eps(tmp_path, clips):
    # Old transformers saved the q/v biases as `q_bias`/`v_bias`; layer_norm_eps comes from config.json.
    ref = randomize_(transformers.VideoMAEForVideoClassification(_config(layer_norm_eps=0.5)), seed=5)
    v4 = {k.replace(".query.bias", ".q_bias").replace(".value.bias", ".v_bias"): v
          for k, v in ref.state_dict().items()}
    assert any(k.endswith("attention.attention.q_bias") for k in v4)
    save_hf_dir(tmp_path / "v4", ref.config.to_dict(), v4)
    _, ours = _ours(tmp_path / "v4", clips)
    assert (ours - _pooled_classification(ref, clips)).abs().max() <= TOL
    # the eps matters here: a model built with 1e-6 instead of the config's 0.5 differs
    cfg = ref.config.to_dict() | {"layer_norm_eps": 1e-6}
    save_hf_dir(tmp_path / "v4_wrong_eps", cfg, v4)
    _, wrong = _ours(tmp_path / "v4_wrong_eps", clips)
    assert (wrong - _pooled_classification(ref, clips)).abs().max() > TOL


def test_hf_base_model_without_mean_pooling(tmp_path, pretrained, clips):
    pretrained.save_pretrained(tmp_path / "base")
    model, ours = _ours(tmp_path / "base", clips)
    assert model.fc_norm is None and model.norm is not None
    assert (ours - _pooled_pretrain(pretrained, clips)).abs().max() <= TOL


def test_mcg_finetuned_pth(tmp_path, finetuned, clips):
    sd = hf_videomae_to_mcg(finetuned.state_dict(), DEPTH)
    torch.save({"module": sd, "epoch": 10, "args": argparse.Namespace(model="vit_small")}, tmp_path / "ft.pth")
    model, ours = _ours(tmp_path / "ft.pth", clips)
    # MCG-NJU builds fc_norm with eps 1e-6 (HF: 1e-5); compare with the reference using the same eps
    finetuned.fc_norm.eps = 1e-6
    try:
        ref = _pooled_classification(finetuned, clips)
    finally:
        finetuned.fc_norm.eps = 1e-5
    assert model.fc_norm.eps == 1e-6
    assert (ours - ref).abs().max() <= TOL


def test_mcg_pretrain_pth_ignores_decoder_and_pools_mean_of_norm(tmp_path, pretrained, clips):
    sd = hf_videomae_to_mcg(pretrained.state_dict(), DEPTH, pretrain=True)
    assert "encoder.norm.weight" in sd and "decoder.head.weight" in sd
    torch.save({"model": sd}, tmp_path / "pretrain.pth")
    model, ours = _ours(tmp_path / "pretrain.pth", clips)
    assert model.fc_norm is None  # no untrained fc_norm in the path
    assert (ours - _pooled_pretrain(pretrained, clips)).abs().max() <= TOL


def _mindspore_names(sd: dict, separate_qkv: bool) -> dict:
    out = {}
    for k, v in sd.items():
        if k.startswith("head."):
            continue
        if k.endswith(("norm1.weight", "norm2.weight", "fc_norm.weight")):
            k = k[:-len("weight")] + "gamma"
        elif k.endswith(("norm1.bias", "norm2.bias", "fc_norm.bias")):
            k = k[:-len("bias")] + "beta"
        if separate_qkv and k.endswith("attn.qkv.weight"):
            for name, part in zip("qkv", v.chunk(3)):
                out[k.replace("qkv.weight", f"{name}.weight")] = part.clone()
            continue
        if separate_qkv and k.endswith(("attn.q_bias", "attn.v_bias")):
            k = k.replace("q_bias", "q.bias").replace("v_bias", "v.bias")
        out[k] = v.clone()
    return out


@pytest.mark.parametrize("separate_qkv", [False, True])
def test_mindspore_ckpt_matches_transformers(tmp_path, finetuned, clips, separate_qkv):
    sd = _mindspore_names(hf_videomae_to_mcg(finetuned.state_dict(), DEPTH), separate_qkv)
    sd["adam_m.blocks.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    sd["global_step"] = torch.tensor(1234, dtype=torch.int32)
    path = write_mindspore(tmp_path / "scma.ckpt", sd, slice_tags=("patch_embed.proj.weight",))
    model, ours = _ours(path, clips)
    finetuned.fc_norm.eps = 1e-6
    try:
        ref = _pooled_classification(finetuned, clips)
    finally:
        finetuned.fc_norm.eps = 1e-5
    assert (ours - ref).abs().max() <= TOL


def test_unknown_names_fail_then_load_with_key_map(tmp_path, finetuned, clips):
    sd = {f"net.vit.{k}": v for k, v in hf_videomae_to_mcg(finetuned.state_dict(), DEPTH).items()}
    torch.save(sd, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError) as info:
        create_backbone("videomae", tmp_path / "odd.pth")
    msg = str(info.value)
    assert "\n" not in msg and "net.vit.patch_embed.proj.weight" in msg and "--key-map" in msg
    _, ours = _ours(tmp_path / "odd.pth", clips, key_map=[(r"net\.vit\.(.*)", r"\1")])
    assert ours.shape == (2, DIM)


def test_missing_key_is_named(tmp_path, finetuned):
    sd = hf_videomae_to_mcg(finetuned.state_dict(), DEPTH)
    del sd["blocks.1.mlp.fc2.bias"]
    torch.save({"model": sd}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"1 missing keys \(first: blocks\.1\.mlp\.fc2\.bias\)"):
        create_backbone("videomae", tmp_path / "broken.pth")


def test_bf16_autocast_runs_on_cpu(tmp_path, finetuned, clips):
    finetuned.save_pretrained(tmp_path / "hf")
    model = create_backbone("videomae", tmp_path / "hf", frames=FRAMES, size=SIZE)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(clips)
    with torch.no_grad():
        full = model(clips)
    assert torch.isfinite(low.float()).all()
    assert torch.nn.functional.cosine_similarity(low.float(), full).min() > 0.98


def test_head_count_override_for_non_standard_widths(tmp_path, clips):
    # .pth files do not record the head count; 64-d heads are assumed unless told otherwise
    ref = randomize_(transformers.VideoMAEForVideoClassification(_config(layer_norm_eps=1e-6, num_attention_heads=4)),
                     seed=9)
    ref.fc_norm.eps = 1e-6
    torch.save({"model": hf_videomae_to_mcg(ref.state_dict(), DEPTH)}, tmp_path / "h4.pth")
    expected = _pooled_classification(ref, clips)
    _, right = _ours(tmp_path / "h4.pth", clips, num_heads=4)
    _, assumed = _ours(tmp_path / "h4.pth", clips)
    assert (right - expected).abs().max() <= TOL
    assert (assumed - expected).abs().max() > TOL


@pytest.mark.parametrize("kind", ["pretrain", "finetuned"])
def test_tokens_and_layers_equal_transformers_hidden_states(tmp_path, pretrained, finetuned, clips, kind):
    """Token grids are ``last_hidden_state`` on the (t, h, w) grid, earlier blocks ``hidden_states[-k]``
    through the same final norm (a pretrain file's ``layernorm``; a finetuned one has none, its
    ``fc_norm`` follows pooling), all from one pass."""
    ref = pretrained if kind == "pretrain" else finetuned
    ref.save_pretrained(tmp_path / "hf")
    model = create_backbone("videomae", tmp_path / "hf", frames=FRAMES, size=SIZE)
    base = ref if kind == "pretrain" else ref.videomae
    with torch.no_grad():
        out = base(pixel_values=clips.permute(0, 2, 1, 3, 4), output_hidden_states=True)
        pairs = model.forward_tokens(clips, layers=DEPTH)
        embedding = model(clips)
        assert torch.equal(model.token_grid(model.forward_features(clips)), pairs[-1][1])
        grid_of = lambda tokens: tokens.reshape(2, FRAMES // 2, SIZE // 16, SIZE // 16, DIM)  # noqa: E731
        if kind == "pretrain":
            tokens = [base.layernorm(out.hidden_states[-k]) for k in range(DEPTH, 0, -1)]
            expected = [(t.mean(dim=1), grid_of(t)) for t in tokens]
        else:
            tokens = [out.hidden_states[-k] for k in range(DEPTH, 0, -1)]
            expected = [(ref.fc_norm(t.mean(dim=1)), grid_of(t)) for t in tokens]
    assert rel_err(tokens[-1], out.last_hidden_state) <= TOL
    assert_tokens_match(pairs, expected)
    assert torch.equal(pairs[-1][0], embedding)


def test_layers_beyond_the_depth_and_foreign_features_are_refused(tmp_path, pretrained, clips):
    from vssl.errors import VsslError

    pretrained.save_pretrained(tmp_path / "hf")
    model = create_backbone("videomae", tmp_path / "hf", frames=FRAMES, size=SIZE)
    with pytest.raises(VsslError, match=f"has {DEPTH} blocks: --layers must be 1 to {DEPTH}, not {DEPTH + 1}"):
        model.forward_tokens(clips, layers=DEPTH + 1)
    with torch.no_grad():
        model(clips)
    with pytest.raises(VsslError, match="5 tokens are not the grid of its last pass"):  # not its features
        model.token_grid(torch.zeros(2, 5, DIM))
