"""Stage-two ablation switches (issue 12 §3): mask modes, mask ratio 0, loss weights, the split a run
resolved. Each mode is checked against a hand computation or its statistics with a fixed generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vssl.aggregate import ScaleConfig, ScaleModel, load_run, sample_sets, train
from vssl.aggregate.masking import draw_masks, expected_count, fixed_count
from vssl.aggregate.synthetic import structured_clip_features
from vssl.cli import main
from vssl.errors import VsslError
from vssl.features_store.synthetic import make_synthetic_store

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(**kw) -> ScaleConfig:
    base = dict(width=16, layers=1, heads=2, dropout=0.0, proj_dim=8, pred_hidden=24, target_hidden=20,
                epochs=1, batch_size=4)
    return ScaleConfig(**{**base, **kw})


def inputs(b: int = 4, k: int = 8, d: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    return torch.randn(b, k, d, generator=g), torch.rand(b, k, 7, generator=g)


# ---------------------------------------------------------------- the three modes


@pytest.mark.parametrize("ratio,size,count", [(0.25, 8, 2), (0.3, 8, 2), (0.05, 8, 1), (0.9, 4, 3), (0.5, 7, 4),
                                              (0.0, 8, 0)])
def test_fixed_is_the_rounded_count_clamped_to_one_and_s_minus_one(ratio, size, count):
    assert draw_masks("fixed", ratio, 3, size) == fixed_count(ratio, size) == count
    assert ScaleConfig(mask_ratio=ratio, use_mcm=ratio > 0).num_masked(size) == count


def test_bernoulli_is_a_coin_per_clip():
    masks = draw_masks("bernoulli", 0.25, 4000, 8, generator=gen(1))
    assert masks.shape == (4000, 2, 8) and masks.dtype == torch.bool
    p = masks.float().mean().item()
    assert abs(p - 0.25) < 4 * math.sqrt(0.25 * 0.75 / masks.numel())  # fraction ~ ratio
    per_set = masks.sum(-1).flatten().numpy()
    # counts per set are Binomial(8, 0.25): some sets mask nothing, every position is used alike
    assert abs((per_set == 0).mean() - 0.75 ** 8) < 0.01
    assert masks.float().mean((0, 1)).sub(0.25).abs().max() < 0.02
    assert torch.equal(masks, draw_masks("bernoulli", 0.25, 4000, 8, generator=gen(1)))  # same seed, same masks


def test_stochastic_rounds_ratio_times_s_down_or_up_with_the_right_mean():
    masks = draw_masks("stochastic", 0.3, 5000, 8, generator=gen(2))  # 0.3 x 8 = 2.4
    counts = masks.sum(-1).flatten()
    assert set(counts.tolist()) == {2, 3}
    assert abs(counts.float().mean().item() - 2.4) < 4 * math.sqrt(0.4 * 0.6 / counts.numel())
    # masked clips are the first positions of the (randomly ordered) set, as in fixed mode
    assert torch.equal(masks, torch.arange(8) < counts.view(5000, 2, 1))
    assert set(draw_masks("stochastic", 0.25, 50, 8, generator=gen(3)).sum(-1).flatten().tolist()) == {2}
    assert expected_count("stochastic", 0.3, 8) == pytest.approx(2.4)


def test_ratio_zero_masks_nothing_and_mcm_needs_a_ratio():
    for mode in ("fixed", "bernoulli", "stochastic"):
        m = draw_masks(mode, 0.0, 16, 8, generator=gen())
        assert (m == 0) if isinstance(m, int) else not m.any()
    with pytest.raises(VsslError, match="mask_ratio"):
        ScaleConfig(mask_ratio=0.0)
    cfg = tiny(mask_ratio=0.0, use_mcm=False)
    model = ScaleModel(cfg, 12)
    assert model.msk_token is None and model.pred_head is None and cfg.num_masked(8) == 0
    x, box = inputs()
    out = model.pretrain_losses(x, box, sample_sets(4, 8, 4, generator=gen()), cfg.num_masked(4))
    assert out["mcm_loss"].item() == 0.0 and out["loss"].item() == out["set_loss"].item() > 0
    with pytest.raises(VsslError, match="mask_mode"):
        ScaleConfig(mask_mode="coin")


# ---------------------------------------------------------------- the loss with a per-clip mask


def _hand_mcm(model: ScaleModel, clips: torch.Tensor, box: torch.Tensor, mask: torch.Tensor) -> float:
    """Eq. 6 written out: each masked clip's prediction against every clip's target, masked rows only."""
    c_hat, _ = model.encode(clips, box, mask)
    pred = F.normalize(model.pred_head(c_hat), dim=-1).reshape(-1, model.cfg.proj_dim).detach().numpy()
    tgt = F.normalize(model.target_head(clips), dim=-1).reshape(-1, model.cfg.proj_dim).detach().numpy()
    rows = np.flatnonzero(mask.reshape(-1).numpy())
    total = 0.0
    for r in rows:
        logits = pred[r] @ tgt.T / model.cfg.mcm_temperature
        total += -(logits[r] - np.log(np.exp(logits).sum()))
    return total / len(rows)


def test_mask_tensor_loss_counts_masked_rows_only():
    torch.manual_seed(0)
    model = ScaleModel(tiny(), 12).eval()
    x, box = inputs()
    sets = sample_sets(4, 8, 4, generator=gen(4))
    mask = draw_masks("bernoulli", 0.4, 4, 4, generator=gen(5))
    out = model.pretrain_losses(x, box, sets, mask)
    idx = sets.reshape(4, 8)
    clips = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, 12)).view(8, 4, 12)
    boxes = box.gather(1, idx.unsqueeze(-1).expand(-1, -1, 7)).view(8, 4, 7)
    assert out["mcm_loss"].item() == pytest.approx(_hand_mcm(model, clips, boxes, mask.view(8, 4)), rel=1e-5)
    # a tensor marking the first m positions is the fixed path
    first = torch.arange(4) < torch.full((4, 2, 1), 1)
    a, b = model.pretrain_losses(x, box, sets, first), model.pretrain_losses(x, box, sets, 1)
    assert a["loss"].item() == pytest.approx(b["loss"].item(), rel=1e-6)


def test_no_masked_clip_gives_zero_mcm_and_finite_gradients_all_masked_still_trains():
    model = ScaleModel(tiny(), 12)
    x, box = inputs()
    sets = sample_sets(4, 8, 4, generator=gen())
    none = torch.zeros(4, 2, 4, dtype=torch.bool)
    out = model.pretrain_losses(x, box, sets, none)
    assert out["mcm_loss"].item() == 0.0 and out["mcm_top1"].item() == 0.0
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad()
    every = torch.ones(4, 2, 4, dtype=torch.bool)  # a coin may mask a whole set (the released code allows it)
    out = model.pretrain_losses(x, box, sets, every)
    out["loss"].backward()
    assert math.isfinite(out["mcm_loss"].item()) and out["mcm_loss"].item() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---------------------------------------------------------------- loss weights (eq. 8)


def test_total_loss_is_the_weighted_sum_of_the_two_terms():
    x, box = inputs()
    sets = sample_sets(4, 8, 4, generator=gen(6))
    torch.manual_seed(0)
    plain = ScaleModel(tiny(), 12).eval()
    terms = plain.pretrain_losses(x, box, sets, 1)
    assert torch.equal(terms["loss"], terms["mcm_loss"] + terms["set_loss"])  # eq. 8 unweighted, exactly
    torch.manual_seed(0)
    weighted = ScaleModel(tiny(mcm_weight=0.3, set_weight=2.5), 12).eval()
    out = weighted.pretrain_losses(x, box, sets, 1)
    assert out["mcm_loss"].item() == terms["mcm_loss"].item() and out["set_loss"].item() == terms["set_loss"].item()
    assert out["loss"].item() == pytest.approx(0.3 * terms["mcm_loss"].item() + 2.5 * terms["set_loss"].item(),
                                               rel=1e-6)


def test_weight_zero_is_the_loss_switched_off():
    for off, on in (({"mcm_weight": 0.0}, {"use_mcm": False}), ({"set_weight": 0.0}, {"use_set": False})):
        a, b = ScaleModel(tiny(**off), 12), ScaleModel(tiny(**on), 12)
        assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    assert ScaleModel(tiny(mcm_weight=0.0), 12).pred_head is None
    with pytest.raises(VsslError, match="nothing to train"):
        ScaleConfig(mcm_weight=0.0, use_set=False)
    with pytest.raises(VsslError, match="set_weight"):
        ScaleConfig(set_weight=-1.0)


# ---------------------------------------------------------------- runs: masks in training, the split recorded


@pytest.fixture(scope="module")
def split_store(tmp_path_factory):
    n = 48
    feats, boxes = structured_clip_features(n, 8, 12, seed=1)
    path = tmp_path_factory.mktemp("splits") / "store"
    make_synthetic_store(path, feats, [i % 3 for i in range(n)], ["train", "test", "train", "val"] * (n // 4),
                         boxes=boxes, chunk_videos=16, view="random8")
    return path


def run_cfg(**kw) -> ScaleConfig:
    return tiny(batch_size=8, precision="fp32", device="cpu", **kw)


@pytest.mark.slow
@pytest.mark.parametrize("split,resolved,seen", [("train", "train", ["train"]), (None, "all", ["test", "train", "val"]),
                                                 ("auto", "train", ["train"])])
def test_trained_on_splits_records_the_resolved_split(split_store, tmp_path, split, resolved, seen):
    summary = train(split_store, "random8", tmp_path / "run", run_cfg(mask_mode="stochastic", mask_ratio=0.3),
                    split=split, quiet=True)
    _, _, meta = load_run(tmp_path / "run")
    assert (meta["split"], meta["trained_on_splits"]) == (resolved, seen)
    assert (summary.split, summary.trained_on_splits) == (resolved, seen)
    assert meta["mask_mode"] == "stochastic" and meta["num_masked"] is None and meta["expected_masked"] == 1.2


def test_auto_without_a_train_split_is_all(tmp_path):
    feats, boxes = structured_clip_features(16, 8, 12)
    make_synthetic_store(tmp_path / "s", feats, [0, 1] * 8, ["test"] * 16, boxes=boxes, view="random8")
    train(tmp_path / "s", "random8", tmp_path / "run", run_cfg(), quiet=True)
    meta = load_run(tmp_path / "run")[2]
    assert (meta["split"], meta["trained_on_splits"]) == ("all", ["test"])


def test_cli_flags_and_summary_name_the_split(split_store, tmp_path, capsys):
    run = tmp_path / "cli"
    with pytest.raises(SystemExit) as done:
        main(["aggregate", str(split_store), "--view", "random8", "--out", str(run), "--width", "16", "--heads", "2",
              "--layers", "1", "--pred-hidden", "24", "--target-hidden", "20", "--proj-dim", "8", "--epochs", "1",
              "--batch-size", "8", "--precision", "fp32", "--mask-mode", "bernoulli", "--mask-ratio", "0.5",
              "--mcm-weight", "0.5", "--set-weight", "2", "--quiet"])
    assert done.value.code in (0, None)
    assert "split 'train'" in capsys.readouterr().out
    cfg = load_run(run)[1]
    assert (cfg.mask_mode, cfg.mask_ratio, cfg.mcm_weight, cfg.set_weight) == ("bernoulli", 0.5, 0.5, 2.0)


def test_expected_masked_clips_follow_the_mode():
    """The run record's mean masked count: the fixed count itself, or ratio x S for the coins."""
    assert expected_count("fixed", 0.3, 8) == 2.0                   # round(2.4), clamped to [1, 7]
    assert expected_count("fixed", 0.01, 8) == 1.0
    assert expected_count("bernoulli", 0.3, 8) == pytest.approx(2.4)
    assert expected_count("stochastic", 0.3, 8) == pytest.approx(2.4)
