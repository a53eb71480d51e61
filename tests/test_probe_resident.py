"""Probe batches gather from features held on the device (zero-copy on the CPU), equal to numpy's gathers."""

from __future__ import annotations

import numpy as np
import torch

from vssl.probe.resident import ResidentArrays


def test_gathers_equal_numpy_and_each_array_goes_to_the_device_once():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20, 4, 8)).astype(np.float16)  # stored dtype: float16
    arrays = ResidentArrays()
    cpu = torch.device("cpu")
    for _ in range(3):  # epochs
        idx = rng.integers(0, 20, size=7)
        got = arrays.gather(features, idx, cpu)
        assert got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), features[idx].astype(np.float32))
        rows = rng.integers(0, 80, size=9)
        np.testing.assert_array_equal(arrays.gather(features, rows, cpu, rows=True).numpy(),
                                      features.reshape(-1, 8)[rows].astype(np.float32))
    assert len(arrays._on) == 1 and arrays.is_resident(features, cpu)


def test_an_array_that_does_not_fit_is_gathered_on_the_host(monkeypatch):
    """The CUDA rule, with the device's free memory patched: too big -> host gather + upload."""
    from vssl.probe import resident

    features = np.arange(60, dtype=np.float32).reshape(5, 3, 4)
    monkeypatch.setattr(resident, "free_memory_bytes", lambda device: 10)  # bytes
    arrays = ResidentArrays()
    cuda = torch.device("cuda")
    assert not arrays.is_resident(features, cuda)
    monkeypatch.setattr(resident, "upload", lambda x, device: torch.from_numpy(np.ascontiguousarray(x)))
    np.testing.assert_array_equal(arrays.gather(features, np.array([4, 0]), cuda).numpy(), features[[4, 0]])
    np.testing.assert_array_equal(arrays.gather(features, np.array([13]), cuda, rows=True).numpy(),
                                  features.reshape(-1, 4)[[13]])
