"""Extraction's overlapping parts: the decode-ahead thread, one batch in flight, the store writer thread."""

from __future__ import annotations

import errno
import signal
import threading
import time

import numpy as np
import pytest
import torch

from vssl.device import cudnn_autotune
from vssl.extract.prefetch import stream_ahead
from vssl.extract.writer import BackgroundWriter


def test_stream_ahead_keeps_order_bounds_how_far_it_runs_ahead_and_stops_with_the_consumer():
    made = []

    def stream(n):  # extraction's stream of plans and clip parts
        for i in range(n):
            made.append(i)
            yield i * 10

    seen = []
    for item in stream_ahead(stream(7), depth=2):
        time.sleep(0.01)
        seen.append(item)
        assert len(made) <= len(seen) + 3  # the queue's 2 and the one waiting to go in
    assert seen == [i * 10 for i in range(7)]
    made.clear()
    items = stream_ahead(stream(50), depth=2)
    assert next(items) == 0
    items.close()
    assert len(made) <= 5


def test_stream_ahead_hands_an_error_to_the_consumer():
    def stream():
        yield 1
        raise RuntimeError("decoder crashed")

    items = stream_ahead(stream())
    assert next(items) == 1
    with pytest.raises(RuntimeError, match="decoder crashed"):
        next(items)


def test_writer_runs_writes_in_order_and_hands_back_a_failure_unchanged():
    done = []
    with BackgroundWriter(depth=1) as writer:
        for i in range(5):
            writer.submit(done.append, i)
    assert done == list(range(5))

    def full_disk(_):
        raise OSError(errno.ENOSPC, "No space left on device")

    writer = BackgroundWriter()
    writer.submit(full_disk, 0)
    writer.submit(done.append, "after")  # may be accepted before the failure is seen...
    with pytest.raises(OSError) as exc:
        writer.close()
        writer.submit(done.append, "later")
    assert exc.value.errno == errno.ENOSPC
    assert "after" not in done  # ...but nothing after a failed chunk is written


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs a signal sent to the main thread")
def test_a_ctrl_c_while_waiting_for_the_writer_lets_the_chunk_being_written_finish():
    """Ctrl-C while the main thread waited for the last chunk's write ended the wait: the writer, a daemon
    thread, died with the interpreter in the middle of the chunk (redone by the rerun, or an abort)."""
    started, written = threading.Event(), []

    def slow_write(i):
        started.set()
        time.sleep(0.5)
        written.append(i)

    writer = BackgroundWriter()
    writer.submit(slow_write, 0)
    started.wait()
    ctrl_c = threading.Timer(0.1, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    ctrl_c.start()
    with pytest.raises(KeyboardInterrupt):
        writer.close()
    ctrl_c.join()
    assert written == [0]


@pytest.mark.slow
def test_extraction_with_batches_in_flight_equals_one_clip_at_a_time(tmp_path):
    """Batches span videos and are read back one batch late; every video still gets its own rows."""
    from vssl.demo.dataset import generate_dataset
    from vssl.extract.pipeline import extract
    from vssl.features_store import FeatureStore

    videos = generate_dataset(tmp_path / "videos", num_videos=5, frames=(20, 30), sizes=(48, 64))
    kw = dict(backbone="tiny", views="uniform:3x1", progress=False, device="cpu", precision="fp32", dtype="float32")
    extract(videos, tmp_path / "a", batch_size=4, **kw)  # 5 videos x 3 clips: batches cross videos
    extract(videos, tmp_path / "b", batch_size=1, **kw)
    a, b = FeatureStore.open(tmp_path / "a"), FeatureStore.open(tmp_path / "b")
    n = a.num_videos
    fa, fb = a.view("uniform3x1").read(np.arange(n)), b.view("uniform3x1").read(np.arange(n))
    np.testing.assert_allclose(fa.features, fb.features, rtol=1e-5, atol=1e-6)
    assert np.abs(fa.features).sum() > 0


def test_cudnn_autotune_is_scoped():
    before = torch.backends.cudnn.benchmark
    with cudnn_autotune(True):
        assert torch.backends.cudnn.benchmark
        with pytest.raises(RuntimeError):
            with cudnn_autotune(True):
                raise RuntimeError("a failing block still restores the flag")
    assert torch.backends.cudnn.benchmark == before


def test_fixed_position_table_is_built_once_per_grid(monkeypatch):
    from vssl.extract.backbones import video_vit
    from vssl.extract.backbones.video_vit import VIDEOMAE_SPEC, VideoViT
    from vssl.extract.backbones.vit_layers import ViTShape

    calls = []
    real = video_vit.sinusoid_table
    monkeypatch.setattr(video_vit, "sinusoid_table", lambda *a: calls.append(a) or real(*a))
    model = VideoViT(ViTShape(embed_dim=32, depth=1, num_heads=2, mlp_hidden=64, qkv_bias="qv"),
                     VIDEOMAE_SPEC.with_overrides(frames=4, size=32), pos_grid=(2, 2, 2)).freeze()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.inference_mode():
        first, second = model(x), model(x)
        other = model(torch.randn(1, 3, 4, 48, 48))  # another grid: its own (resized) table
    assert len(calls) == 2
    torch.testing.assert_close(first, second)
    model._fixed_tables.clear()
    with torch.inference_mode():
        torch.testing.assert_close(model(x), first)  # the cached table is the table
    assert other.shape == first.shape
