"""CUDA device, precision and backend rules, reached on CPU with a patched ``torch.cuda``."""

from __future__ import annotations

import pytest
import torch

import vssl.distributed.ranks as ranks
from vssl.device import resolve_precision
from vssl.distributed import RankEnv
from vssl.errors import VsslError


@pytest.fixture
def gpus(monkeypatch):
    """A machine with two GPUs of a chosen compute capability."""
    state = {"capability": {0: (7, 0), 1: (9, 0)}, "set": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # true by emulation on Volta
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda d=None: state["capability"][torch.device(d).index or 0])
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: state["set"].append(i))
    return state


def test_auto_precision_asks_the_requested_gpu_for_native_bf16(gpus):
    assert resolve_precision("auto", torch.device("cuda:0")) == "fp16"  # Volta: bf16 only emulated
    assert resolve_precision("auto", torch.device("cuda:1")) == "bf16"  # Hopper
    assert resolve_precision("fp16", torch.device("cuda:0")) == "fp16"
    with pytest.raises(VsslError, match="fp16 needs CUDA"):
        resolve_precision("fp16", torch.device("cpu"))


def joined(monkeypatch, device: str, local_rank: int = 1, backend: str = "auto") -> str:
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", str(max(2, local_rank + 1)))
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29999")
    monkeypatch.setattr(ranks.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(ranks.dist, "init_process_group", lambda backend, **k: seen.update(backend=backend))
    monkeypatch.setattr(ranks.dist, "destroy_process_group", lambda: None)
    with ranks.process_group(backend, device=device):
        pass
    return seen["backend"]


def test_backend_follows_the_runs_device_not_the_machine(gpus, monkeypatch):
    assert joined(monkeypatch, "cpu") == "gloo" and gpus["set"] == []  # --device cpu on a GPU machine
    assert joined(monkeypatch, "cuda") == "nccl" and gpus["set"] == [1]  # each rank its LOCAL_RANK's GPU
    assert joined(monkeypatch, "auto") == "nccl"
    assert joined(monkeypatch, "cuda", backend="gloo") == "gloo"  # stage one exchanges objects only


def test_pinned_gpu_and_more_ranks_than_gpus_are_refused(gpus, monkeypatch):
    with pytest.raises(VsslError, match="every rank on GPU 1"):
        joined(monkeypatch, "cuda:1")
    with pytest.raises(VsslError, match="LOCAL_RANK 2 but this node has 2 GPU"):
        joined(monkeypatch, "cuda", local_rank=2)
    assert ranks.rank_gpu(RankEnv(1, 2, 1)) == 1


def test_no_cuda_means_gloo_and_a_clear_error_for_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert joined(monkeypatch, "auto") == "gloo"
    with pytest.raises(VsslError, match="CUDA is not available"):
        joined(monkeypatch, "cuda")
