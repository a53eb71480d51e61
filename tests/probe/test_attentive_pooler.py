"""The attentive probe's model equals transformers' V-JEPA 2 head (``VJEPA2AttentivePooler`` + ``classifier``)
on the same weights, with padding masked as if the video came alone; released probes load from both
layouts (transformers' VJEPA2ForVideoClassification and the vjepa2 repository's checkpoint) and give the
reference's logits; anything else is one VsslError."""

from __future__ import annotations

import math

import pytest
import torch

from tests.backbone_helpers import TOL, randomize_, rel_err
from vssl.errors import VsslError
from vssl.probe.attentive_pooler import AttentiveClassifier, AttentivePooler, load_attentive

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "VJEPA2ForVideoClassification"):
    pytest.skip("transformers has no VJEPA2ForVideoClassification", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("one_thread")

# 4 heads of 16 channels: a loader that assumed the released 16 heads would give other logits
DIM, HEADS, POOLER_LAYERS, CLASSES = 64, 4, 3, 5


def _hf_classifier(seed: int = 0, **kw):
    """A tiny VJEPA2ForVideoClassification with random weights everywhere (eager attention: the plain formula)."""
    cfg = dict(hidden_size=DIM, num_hidden_layers=1, num_attention_heads=HEADS, crop_size=32, frames_per_clip=2,
               patch_size=16, tubelet_size=2, pred_hidden_size=32, pred_num_hidden_layers=1,
               pred_num_attention_heads=2, num_pooler_layers=POOLER_LAYERS, num_labels=CLASSES)
    config = transformers.VJEPA2Config(**(cfg | kw))
    config._attn_implementation = "eager"
    return randomize_(transformers.VJEPA2ForVideoClassification(config), seed=seed)


def _reference(hf, tokens: torch.Tensor) -> torch.Tensor:
    """VJEPA2ForVideoClassification's head on encoder tokens: ``classifier(pooler(last_hidden_state))``."""
    with torch.no_grad():
        return hf.classifier(hf.pooler(tokens))


def _hf_head_as_vjepa2(hf) -> dict[str, torch.Tensor]:
    """The HF head's tensors under vjepa2's AttentiveClassifier names, as its eval.py saves them from DDP.

    Written from the two sources' module trees (transformers ``modeling_vjepa2``; vjepa2
    ``src/models/attentive_pooler.py`` and ``utils/modules.py``): q, k, v stacked in that order into the
    fused ``qkv`` / ``kv`` Linear, LayerNorms ``layer_norm{1,2}`` -> ``norm{1,2}``, ``out_proj`` -> ``proj``.
    """
    sd = {k: v.clone() for k, v in hf.state_dict().items()}
    out = {"pooler.query_tokens": sd["pooler.query_tokens"]}
    for p in ("weight", "bias"):
        cross = "pooler.cross_attention_layer"
        out[f"pooler.cross_attention_block.xattn.q.{p}"] = sd[f"{cross}.cross_attn.q_proj.{p}"]
        out[f"pooler.cross_attention_block.xattn.kv.{p}"] = torch.cat(
            [sd[f"{cross}.cross_attn.k_proj.{p}"], sd[f"{cross}.cross_attn.v_proj.{p}"]])
        for i in (1, 2):
            out[f"pooler.cross_attention_block.norm{i}.{p}"] = sd[f"{cross}.layer_norm{i}.{p}"]
            out[f"pooler.cross_attention_block.mlp.fc{i}.{p}"] = sd[f"{cross}.mlp.fc{i}.{p}"]
        for b in range(POOLER_LAYERS):
            hf_b, ours = f"pooler.self_attention_layers.{b}", f"pooler.blocks.{b}"
            out[f"{ours}.attn.qkv.{p}"] = torch.cat([sd[f"{hf_b}.self_attn.{x}_proj.{p}"] for x in "qkv"])
            out[f"{ours}.attn.proj.{p}"] = sd[f"{hf_b}.self_attn.out_proj.{p}"]
            for i in (1, 2):
                out[f"{ours}.norm{i}.{p}"] = sd[f"{hf_b}.layer_norm{i}.{p}"]
                out[f"{ours}.mlp.fc{i}.{p}"] = sd[f"{hf_b}.mlp.fc{i}.{p}"]
        out[f"linear.{p}"] = sd[f"classifier.{p}"]
    return {f"module.{k}": v for k, v in out.items()}


def _tokens(batch: int = 3, n: int = 11, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, n, DIM, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def hf():
    return _hf_classifier()


def _logits(model: AttentiveClassifier, tokens: torch.Tensor, valid=None) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens, valid)


def test_transformers_checkpoint_gives_the_reference_logits(tmp_path, hf):
    hf.save_pretrained(tmp_path / "hf")
    model = load_attentive(tmp_path / "hf", embed_dim=DIM, num_classes=CLASSES)
    tokens = _tokens()
    assert rel_err(_logits(model, tokens), _reference(hf, tokens)) <= TOL
    # the weights file itself loads too (its config.json beside it)
    model = load_attentive(tmp_path / "hf" / "model.safetensors")
    assert rel_err(_logits(model, tokens), _reference(hf, tokens)) <= TOL


def test_vjepa2_checkpoint_gives_the_reference_logits(tmp_path, hf):
    """eval.py's save_checkpoint: every head's DDP state dict in a list, the optimizers beside them."""
    other = _hf_classifier(seed=7)
    heads = [_hf_head_as_vjepa2(hf), _hf_head_as_vjepa2(other)]
    torch.save({"classifiers": heads, "opt": [{"state": {}, "param_groups": []}] * 2, "scaler": None,
                "epoch": 20, "batch_size": 4, "world_size": 1}, tmp_path / "probe.pt")
    tokens = _tokens()
    first = load_attentive(tmp_path / "probe.pt", num_heads=HEADS)
    second = load_attentive(tmp_path / "probe.pt", num_heads=HEADS, head=1)
    assert rel_err(_logits(first, tokens), _reference(hf, tokens)) <= TOL
    assert rel_err(_logits(second, tokens), _reference(other, tokens)) <= TOL


def test_valid_mask_equals_the_reference_on_each_unpadded_video(hf, tmp_path):
    hf.save_pretrained(tmp_path / "hf")
    model = load_attentive(tmp_path / "hf")
    lengths = [11, 4, 1]
    tokens = _tokens(n=max(lengths)) * 1.0
    valid = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    tokens[~valid] = 1e3        # padding that would dominate any attention it took part in
    padded = _logits(model, tokens, valid)
    for i, n in enumerate(lengths):
        assert rel_err(padded[i:i + 1], _reference(hf, tokens[i:i + 1, :n])) <= TOL


def test_a_video_without_any_valid_token_is_refused():
    model = AttentiveClassifier(DIM, CLASSES, num_heads=HEADS)
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[1] = False
    with pytest.raises(ValueError, match="at least one token"):
        model(_tokens(2, 5), valid)


def test_names_are_vjepa2s():
    names = set(AttentiveClassifier(DIM, CLASSES, num_heads=HEADS, depth=4).state_dict())
    block = {f"{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
             for p in ("weight", "bias")}
    cross = {f"{m}.{p}" for m in ("norm1", "xattn.q", "xattn.kv", "norm2", "mlp.fc1", "mlp.fc2")
             for p in ("weight", "bias")}
    expected = ({"pooler.query_tokens", "linear.weight", "linear.bias"}
                | {f"pooler.blocks.{i}.{k}" for i in range(3) for k in block}
                | {f"pooler.cross_attention_block.{k}" for k in cross})
    assert names == expected


def test_init_is_vjepa2s():
    """Truncated normal (std 0.02, cut at +-2), zero biases, unit LayerNorms; block i's output weights
    divided by sqrt(2 i), the cross block's MLP output by sqrt(2 x the last block's number)."""
    torch.manual_seed(0)
    pooler = AttentivePooler(512, num_heads=8, depth=4)
    std = lambda w: float(w.detach().std())  # noqa: E731
    # a truncated normal at +-100 std is a normal: its std is 0.02 up to sampling noise (~0.1% here)
    assert std(pooler.blocks[0].attn.qkv.weight) == pytest.approx(0.02, rel=0.02)
    assert std(pooler.cross_attention_block.xattn.kv.weight) == pytest.approx(0.02, rel=0.02)
    for i, block in enumerate(pooler.blocks, 1):
        assert std(block.attn.proj.weight) == pytest.approx(0.02 / math.sqrt(2 * i), rel=0.02)
        assert std(block.mlp.fc2.weight) == pytest.approx(0.02 / math.sqrt(2 * i), rel=0.02)
        assert not block.attn.qkv.bias.any() and bool((block.norm1.weight == 1).all())
    assert std(pooler.cross_attention_block.mlp.fc2.weight) == pytest.approx(0.02 / math.sqrt(6), rel=0.02)
    assert std(pooler.query_tokens) == pytest.approx(0.02, rel=0.1)


def _write(path, content):
    path.write_bytes(content) if isinstance(content, bytes) else torch.save(content, path)
    return path


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint", "not a vjepa2 probe checkpoint"),
    ({"classifiers": []}, "holds no probe"),
    ({"encoder": {"blocks.0.attn.qkv.weight": torch.zeros(3, 1)}}, "not an attentive probe"),
    ([1, 2, 3], "not a vjepa2 probe checkpoint"),
])
def test_other_files_are_one_line_errors(tmp_path, content, message):
    with pytest.raises(VsslError, match=message) as err:
        load_attentive(_write(tmp_path / "x.pt", content))
    assert "\n" not in str(err.value)


def test_mismatches_are_one_line_errors(tmp_path, hf):
    hf.save_pretrained(tmp_path / "hf")
    with pytest.raises(VsslError, match="embed_dim is 64, the width of the features 32"):
        load_attentive(tmp_path / "hf", embed_dim=32)
    with pytest.raises(VsslError, match="num_classes is 5"):
        load_attentive(tmp_path / "hf", num_classes=4)
    torch.save({"classifiers": [_hf_head_as_vjepa2(hf)]}, tmp_path / "p.pt")
    with pytest.raises(VsslError, match="head 2 asked for, the file holds 1"):
        load_attentive(tmp_path / "p.pt", num_heads=HEADS, head=2)
    with pytest.raises(VsslError, match="no such file"):
        load_attentive(tmp_path / "missing.pt")
    encoder_only = transformers.VJEPA2Model(hf.config)
    encoder_only.save_pretrained(tmp_path / "encoder")
    with pytest.raises(VsslError, match="no pooler/classifier weights"):
        load_attentive(tmp_path / "encoder")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "videomae"}')
    with pytest.raises(VsslError, match="not vjepa2"):
        load_attentive(tmp_path / "other")
