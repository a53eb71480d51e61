"""Probe batches gather from features held on the GPU when they fit, equal to numpy's gathers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vssl.probe import resident
from vssl.probe.resident import ResidentArrays

CUDA = torch.device("cuda")


@pytest.fixture
def fake_gpu(monkeypatch):
    """The CUDA rule without a GPU: a "device" copy is a host tensor, the free memory is patched."""
    free = {"bytes": 1 << 30}
    uploads = []

    def to_device(array, device):
        uploads.append(array)
        return torch.from_numpy(np.ascontiguousarray(array))

    monkeypatch.setattr(resident, "to_device", to_device)
    monkeypatch.setattr(resident, "free_memory_bytes", lambda device: free["bytes"])
    monkeypatch.setattr(resident, "upload", lambda x, device: torch.from_numpy(np.ascontiguousarray(x)).float())
    return free, uploads


def test_resident_gathers_equal_numpy_and_each_array_is_uploaded_once(fake_gpu):
    _, uploads = fake_gpu
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20, 4, 8)).astype(np.float16)  # stored dtype: float16
    arrays = ResidentArrays()
    for _ in range(3):  # epochs
        idx = rng.integers(0, 20, size=7)
        got = arrays.gather(features, idx, CUDA)
        assert got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), features[idx].astype(np.float32))
        rows = rng.integers(0, 80, size=9)
        np.testing.assert_array_equal(arrays.gather(features, rows, CUDA, rows=True).numpy(),
                                      features.reshape(-1, 8)[rows].astype(np.float32))
    assert len(uploads) == 1 and arrays.is_resident(features, CUDA)


def test_an_array_that_does_not_fit_is_gathered_on_the_host(fake_gpu):
    free, uploads = fake_gpu
    free["bytes"] = 10
    features = np.arange(60, dtype=np.float32).reshape(5, 3, 4)
    arrays = ResidentArrays()
    assert not arrays.is_resident(features, CUDA)
    np.testing.assert_array_equal(arrays.gather(features, np.array([4, 0]), CUDA).numpy(), features[[4, 0]])
    np.testing.assert_array_equal(arrays.gather(features, np.array([13]), CUDA, rows=True).numpy(),
                                  features.reshape(-1, 4)[[13]])
    assert not uploads


def test_on_the_cpu_numpy_gathers_and_nothing_is_copied():
    features = np.arange(24, dtype=np.float16).reshape(4, 3, 2)
    arrays = ResidentArrays()
    cpu = torch.device("cpu")
    np.testing.assert_array_equal(arrays.gather(features, np.array([3, 1]), cpu).numpy(),
                                  features[[3, 1]].astype(np.float32))
    assert not arrays.is_resident(features, cpu)
