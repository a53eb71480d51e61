"""CLIP per frame against transformers' CLIPVisionModelWithProjection, in the HF, OpenAI and open_clip layouts,
and OpenAI's TorchScript archives."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from tests.backbone_helpers import TOL, assert_tokens_match, frames_to_grid, randomize_, rel_err
from vssl.extract.backbones import create_backbone
from vssl.extract.backbones.checkpoints import read_checkpoint

transformers = pytest.importorskip("transformers")

DIM, DEPTH, HEADS, PATCH, SIZE, FRAMES, OUT, MLP = 32, 2, 2, 16, 32, 3, 24, 64


def hf_clip_to_openai(hf: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """transformers' CLIP vision names -> OpenAI CLIP's ``visual.*`` (``model.py``: VisionTransformer,
    ResidualAttentionBlock with nn.MultiheadAttention's ``in_proj_weight``), from both models' code;
    ``visual_projection`` is ``x @ proj``, so ``proj`` is its weight transposed."""
    v = {k.removeprefix("vision_model."): t for k, t in hf.items()}
    sd = {"visual.conv1.weight": v["embeddings.patch_embedding.weight"],
          "visual.class_embedding": v["embeddings.class_embedding"],
          "visual.positional_embedding": v["embeddings.position_embedding.weight"],
          "visual.proj": hf["visual_projection.weight"].t().contiguous()}
    for t in ("weight", "bias"):
        sd[f"visual.ln_pre.{t}"] = v[f"pre_layrnorm.{t}"]
        sd[f"visual.ln_post.{t}"] = v[f"post_layernorm.{t}"]
    for i in range(depth):
        a, b = f"encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        sd[b + "attn.in_proj_weight"] = torch.cat([v[f"{a}self_attn.{n}_proj.weight"] for n in "qkv"])
        sd[b + "attn.in_proj_bias"] = torch.cat([v[f"{a}self_attn.{n}_proj.bias"] for n in "qkv"])
        for ours, theirs in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                             ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            for t in ("weight", "bias"):
                sd[f"{b}{ours}.{t}"] = v[f"{a}{theirs}.{t}"]
    # the text tower and logit scale sit next to the image tower in a full CLIP state dict
    sd |= {"positional_embedding": torch.zeros(77, 16), "token_embedding.weight": torch.zeros(10, 16),
           "transformer.resblocks.0.ln_1.weight": torch.ones(16), "text_projection": torch.zeros(16, OUT),
           "logit_scale": torch.tensor(4.6)}
    return sd


def _reference(tmp_path, act: str):
    cfg = transformers.CLIPVisionConfig(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                                        image_size=SIZE, patch_size=PATCH, intermediate_size=MLP,
                                        projection_dim=OUT, hidden_act=act)
    ref = randomize_(transformers.CLIPVisionModelWithProjection(cfg))
    ref.save_pretrained(tmp_path / "hf")
    return ref


def _check(model, ref, size: int) -> None:
    clips = torch.randn(2, 3, FRAMES, size, size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        frames = clips.transpose(1, 2).reshape(2 * FRAMES, 3, size, size)
        out = ref(pixel_values=frames, interpolate_pos_encoding=size != SIZE).image_embeds
        expected = out.reshape(2, FRAMES, -1).mean(dim=1)
        got = model(clips)
    assert model.embed_dim == OUT and model.spec.mean[0] == pytest.approx(0.48145466)
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= TOL


@pytest.mark.parametrize("size", [SIZE, 48])
def test_clip_openai_layout_and_hf_dir_match_transformers(tmp_path, size):
    ref = _reference(tmp_path, "quick_gelu")  # OpenAI's weights: QuickGELU
    torch.save(hf_clip_to_openai(read_checkpoint(tmp_path / "hf").tensors, DEPTH), tmp_path / "ViT-tiny.pt")
    for ckpt in (tmp_path / "hf", tmp_path / "ViT-tiny.pt"):
        _check(create_backbone("clip", ckpt, frames=FRAMES, size=size, num_heads=HEADS), ref, size)


def test_open_clip_gelu_checkpoint_with_act_hint(tmp_path):
    """open_clip saves {"state_dict": {"module.visual...."}}; LAION models use plain GELU, said by ``act``."""
    ref = _reference(tmp_path, "gelu")
    sd = {f"module.{k}": v for k, v in hf_clip_to_openai(read_checkpoint(tmp_path / "hf").tensors, DEPTH).items()}
    torch.save({"epoch": 32, "state_dict": sd}, tmp_path / "epoch_32.pt")
    _check(create_backbone("clip", tmp_path / "epoch_32.pt", frames=FRAMES, size=SIZE, num_heads=HEADS,
                           act="gelu"), ref, SIZE)
    _check(create_backbone("clip", tmp_path / "hf", frames=FRAMES, size=SIZE), ref, SIZE)  # config says gelu


# ------------------------------------------------------------------ OpenAI's TorchScript release
# A tiny CLIP in the layout of OpenAI's model.py (VisionTransformer + text Transformer, ResidualAttentionBlock
# with nn.MultiheadAttention), written from its module names; OpenAI released such models via torch.jit.


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, attn_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 2 * width)), ("gelu", _QuickGELU()),
                                              ("c_proj", nn.Linear(2 * width, width))]))
        self.attn_mask = attn_mask  # a plain attribute, not a buffer: not in the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=self.attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[_Block(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class _Visual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, DIM, PATCH, PATCH, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(DIM))
        self.positional_embedding = nn.Parameter(torch.randn((SIZE // PATCH) ** 2 + 1, DIM))
        self.ln_pre, self.ln_post = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.transformer = _Transformer(DIM, DEPTH, HEADS)
        self.proj = nn.Parameter(torch.randn(DIM, OUT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        cls = self.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding).permute(1, 0, 2)
        return self.ln_post(self.transformer(x).permute(1, 0, 2)[:, 0]) @ self.proj


class _OpenAICLIP(nn.Module):
    CONTEXT, VOCAB, TEXT_DIM = 6, 11, 16

    def __init__(self) -> None:
        super().__init__()
        self.visual = _Visual()
        mask = torch.full((self.CONTEXT, self.CONTEXT), float("-inf")).triu(1)
        self.transformer = _Transformer(self.TEXT_DIM, 1, HEADS, mask)
        self.token_embedding = nn.Embedding(self.VOCAB, self.TEXT_DIM)
        self.positional_embedding = nn.Parameter(torch.randn(self.CONTEXT, self.TEXT_DIM))
        self.ln_final = nn.LayerNorm(self.TEXT_DIM)
        self.text_projection = nn.Parameter(torch.randn(self.TEXT_DIM, OUT))
        self.logit_scale = nn.Parameter(torch.tensor(4.6))
        for name, value in (("input_resolution", SIZE), ("context_length", self.CONTEXT), ("vocab_size", self.VOCAB)):
            self.register_buffer(name, torch.tensor(value))  # in the released archives' state dicts

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (self.token_embedding(text) + self.positional_embedding).permute(1, 0, 2)
        x = self.ln_final(self.transformer(x).permute(1, 0, 2))
        return self.visual(image), x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("how", ["trace", "script"])
def test_openai_torchscript_archive_loads_without_running_its_code(tmp_path, monkeypatch, how):
    ref = _reference(tmp_path, "quick_gelu")
    clip = _OpenAICLIP().eval()
    visual = hf_clip_to_openai(read_checkpoint(tmp_path / "hf").tensors, DEPTH)
    clip.visual.load_state_dict({k.removeprefix("visual."): v for k, v in visual.items() if k.startswith("visual.")})
    image, text = torch.randn(1, 3, SIZE, SIZE), torch.randint(0, _OpenAICLIP.VOCAB, (1, _OpenAICLIP.CONTEXT))
    archive = torch.jit.trace(clip, (image, text)) if how == "trace" else torch.jit.script(clip)
    torch.jit.save(archive, tmp_path / "ViT-tiny.pt")

    def no_jit(*args, **kwargs):
        raise AssertionError("torch.jit.load would compile and run the archive's code")

    monkeypatch.setattr(torch.jit, "load", no_jit)
    ckpt = read_checkpoint(tmp_path / "ViT-tiny.pt")
    expected = clip.state_dict()  # the eager module's: text tower, buffers, no attention mask
    assert ckpt.format == "torchscript" and set(ckpt.tensors) == set(expected)
    assert all(torch.equal(ckpt.tensors[k], v) for k, v in expected.items())
    _check(create_backbone("clip", tmp_path / "ViT-tiny.pt", frames=FRAMES, size=SIZE, num_heads=HEADS), ref, SIZE)


def test_tokens_and_layers_equal_transformers_hidden_states(tmp_path):
    """Per frame: token grids are ``last_hidden_state`` less CLS (un-normed: transformers, like OpenAI's code,
    applies ``post_layernorm`` to the CLS token alone), frames x patches; earlier blocks are
    ``hidden_states[-k]``, their CLS token through ``post_layernorm`` and the projection, from one pass."""
    ref = _reference(tmp_path, "quick_gelu")
    model = create_backbone("clip", tmp_path / "hf", frames=FRAMES, size=48)
    clips = torch.randn(2, 3, FRAMES, 48, 48, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out = ref.vision_model(pixel_values=clips.transpose(1, 2).reshape(2 * FRAMES, 3, 48, 48),
                               interpolate_pos_encoding=True, output_hidden_states=True)
        hidden = [out.hidden_states[-k] for k in range(DEPTH, 0, -1)]
        embed = lambda h: ref.visual_projection(ref.vision_model.post_layernorm(h[:, 0]))  # noqa: E731
        expected = [(embed(h).reshape(2, FRAMES, OUT).mean(dim=1), frames_to_grid(h[:, 1:], 2)) for h in hidden]
        pairs = model.forward_tokens(clips, layers=DEPTH)
        embedding = model(clips)
    assert rel_err(hidden[-1], out.last_hidden_state) <= TOL
    assert_tokens_match(pairs, expected)
    assert pairs[-1][1].shape == (2, FRAMES, 3, 3, DIM)
    assert torch.equal(pairs[-1][0], embedding)
