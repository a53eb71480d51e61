"""Checkpoint containers, the MindSpore reader, strictness and the one-line errors users see."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from tests.backbone_helpers import ms_value, write_mindspore
from vssl.errors import CheckpointError, VsslError
from vssl.extract.backbones import create_backbone
from vssl.extract.backbones.checkpoints import apply_key_map, parse_key_map, read_checkpoint
from vssl.extract.backbones.mindspore_ckpt import read_mindspore_checkpoint
from vssl.extract.backbones.slowonly import SlowOnlyR50


def test_mindspore_round_trip_slices_scalars_fp16_crc(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "blocks.0.norm1.gamma": torch.randn(7, generator=gen),
        "big": torch.randn(5, 4, 3, generator=gen),  # written as 3 slices under one tag
        "half": torch.randn(6, 2, generator=gen).half(),
        "global_step": torch.tensor(42, dtype=torch.int32),  # scalar: dims [0]
        "ids": torch.arange(10, dtype=torch.int64).reshape(2, 5),
    }
    path = write_mindspore(tmp_path / "x.ckpt", tensors, slice_tags=("big",))
    back = read_mindspore_checkpoint(path)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v), k
    # without the crc trailer and with every dims field packed: same result
    plain = write_mindspore(tmp_path / "y.ckpt", tensors, slice_tags=("big",), crc=False, packed_every=1)
    assert all(torch.equal(read_mindspore_checkpoint(plain)[k], v) for k, v in tensors.items())


def test_mindspore_truncated_is_one_line(tmp_path):
    path = write_mindspore(tmp_path / "x.ckpt", {"w": torch.randn(64, 64)}, crc=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)


def test_mindspore_dims_not_matching_content_is_an_error(tmp_path):
    bad = ms_value("w", torch.zeros(2, 2)).replace(b"\x08\x02\x08\x02", b"\x08\x03\x08\x03")
    (tmp_path / "bad.ckpt").write_bytes(bad)
    with pytest.raises(CheckpointError, match="values for shape"):
        read_checkpoint(tmp_path / "bad.ckpt")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_torch_and_safetensors_files(tmp_path, suffix):
    sd = {"w": torch.randn(256, 256)}
    path = tmp_path / f"m{suffix}"
    torch.save(sd, path) if suffix == ".pth" else save_file(sd, str(path))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


class _RunsCode:
    """What a malicious checkpoint holds: unpickling it calls os.system."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _write_code_running(path, writer: str, marker) -> None:
    obj = {"w": torch.zeros(2), "hook": _RunsCode(marker)}
    if writer == "torch.save":
        torch.save(obj, path)
    elif writer == "pickle.dump":
        path.write_bytes(pickle.dumps(obj))
    else:  # a TorchScript-shaped archive whose data.pkl is the payload
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("m/data.pkl", pickle.dumps(_RunsCode(marker), protocol=2))
            archive.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
            archive.writestr("m/code/__torch__.py", "")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump", "torchscript"])
def test_a_pickle_that_would_run_code_is_refused_naming_it(tmp_path, writer):
    marker = tmp_path / "it-ran"
    _write_code_running(tmp_path / "evil.pt", writer, marker)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "evil.pt")
    msg = str(info.value)
    assert not marker.exists()  # nothing executed
    assert "refused" in msg and "system" in msg and "run" in msg and "\n" not in msg, msg
    assert "truncated" not in msg and "download it again" not in msg, msg


def test_containers_and_prefixes(tmp_path):
    w = {"a.weight": torch.ones(2)}
    torch.save({"model_state": {"module.a.weight": torch.ones(2)}, "epoch": 3, "cfg": "yaml text"}, tmp_path / "a.pyth")
    assert set(read_checkpoint(tmp_path / "a.pyth").tensors) == {"a.weight"}
    # DINO-style: the teacher is what SVT evaluates, even when the student comes first
    torch.save({"student": {"x": torch.zeros(1)}, "teacher": w, "epoch": 1}, tmp_path / "b.pth")
    loaded = read_checkpoint(tmp_path / "b.pth")
    assert loaded.container == "teacher" and set(loaded.tensors) == {"a.weight"}
    torch.save({"optimizer": {}, "epoch": 1}, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="no state dict found"):
        read_checkpoint(tmp_path / "c.pth")


def test_hf_dir_sharded_safetensors(tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"layer_norm_eps": 1e-6}))
    save_file({"a": torch.ones(2)}, str(d / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(3)}, str(d / "model-00002-of-00002.safetensors"))
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    loaded = read_checkpoint(d)
    assert loaded.format == "huggingface" and loaded.config["layer_norm_eps"] == 1e-6
    assert set(loaded.tensors) == {"a", "b"}


def test_hf_dir_with_pytorch_model_bin(tmp_path):
    d = tmp_path / "hf_bin"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"num_attention_heads": 2}))
    torch.save({"embeddings.x": torch.ones(2)}, d / "pytorch_model.bin")
    loaded = read_checkpoint(d)
    assert loaded.format == "huggingface" and set(loaded.tensors) == {"embeddings.x"}
    (d / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        read_checkpoint(d)


def test_parse_key_map():
    km = parse_key_map([r"encoder\.(.*)=\1", r"head\..*="])
    assert km == [(r"encoder\.(.*)", r"\1"), (r"head\..*", "")]
    sd = {"encoder.blocks.0.w": torch.ones(1), "head.weight": torch.ones(1), "other": torch.ones(1)}
    assert set(apply_key_map(sd, km)) == {"blocks.0.w", "other"}  # empty replacement drops
    with pytest.raises(VsslError, match="PATTERN=REPLACEMENT"):
        parse_key_map(["no-equals-sign"])
    with pytest.raises(VsslError, match="invalid regex"):
        parse_key_map(["(unclosed=x"])


def test_wrong_family_names_the_right_backbone(tmp_path):
    torch.save({"model_state": SlowOnlyR50(width=8).state_dict()}, tmp_path / "rho.pyth")
    with pytest.raises(CheckpointError) as info:
        create_backbone("videomae", tmp_path / "rho.pyth")
    msg = str(info.value)
    assert "not a videomae checkpoint" in msg and "--backbone slowonly-r50" in msg and "\n" not in msg
    assert "s1.pathway0_stem.conv.weight" in msg  # the first keys are shown


@pytest.mark.slow
def test_cli_error_is_one_line_exit_2(tmp_path, vssl_cli):
    from tests.videos import write_video

    write_video(tmp_path / "videos" / "a" / "v.mp4", 12)
    torch.save({"model": {"w": torch.randn(512, 512)}}, tmp_path / "ckpt.pth")
    (tmp_path / "ckpt.pth").write_bytes((tmp_path / "ckpt.pth").read_bytes()[:4000])
    result = vssl_cli("extract", tmp_path / "videos", "--out", tmp_path / "store", "--backbone", "videomae",
                      "--checkpoint", tmp_path / "ckpt.pth", "--quiet")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "truncated" in lines[0] and "ckpt.pth" in lines[0]
