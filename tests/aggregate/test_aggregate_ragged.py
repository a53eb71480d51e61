"""Stage two on ragged views: variable-length sets drawn from each video's own clips.

What must hold: a ragged view whose videos all have K clips trains exactly as the fixed view
(same sets, masks and losses); padding never leaks (its values change no loss, gradient or real
output); the padded batch computes what each set computed alone would; short videos give short
sets; resident and streaming sources give the same run.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.aggregate_helpers import assert_same_weights
from vssl.aggregate import ScaleConfig, ScaleModel, train
from vssl.aggregate.data import RaggedBatch
from vssl.aggregate.masking import MASK_MODES, draw_masks, draw_ragged_masks
from vssl.aggregate.sampling import sample_ragged_sets, sample_sets, set_lengths
from vssl.aggregate.synthetic import structured_clip_features
from vssl.features_store.synthetic import make_synthetic_store

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(**kw) -> ScaleConfig:
    base = dict(width=16, layers=2, heads=2, mlp_ratio=2.0, dropout=0.0, proj_dim=8, pred_hidden=24,
                target_hidden=24, epochs=2, batch_size=8, lr=1e-3, warmup=0.0, seed=1, device="cpu",
                precision="fp32", checkpoint_every=1)
    base.update(kw)
    return ScaleConfig(**base)


def metrics(run) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- sampling


def test_ragged_sets_are_disjoint_clips_of_the_video_and_short_videos_give_short_sets():
    counts = torch.tensor([2, 3, 7, 16, 40, 5])
    idx, valid = sample_ragged_sets(counts, 4, generator=torch.Generator().manual_seed(0))
    assert idx.shape == valid.shape == (6, 2, 4)
    np.testing.assert_array_equal(valid.sum(-1)[:, 0].numpy(), set_lengths(counts.numpy(), 4))
    np.testing.assert_array_equal(set_lengths(counts.numpy(), 4), [1, 1, 3, 4, 4, 2])
    for v, n in enumerate(counts.tolist()):
        real = idx[v][valid[v]].tolist()
        assert len(real) == len(set(real)) and all(0 <= c < n for c in real)  # disjoint, the video's own
        assert (idx[v][~valid[v]] == 0).all()                                 # padding points at nothing real


def test_ragged_sets_draw_each_clip_uniformly():
    counts = torch.tensor([6] * 3000)
    idx, valid = sample_ragged_sets(counts, 2, generator=torch.Generator().manual_seed(1))
    freq = np.bincount(idx[valid].numpy(), minlength=6) / (3000 * 4)
    np.testing.assert_allclose(freq, 1 / 6, atol=0.01)


@pytest.mark.parametrize("mode", MASK_MODES)
def test_all_full_ragged_sets_and_masks_are_the_fixed_ones(mode):
    k, s, b = 10, 4, 7
    fixed = sample_sets(b, k, s, generator=torch.Generator().manual_seed(3))
    idx, valid = sample_ragged_sets(torch.full((b,), k), s, generator=torch.Generator().manual_seed(3))
    assert valid.all() and torch.equal(idx, fixed)
    want = draw_masks(mode, 0.3, b, s, generator=torch.Generator().manual_seed(4))
    got = draw_ragged_masks(mode, 0.3, torch.full((b, 2), s), s, generator=torch.Generator().manual_seed(4))
    want = torch.arange(s) < want if isinstance(want, int) else want
    assert torch.equal(got, want.expand_as(got))


def test_ragged_masks_use_each_sets_own_size_and_never_mask_padding():
    lengths = torch.tensor([[1, 1], [3, 3], [8, 8]])
    fixed = draw_ragged_masks("fixed", 0.25, lengths, 8)
    assert fixed.sum(-1).tolist() == [[0, 0], [1, 1], [2, 2]]  # round(0.25 s) clamped to 1..s-1
    for mode in ("bernoulli", "stochastic"):
        m = draw_ragged_masks(mode, 0.5, lengths.repeat(200, 1), 8, generator=torch.Generator().manual_seed(0))
        assert not (m & ~(torch.arange(8) < lengths.repeat(200, 1)[..., None])).any()
    m = draw_ragged_masks("stochastic", 0.5, torch.tensor([[3, 3]]).repeat(4000, 1), 8,
                          generator=torch.Generator().manual_seed(0))
    assert m.sum(-1).float().mean().item() == pytest.approx(1.5, abs=0.05)  # floor or ceil of 1.5, mean 1.5


# ---------------------------------------------------------------- the model on padded sets


def padded_inputs(seed: int = 0, d: int = 6):
    """Two videos with sets of 3 and 1 real clips (padded to S=3), one with full sets."""
    g = torch.Generator().manual_seed(seed)
    clips = torch.randn(3, 2, 3, d, generator=g)
    boxes = torch.rand(3, 2, 3, 7, generator=g)
    valid = torch.tensor([[[1, 1, 1]] * 2, [[1, 0, 0]] * 2, [[1, 1, 0]] * 2], dtype=torch.bool)
    masked = torch.tensor([[[1, 0, 0]] * 2, [[0, 0, 0]] * 2, [[0, 1, 0]] * 2], dtype=torch.bool)
    return clips, boxes, valid, masked


def losses_and_grads(model, clips, boxes, valid, masked):
    model.zero_grad()
    torch.manual_seed(7)  # the same dropout masks in both calls
    out = model.set_losses(clips, boxes, valid, masked)
    out["loss"].backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_padding_values_change_no_loss_gradient_or_real_output():
    torch.manual_seed(0)
    model = ScaleModel(tiny_cfg(dropout=0.1), 6)
    clips, boxes, valid, masked = padded_inputs()
    garbage_clips = torch.where(valid[..., None], clips, 100 * torch.randn_like(clips))
    garbage_boxes = torch.where(valid[..., None], boxes, 50 * torch.randn_like(boxes))
    a, ga = losses_and_grads(model, clips * valid[..., None], boxes * valid[..., None], valid, masked)
    b, gb = losses_and_grads(model, garbage_clips, garbage_boxes, valid, masked)
    for key in ("loss", "mcm_loss", "set_loss", "mcm_top1", "set_top1"):
        assert torch.equal(a[key], b[key]), key
    assert ga.keys() == gb.keys() and len(ga) > 10
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=0, atol=1e-7, msg=name)
    model.eval()
    fv = valid.reshape(6, 3)
    c0, s0 = model.encode(clips.reshape(6, 3, -1), boxes.reshape(6, 3, -1), valid=fv)
    c1, s1 = model.encode(garbage_clips.reshape(6, 3, -1), garbage_boxes.reshape(6, 3, -1), valid=fv)
    torch.testing.assert_close(s1, s0, rtol=0, atol=1e-6)
    torch.testing.assert_close(c1[fv], c0[fv], rtol=0, atol=1e-6)


def test_a_padded_batch_computes_what_each_set_alone_computes():
    """Reference: every set encoded alone at its own length (no padding, no attention mask), and
    eq. 6 / eq. 3 written out over the real clips only."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = ScaleModel(cfg, 6).eval()
    clips, boxes, valid, masked = padded_inputs(seed=2)
    got = model.set_losses(clips, boxes, valid, masked)
    cls, preds, targets, own = [], [], [], []
    real_rows = 0
    for v in range(3):
        for j in range(2):
            n = int(valid[v, j].sum())
            c_hat, token = model.encode(clips[v, j, :n][None], boxes[v, j, :n][None], masked[v, j, :n][None])
            cls.append(token[0])
            for i in range(n):
                if masked[v, j, i]:
                    preds.append(model.pred_head(c_hat[0, i]))
                    own.append(real_rows + i)
            targets.append(model.target_head(clips[v, j, :n]))
            real_rows += n
    keys = F.normalize(torch.cat(targets), dim=-1)
    logits = F.normalize(torch.stack(preds), dim=-1) @ keys.T / cfg.mcm_temperature
    mcm = F.cross_entropy(logits, torch.tensor(own))
    z = F.normalize(model.set_head(torch.stack(cls)), dim=-1).view(3, 2, -1)
    sl = z[:, 0] @ z[:, 1].T / cfg.set_temperature
    target = torch.arange(3)
    set_loss = 0.5 * (F.cross_entropy(sl, target) + F.cross_entropy(sl.T, target))
    torch.testing.assert_close(got["mcm_loss"], mcm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["set_loss"], set_loss, rtol=1e-5, atol=1e-6)


def test_ragged_batch_gathers_each_videos_own_rows_and_zeros_padding():
    feats = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 3)
    batch = RaggedBatch(feats, feats[:, :1].repeat(1, 7), torch.tensor([0, 4]))  # videos of rows 0-3, 4-9
    idx = torch.tensor([[[3, 1], [0, 0]], [[5, 0], [2, 4]]])
    valid = torch.tensor([[[1, 1], [1, 0]], [[1, 1], [1, 1]]], dtype=torch.bool)
    clips, boxes = batch.sets(idx, valid)
    assert clips[..., 0].tolist() == [[[3, 1], [0, 0]], [[9, 4], [6, 8]]]
    assert boxes.shape == (2, 2, 2, 7) and boxes[0, 1, 1].abs().sum() == 0


# ---------------------------------------------------------------- training end to end


def equal_k_stores(tmp_path, k: int = 8, n: int = 16):
    feats, boxes = structured_clip_features(n, k, 12, seed=4)
    fixed = make_synthetic_store(tmp_path / "fixed", feats, np.zeros(n, int), ["train"] * n, view="v",
                                 boxes=boxes, chunk_videos=8, dtype="float32")
    ragged = make_synthetic_store(tmp_path / "ragged", list(feats), np.zeros(n, int), ["train"] * n, view="v",
                                  boxes=list(boxes), chunk_videos=8, dtype="float32")
    assert fixed.view("v").layout == "fixed" and ragged.view("v").layout == "ragged"
    return tmp_path / "fixed", tmp_path / "ragged"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fixed", "bernoulli"])
def test_a_ragged_view_of_k_clips_everywhere_trains_as_the_fixed_view(tmp_path, mode):
    fixed, ragged = equal_k_stores(tmp_path)
    cfg = tiny_cfg(set_size=3, mask_mode=mode, dropout=0.1)
    train(fixed, "v", tmp_path / "run_fixed", cfg, quiet=True)
    train(ragged, "v", tmp_path / "run_ragged", cfg, quiet=True)
    a, b = metrics(tmp_path / "run_fixed"), metrics(tmp_path / "run_ragged")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        for key in ("loss", "mcm_loss", "set_loss", "mcm_top1", "set_top1"):
            assert float(rb[key]) == pytest.approx(float(ra[key]), rel=1e-5, abs=1e-6), key
    sa = torch.load(tmp_path / "run_fixed" / "checkpoint.pt", weights_only=True)
    sb = torch.load(tmp_path / "run_ragged" / "checkpoint.pt", weights_only=True)
    assert_same_weights(sa["model"], sb["model"], width=16)
    assert sb["meta"]["layout"] == "ragged" and sb["meta"]["num_clips"] is None


@pytest.mark.slow
def test_ragged_training_streams_as_it_runs_resident_and_skips_one_clip_videos(tmp_path):
    rng = np.random.default_rng(0)
    counts = [1, 2, 3, 5, 9, 30, 4, 2, 12, 6, 1, 7, 3, 8, 20, 2, 5, 4]
    feats = [rng.normal(size=(c, 6)).astype(np.float32) for c in counts]
    make_synthetic_store(tmp_path / "s", feats, np.zeros(len(counts), int), ["train"] * len(counts), view="d",
                         chunk_videos=5)
    said = []
    cfg = tiny_cfg(set_size=4, mask_mode="stochastic")
    resident = train(tmp_path / "s", "d", tmp_path / "a", cfg, quiet=True, log=said.append)
    streamed = train(tmp_path / "s", "d", tmp_path / "b", ScaleConfig(**{**cfg.to_dict(), "max_memory_bytes": 1}),
                     quiet=True)
    assert resident.resident and not streamed.resident
    assert resident.num_videos == len(counts) - 2  # the two one-clip videos cannot give two sets
    assert any("single clip" in line for line in said)
    assert [r["loss"] for r in metrics(tmp_path / "a")] == [r["loss"] for r in metrics(tmp_path / "b")]
    assert all(np.isfinite(float(r["loss"])) for r in metrics(tmp_path / "a"))
