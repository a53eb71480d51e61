"""Stage two, store-independent parts: InfoNCE, set sampling, the model's masking, config, schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vssl.aggregate import ScaleConfig, ScaleModel, info_nce, sample_sets, symmetric_info_nce
from vssl.aggregate.sampling import mask_of
from vssl.aggregate.optim import lr_at, param_groups
from vssl.errors import VsslError


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(**kw) -> ScaleConfig:
    base = dict(width=16, layers=2, heads=2, mlp_ratio=2.0, dropout=0.0, proj_dim=8, pred_hidden=24,
                target_hidden=20, epochs=1, batch_size=4)
    base.update(kw)
    return ScaleConfig(**base)


# ---------------------------------------------------------------- InfoNCE (eq. 2-4) by hand


def _hand_info_nce(q, k, tau, pos):
    """-log softmax of cosine/tau, written with Python floats only."""
    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]
    qs, ks = [unit(v) for v in q], [unit(v) for v in k]
    losses = []
    for i, qi in enumerate(qs):
        logits = [sum(a * b for a, b in zip(qi, kj)) / tau for kj in ks]
        lse = math.log(sum(math.exp(z) for z in logits))
        losses.append(lse - logits[pos[i]])
    return sum(losses) / len(losses)


def test_info_nce_equals_hand_computation():
    q = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]]
    k = [[1.0, 1.0, 1.0], [0.0, -2.0, 0.5], [3.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]
    loss, top1 = info_nce(torch.tensor(q), torch.tensor(k), 0.2, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(_hand_info_nce(q, k, 0.2, [0, 1]), rel=1e-5)
    # cosines: row 0 -> [0.775, 0.217, 0.707, -0.447] picks 0; row 1 -> [-0.258, 0.868, 0.424, -0.447] picks 1
    assert top1.item() == 1.0
    loss_wrong, top1_wrong = info_nce(torch.tensor(q), torch.tensor(k), 0.2, torch.tensor([2, 0]))
    assert loss_wrong.item() == pytest.approx(_hand_info_nce(q, k, 0.2, [2, 0]), rel=1e-5)
    assert top1_wrong.item() == 0.0


def test_symmetric_info_nce_is_mean_of_both_directions():
    a = [[1.0, 0.2], [0.1, 1.0], [-1.0, 0.3]]
    b = [[0.9, 0.0], [0.5, 0.5], [-0.2, 1.0]]
    loss, top1 = symmetric_info_nce(torch.tensor(a), torch.tensor(b), 0.5)
    ref = 0.5 * (_hand_info_nce(a, b, 0.5, [0, 1, 2]) + _hand_info_nce(b, a, 0.5, [0, 1, 2]))
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    # the reported accuracy: each a_i finds b_i among the b's, and each b_j finds a_j among the a's
    na, nb = (np.asarray(v) / np.linalg.norm(v, axis=1, keepdims=True) for v in (a, b))
    sims = na @ nb.T
    a_to_b, b_to_a = (sims.argmax(1) == np.arange(3)).mean(), (sims.argmax(0) == np.arange(3)).mean()
    assert a_to_b != b_to_a                                     # the two directions differ on this pair
    assert top1.item() == pytest.approx(0.5 * (a_to_b + b_to_a))


def test_info_nce_temperature_sharpens():
    q, k = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.randn(6, 4)
    k = q + 0.1 * k  # positives are close: lower temperature -> lower loss
    assert info_nce(q, k, 0.05)[0] < info_nce(q, k, 1.0)[0]


# ---------------------------------------------------------------- set sampling


def test_sets_are_disjoint_and_inside_the_view():
    sets = sample_sets(500, 16, 8, generator=torch.Generator().manual_seed(1))
    assert sets.shape == (500, 2, 8)
    flat = sets.reshape(500, 16)
    assert int(flat.min()) >= 0 and int(flat.max()) < 16
    for row in flat.tolist():
        assert len(set(row)) == 16  # no clip in both sets (nor twice in one)


def test_sets_smaller_than_half_and_uniform_choice():
    sets = sample_sets(4000, 10, 3, generator=torch.Generator().manual_seed(2))
    counts = np.bincount(sets[:, 0].reshape(-1).numpy(), minlength=10)
    # each clip lands in set one with probability 3/10: 1200 expected of 4000 videos
    assert counts.min() > 1050 and counts.max() < 1350
    masked = np.bincount(sets[:, :, 0].reshape(-1).numpy(), minlength=10)  # first position = masked
    assert masked.min() > 650 and masked.max() < 950  # 8000 masked clips over 10 clips: 800 each
    with pytest.raises(ValueError):
        sample_sets(2, 10, 6)


def test_number_of_masked_clips():
    cfg = ScaleConfig()
    assert cfg.num_masked(8) == 2  # 0.25 x 8
    assert ScaleConfig(mask_ratio=0.05).num_masked(8) == 1  # at least one per set
    assert ScaleConfig(mask_ratio=0.9).num_masked(4) == 3  # at least one visible
    assert ScaleConfig(use_mcm=False).num_masked(8) == 0
    assert mask_of(8, 2).tolist() == [True, True] + [False] * 6


# ---------------------------------------------------------------- the model


def _inputs(b=3, k=8, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, d, generator=g), torch.rand(b, k, 7, generator=g)


def test_encode_shapes_and_mask_hides_content_but_not_box():
    torch.manual_seed(0)
    model = ScaleModel(tiny_cfg(), 12).eval()
    x, box = _inputs()
    mask = torch.tensor([True, False, False, True, False, False, False, False])
    clips, cls = model.encode(x, box, mask)
    assert clips.shape == (3, 8, 16) and cls.shape == (3, 16)
    x2 = x.clone()
    x2[:, mask] += 5.0  # masked clips' content is replaced by MSK: no output may change
    c2, s2 = model.encode(x2, box, mask)
    assert torch.allclose(c2, clips) and torch.allclose(s2, cls)
    box2 = box.clone()
    box2[:, 0, 0] += 0.5  # ...but a masked clip's box embedding is still added
    c3, _ = model.encode(x, box2, mask)
    assert not torch.allclose(c3, clips)
    c4, _ = model.encode(x2, box)  # without a mask the content is seen
    assert not torch.allclose(c4, clips)


def test_output_is_permutation_equivariant():
    """No positional order besides the boxes: permuting clips permutes outputs, CLS unchanged."""
    torch.manual_seed(0)
    model = ScaleModel(tiny_cfg(), 12).eval()
    x, box = _inputs()
    perm = torch.tensor([3, 1, 7, 0, 2, 6, 5, 4])
    c, s = model.encode(x, box)
    cp, sp = model.encode(x[:, perm], box[:, perm])
    assert torch.allclose(cp, c[:, perm], atol=1e-5) and torch.allclose(sp, s, atol=1e-5)


def _official_style_mcm(model, feats, boxes, sets, m, tau):
    """Reference: prediction head on every clip and the full (2BS)x(2BS) logit matrix, then the
    masked rows only (what the released code computes)."""
    b, _, d = feats.shape
    s = sets.shape[-1]
    idx = sets.reshape(b, 2 * s)
    clips = torch.gather(feats, 1, idx[..., None].expand(-1, -1, d)).reshape(2 * b, s, d)
    bx = torch.gather(boxes, 1, idx[..., None].expand(-1, -1, 7)).reshape(2 * b, s, 7)
    mask = torch.zeros(2 * b, s, dtype=torch.bool)
    mask[:, :m] = True
    c_hat, _ = model.encode(clips, bx, mask)
    pred = F.normalize(model.pred_head(c_hat.reshape(-1, c_hat.shape[-1])), dim=-1)
    targ = F.normalize(model.target_head(clips.reshape(-1, d)), dim=-1)
    logp = torch.log_softmax(pred @ targ.T / tau, dim=1)
    return -torch.diagonal(logp)[mask.reshape(-1)].mean()


def test_mcm_uses_masked_positions_only_and_matches_the_dense_formulation():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = ScaleModel(cfg, 12).eval()  # eval: no dropout, so both computations see the same net
    x, box = _inputs(b=5, k=8)
    sets = sample_sets(5, 8, 4, generator=torch.Generator().manual_seed(3))
    seen = {}
    def record(mod, inp, out):
        seen["rows"] = inp[0].shape[0]

    hook = model.pred_head.register_forward_hook(record)
    out = model.pretrain_losses(x, box, sets, num_masked=1)
    hook.remove()
    assert seen["rows"] == 2 * 5 * 1  # the prediction head ran on the masked clips only
    ref = _official_style_mcm(model, x, box, sets, 1, cfg.mcm_temperature)
    assert out["mcm_loss"].item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.isfinite(out["loss"]) and out["loss"].item() == pytest.approx(
        out["mcm_loss"].item() + out["set_loss"].item(), rel=1e-6)


def test_set_loss_pairs_the_two_sets_of_each_video():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = ScaleModel(cfg, 12).eval()
    x, box = _inputs(b=4, k=8)
    sets = sample_sets(4, 8, 4, generator=torch.Generator().manual_seed(4))
    out = model.pretrain_losses(x, box, sets, num_masked=1)
    idx = sets.reshape(4, 8)
    clips = torch.gather(x, 1, idx[..., None].expand(-1, -1, 12)).reshape(8, 4, 12)
    bx = torch.gather(box, 1, idx[..., None].expand(-1, -1, 7)).reshape(8, 4, 7)
    _, cls = model.encode(clips, bx, mask_of(4, 1))
    z = model.set_head(cls).reshape(4, 2, -1).detach()
    ref = 0.5 * (_hand_info_nce(z[:, 0].tolist(), z[:, 1].tolist(), cfg.set_temperature, [0, 1, 2, 3])
                 + _hand_info_nce(z[:, 1].tolist(), z[:, 0].tolist(), cfg.set_temperature, [0, 1, 2, 3]))
    assert out["set_loss"].item() == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize("use_mcm,use_set", [(True, False), (False, True)])
def test_loss_switches(use_mcm, use_set):
    model = ScaleModel(tiny_cfg(use_mcm=use_mcm, use_set=use_set), 12)
    x, box = _inputs(b=4)
    out = model.pretrain_losses(x, box, sample_sets(4, 8, 4), num_masked=1 if use_mcm else 0)
    assert (out["mcm_loss"].item() > 0) == use_mcm and (out["set_loss"].item() > 0) == use_set
    assert (model.pred_head is not None) == use_mcm and (model.set_head is not None) == use_set
    out["loss"].backward()  # every remaining parameter is used
    assert all(p.grad is not None for p in model.parameters())


def test_bf16_autocast_losses_close_to_fp32():
    torch.manual_seed(0)
    model = ScaleModel(tiny_cfg(), 12).eval()
    x, box = _inputs(b=6)
    sets = sample_sets(6, 8, 4, generator=torch.Generator().manual_seed(5))
    ref = model.pretrain_losses(x, box, sets, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.pretrain_losses(x.half(), box, sets, 1)
    assert low["loss"].dtype == torch.float32
    assert low["loss"].item() == pytest.approx(ref["loss"].item(), rel=2e-2)


# ---------------------------------------------------------------- config, optimiser, schedule


def test_defaults_are_the_papers_and_official_settings():
    cfg = ScaleConfig()
    assert (cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, cfg.dropout) == (256, 2, 8, 2.0, 0.1)
    assert (cfg.mask_ratio, cfg.mcm_temperature, cfg.set_temperature, cfg.proj_dim) == (0.25, 0.2, 0.2, 128)
    assert (cfg.lr, cfg.weight_decay, cfg.warmup, cfg.batch_size, cfg.epochs) == (3e-4, 1e-4, 0.05, 512, 500)
    assert cfg.resolve_set_size(16) == 8
    model = ScaleModel(cfg, 768)
    assert [m.out_features for m in model.pred_head if hasattr(m, "out_features")] == [4096, 128]
    assert [m.out_features for m in model.target_head if hasattr(m, "out_features")] == [2048, 2048, 128]
    assert all(m.bias is None for m in model.target_head if hasattr(m, "bias"))


def test_config_roundtrip_toml_and_errors(tmp_path):
    cfg = ScaleConfig(width=64, heads=4, set_size=5)
    assert ScaleConfig.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "a.toml").write_text("[aggregate]\nwidth = 64\nheads = 4\nset-size = 5\nlr = 1e-3\n")
    loaded = ScaleConfig.from_toml(tmp_path / "a.toml", {"lr": 2e-3, "epochs": None})
    assert (loaded.width, loaded.set_size, loaded.lr, loaded.epochs) == (64, 5, 2e-3, 500)
    (tmp_path / "b.toml").write_text("widht = 64\n")
    with pytest.raises(VsslError, match="widht"):
        ScaleConfig.from_toml(tmp_path / "b.toml")
    with pytest.raises(VsslError, match="heads"):
        ScaleConfig(width=30, heads=8)
    (tmp_path / "c.toml").write_text("width = '256'\n")
    with pytest.raises(VsslError, match="width='256' must be an integer"):
        ScaleConfig.from_toml(tmp_path / "c.toml")
    with pytest.raises(VsslError, match="set_size"):
        ScaleConfig(set_size=9).resolve_set_size(16)
    with pytest.raises(VsslError, match="does not exist"):
        ScaleConfig.from_toml(tmp_path / "missing.toml")


def test_lr_schedule_warmup_then_cosine():
    total, base = 1000, 3e-4
    assert lr_at(0, total, base, 0.05) == 0.0
    assert lr_at(25, total, base, 0.05) == pytest.approx(base / 2)
    assert lr_at(50, total, base, 0.05) == pytest.approx(base)
    assert lr_at(525, total, base, 0.05) == pytest.approx(base / 2)  # half-way through the cosine
    assert lr_at(1000, total, base, 0.05) == pytest.approx(0.0, abs=1e-12)


def test_no_weight_decay_on_biases_norms_tokens():
    model = ScaleModel(tiny_cfg(), 12)
    decay, no_decay = param_groups(model, 1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "msk_token", "norm.weight", "norm.bias", "input_proj.bias"} <= nd
    assert all(names[id(p)].endswith("weight") and p.ndim == 2 for p in decay["params"])
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0


# ---------------------------------------------------------------- dropout


def test_fast_dropout_statistics_gradient_and_repeatability():
    from vssl.aggregate.dropout import dropout

    x = torch.ones(200_000, requires_grad=True)
    torch.manual_seed(7)
    y = dropout(x, 0.1, training=True)
    kept = y.detach() != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.004  # binomial sd ~0.0007
    assert torch.allclose(y.detach()[kept], torch.full((int(kept.sum()),), 1 / 0.9), rtol=1e-4)
    assert abs(y.detach().mean().item() - 1.0) < 0.005  # expectation preserved
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(out)/dx = mask / (1 - p)
    # neighbouring elements are independent (they come from different 16-bit lanes of one word)
    pairs = kept[:-1:2].float() * kept[1::2].float()
    assert abs(pairs.mean().item() - 0.81) < 0.006
    torch.manual_seed(7)
    assert torch.equal(dropout(x, 0.1, training=True), y)  # seeded -> repeatable
    assert dropout(x, 0.1, training=False) is x
