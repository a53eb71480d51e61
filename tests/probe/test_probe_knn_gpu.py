"""k-NN's CUDA rules on CPU: GPU faiss never sees k > 2048 (it aborts), and the torch search runs
with the matmul numerics its exactness bound assumes, restoring the caller's after."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vssl.probe.knn as knn
from vssl.probe.knn import GPU_FAISS_MAX_K, KnnConfig, resolve_backend, search


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def gpu_faiss(monkeypatch):
    """A CUDA device with GPU faiss: the GPU index is a CPU index that aborts above faiss's k limit,
    and the torch search runs on the CPU (the fallback's result is what is checked)."""
    import faiss

    calls = {"gpu_index": 0, "torch": 0}

    class GpuIndex:
        def __init__(self, index):
            self.index = index

        def add(self, x):
            self.index.add(x)

        def search(self, x, k):
            if k > GPU_FAISS_MAX_K:
                raise AssertionError(f"GPU faiss aborts the process with k={k}")
            return self.index.search(x, k)

    def to_gpu(resources, device, index):
        calls["gpu_index"] += 1
        return GpuIndex(index)

    real_torch = knn._search_torch

    def torch_on_cpu(train, test, k, device, *rest):
        calls["torch"] += 1
        return real_torch(train, test, k, torch.device("cpu"), *rest)

    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    monkeypatch.setattr(knn, "resolve_device", lambda d: torch.device("cuda:0"))
    monkeypatch.setattr(knn, "_search_torch", torch_on_cpu)
    return calls


def test_gpu_faiss_above_2048_neighbours_falls_back_to_torch(gpu_faiss):
    rng = np.random.default_rng(0)
    tr, te = unit(rng.normal(size=(GPU_FAISS_MAX_K + 200, 16))), unit(rng.normal(size=(5, 16)))
    for backend in ("auto", "faiss"):
        sims, idx = search(tr, te, KnnConfig(k=GPU_FAISS_MAX_K + 1, backend=backend))
        ref = np.argsort(-(te.astype(np.float64) @ tr.T.astype(np.float64)), axis=1)[:, :GPU_FAISS_MAX_K + 1]
        np.testing.assert_array_equal(np.sort(idx, 1), np.sort(ref, 1))
    assert gpu_faiss == {"gpu_index": 0, "torch": 2}
    search(tr, te, KnnConfig(k=GPU_FAISS_MAX_K))  # at the limit: GPU faiss
    assert gpu_faiss == {"gpu_index": 1, "torch": 2}
    cuda = torch.device("cuda")
    assert resolve_backend(KnnConfig(k=GPU_FAISS_MAX_K + 1), cuda) == "torch"
    assert resolve_backend(KnnConfig(k=GPU_FAISS_MAX_K + 1), cuda, k=GPU_FAISS_MAX_K) == "faiss"  # few videos


def test_cpu_faiss_keeps_large_k(monkeypatch):
    monkeypatch.setattr(knn, "_faiss_has_gpu", lambda: False)
    assert resolve_backend(KnnConfig(k=5000), torch.device("cpu")) == "faiss"


def flags() -> tuple:
    return (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)


@pytest.fixture
def callers_flags():
    """A caller that turned TF32 and bf16 reduced-precision reductions on (as training used to)."""
    before = flags()
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
    yield ("high", True, True)
    torch.set_float32_matmul_precision(before[0])
    torch.backends.cudnn.allow_tf32 = before[1]
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = before[2]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_torch_search_runs_without_tf32_or_bf16_reductions_and_restores_them(callers_flags, monkeypatch, precision):
    seen = []
    real = knn._search_torch

    def spy(*args):
        seen.append(flags())
        assert not torch.backends.cuda.matmul.allow_tf32
        return real(*args)

    monkeypatch.setattr(knn, "_search_torch", spy)
    rng = np.random.default_rng(1)
    tr, te = unit(rng.normal(size=(300, 8))), unit(rng.normal(size=(4, 8)))
    search(tr, te, KnnConfig(backend="torch", precision=precision, device="cpu"))
    assert seen == [("highest", False, False)]
    assert flags() == callers_flags


def test_flags_are_restored_when_the_search_fails(callers_flags, monkeypatch):
    def boom(*args):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(knn, "_search_torch", boom)
    rng = np.random.default_rng(2)
    with pytest.raises(RuntimeError, match="out of memory"):
        search(unit(rng.normal(size=(30, 8))), unit(rng.normal(size=(3, 8))), KnnConfig(backend="torch", device="cpu"))
    assert flags() == callers_flags
