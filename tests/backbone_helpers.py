"""Helpers for the backbone tests: tiny random reference models and official-layout writers.

Every conversion here is written from the public layout descriptions independently of
vssl's adapters, so that an adapter bug cannot cancel out in the comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TOL = 1e-4  # the bound on the pooled embedding, fp32


def randomize_(model: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter and BN statistic with seeded noise (defaults hide layout errors:
    LayerNorm weights of 1 and biases of 0 look the same under any permutation)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * std)
    return model.eval()


# ------------------------------------------------------------------ VideoMAE layouts


def hf_videomae_to_mcg(hf: dict[str, torch.Tensor], depth: int, pretrain: bool = False) -> dict[str, torch.Tensor]:
    """Hugging Face VideoMAE names -> MCG-NJU names (finetuned, or pretrain with `encoder.`)."""
    hf = {k.removeprefix("videomae."): v for k, v in hf.items()}
    sd = {"patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
          "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"]}
    for i in range(depth):
        a = f"encoder.layer.{i}."
        b = f"blocks.{i}."
        sd[b + "attn.qkv.weight"] = torch.cat([hf[a + f"attention.attention.{n}.weight"]
                                               for n in ("query", "key", "value")])
        sd[b + "attn.q_bias"] = hf[a + "attention.attention.query.bias"]
        sd[b + "attn.v_bias"] = hf[a + "attention.attention.value.bias"]
        for ours, theirs in (("attn.proj", "attention.output.dense"), ("norm1", "layernorm_before"),
                             ("norm2", "layernorm_after"), ("mlp.fc1", "intermediate.dense"),
                             ("mlp.fc2", "output.dense")):
            for t in ("weight", "bias"):
                sd[f"{b}{ours}.{t}"] = hf[f"{a}{theirs}.{t}"]
    for ours, theirs in (("fc_norm", "fc_norm"), ("norm", "layernorm"), ("head", "classifier")):
        for t in ("weight", "bias"):
            if f"{theirs}.{t}" in hf:
                sd[f"{ours}.{t}"] = hf[f"{theirs}.{t}"]
    if pretrain:
        sd = {f"encoder.{k}": v for k, v in sd.items()}
        sd["encoder_to_decoder.weight"] = torch.randn(8, sd["encoder.patch_embed.proj.weight"].shape[0])
        sd["mask_token"] = torch.zeros(1, 1, 8)
        sd["decoder.blocks.0.norm1.weight"] = torch.ones(8)
        sd["decoder.head.weight"] = torch.randn(1536, 8)
    return sd


def save_hf_dir(path: Path, config: dict, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))
    return path


def hf_timesformer_to_svt(hf: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """transformers TimesformerModel names -> TimeSformer/SVT names (unwrapped)."""
    sd = {"cls_token": hf["embeddings.cls_token"], "pos_embed": hf["embeddings.position_embeddings"],
          "time_embed": hf["embeddings.time_embeddings"],
          "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
          "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
          "norm.weight": hf["layernorm.weight"], "norm.bias": hf["layernorm.bias"]}
    names = {"attn.qkv": "attention.attention.qkv", "attn.proj": "attention.output.dense",
             "temporal_attn.qkv": "temporal_attention.attention.qkv",
             "temporal_attn.proj": "temporal_attention.output.dense", "temporal_fc": "temporal_dense",
             "norm1": "layernorm_before", "norm2": "layernorm_after", "temporal_norm1": "temporal_layernorm",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    for i in range(depth):
        for ours, theirs in names.items():
            for t in ("weight", "bias"):
                sd[f"blocks.{i}.{ours}.{t}"] = hf[f"encoder.layer.{i}.{theirs}.{t}"]
    return sd


# ------------------------------------------------------------------ MindSpore writer (protobuf by hand)

MS_TYPES = {torch.float32: ("Float32", "<f4"), torch.float16: ("Float16", "<f2"), torch.int32: ("Int32", "<i4"),
            torch.int64: ("Int64", "<i8")}


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(payload)
    return key + _varint(len(payload)) + payload


def ms_value(tag: str, tensor: torch.Tensor, packed_dims: bool = False, content: bytes | None = None) -> bytes:
    """One serialized ``Checkpoint`` message holding one ``Value`` (proto2 field numbers)."""
    type_name, np_dtype = MS_TYPES[tensor.dtype]
    dims = list(tensor.shape) or [0]  # MindSpore writes scalars as dims [0]
    if packed_dims:
        dims_bytes = _field(1, 2, b"".join(_varint(d) for d in dims))
    else:
        dims_bytes = b"".join(_field(1, 0, d) for d in dims)
    data = content if content is not None else tensor.numpy().astype(np_dtype).tobytes()
    proto = dims_bytes + _field(2, 2, type_name.encode()) + _field(3, 2, data)
    value = _field(1, 2, tag.encode()) + _field(2, 2, proto)
    return _field(1, 2, value)


def write_mindspore(path: Path, tensors: dict[str, torch.Tensor], *, slice_tags: tuple[str, ...] = (),
                    crc: bool = True, packed_every: int = 2) -> Path:
    """A MindSpore .ckpt: concatenated Checkpoint messages, some tensors split into 3 slices,
    alternating packed/unpacked dims, and a 17-byte crc trailer."""
    import zlib

    blob = bytearray()
    for i, (tag, tensor) in enumerate(tensors.items()):
        packed = i % packed_every == 0
        if tag in slice_tags:
            raw = tensor.numpy().tobytes()
            cuts = [0, len(raw) // 3, 2 * len(raw) // 3, len(raw)]
            for a, b in zip(cuts, cuts[1:]):
                blob += ms_value(tag, tensor, packed, content=raw[a:b])
        else:
            blob += ms_value(tag, tensor, packed)
    if crc:
        digits = f"{zlib.crc32(bytes(blob)):015d}".encode()  # field 2, 15 bytes: 17 bytes in all
        blob += _field(2, 2, digits)
        assert len(_field(2, 2, digits)) == 17
    path.write_bytes(bytes(blob))
    return path




# ------------------------------------------------------------------ V-JEPA layouts


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest difference relative to the reference's largest magnitude (the issue's "relative")."""
    return float((ours - ref).abs().max() / ref.abs().max())


def hf_vjepa2_to_released(hf: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Hugging Face ``VJEPA2Model`` encoder names -> facebookresearch/vjepa2 ``VisionTransformer`` names.

    From transformers' VJEPA2 module names on one side and vjepa2's ``src/models/vision_transformer.py``
    (``patch_embed.proj``, ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``)
    on the other; q, k and v are one fused Linear there, stacked in that order.
    """
    hf = {k.removeprefix("vjepa2."): v for k, v in hf.items()}
    sd = {f"patch_embed.proj.{t}": hf[f"encoder.embeddings.patch_embeddings.proj.{t}"] for t in ("weight", "bias")}
    for i in range(depth):
        a, b = f"encoder.layer.{i}.", f"blocks.{i}."
        for t in ("weight", "bias"):
            sd[f"{b}attn.qkv.{t}"] = torch.cat([hf[f"{a}attention.{n}.{t}"] for n in ("query", "key", "value")])
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                sd[f"{b}{name}.{t}"] = hf[f"{a}{name}.{t}"]
            sd[f"{b}attn.proj.{t}"] = hf[f"{a}attention.proj.{t}"]
    for t in ("weight", "bias"):
        sd[f"norm.{t}"] = hf[f"encoder.layernorm.{t}"]
    return sd


def vjepa_training_file(encoder: dict[str, torch.Tensor], target: dict[str, torch.Tensor] | None,
                        prefix: str = "module.backbone.") -> dict:
    """What vjepa2's ``app/vjepa/train.py`` saves: both encoders under a DDP + ``MultiSeqWrapper`` prefix,
    the predictor, the optimizer and counters."""
    wrap = lambda sd: {prefix + k: v for k, v in sd.items()}  # noqa: E731
    out = {"encoder": wrap(encoder), "predictor": {"module.predictor_embed.weight": torch.zeros(4, 4)},
           "opt": {"state": {}, "param_groups": []}, "scaler": None, "epoch": 3, "loss": 0.5, "batch_size": 2,
           "world_size": 1, "lr": 1e-4}
    if target is not None:
        out["target_encoder"] = wrap(target)
    return out


# ------------------------------------------------------------------ token grids


def assert_tokens_match(pairs: list[tuple[torch.Tensor, torch.Tensor]],
                        expected: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """``forward_tokens``' (embedding, token grid) per block against the reference's, block by block, each
    within TOL relative (the issue's bound), shapes equal."""
    assert len(pairs) == len(expected)
    for depth, ((embedding, grid), (ref_embedding, ref_grid)) in enumerate(zip(pairs, expected)):
        assert grid.shape == ref_grid.shape, depth
        assert embedding.shape == ref_embedding.shape, depth
        assert rel_err(grid, ref_grid) <= TOL, f"grid of block -{len(pairs) - depth}"
        assert rel_err(embedding, ref_embedding) <= TOL, f"embedding of block -{len(pairs) - depth}"


def frames_to_grid(tokens: torch.Tensor, clips: int) -> torch.Tensor:
    """A per-frame reference's (clips*T, P, D) patch tokens of square frames -> (clips, T, H, W, D)."""
    side = int(round(tokens.shape[1] ** 0.5))
    return tokens.reshape(clips, -1, side, side, tokens.shape[-1])
