"""Probe training as SCALE trains (released src/train.py get_optimizer): warm-up then cosine per
step, no weight decay on biases/norms/tokens, and the (batch size, optimizer) axes of the grid."""

from __future__ import annotations

import math

import numpy as np
import pytest

import vssl.probe.train as train_mod
from vssl.probe.train import select
from vssl.aggregate import ScaleConfig, ScaleModel
from vssl.probe.linear import LinearConfig, train_linear
from vssl.probe.mlp import MlpConfig, train_mlp
from vssl.probe.transformer import FinetuneConfig, TransformerConfig, train_finetune, train_transformer

C, D = 3, 6


def _clips(n=40, k=1, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    x = (2 * rng.normal(size=(C, D))[y][:, None] + rng.normal(size=(n, k, D))).astype(np.float32)
    return x, y


def _boxes(n, k):
    return np.zeros((n, k, 7), dtype=np.float32)


def test_probe_lr_is_linear_warmup_then_cosine_per_step(monkeypatch):
    seen = []
    real = train_mod.make_optimizer

    def recording(model, grid, optimizer):
        opt = real(model, grid, optimizer)
        step = opt.step
        opt.step = lambda *a, **k: (seen.append(opt.param_groups[0]["lr"]), step(*a, **k))[1]
        return opt

    monkeypatch.setattr(train_mod, "make_optimizer", recording)
    x, y = _clips(40)
    cfg = LinearConfig(lrs=(0.1,), weight_decays=(0.0,), epochs=2, batch_size=4, holdout=0.0, warmup=0.1,
                       device="cpu", precision="fp32", solver="minibatch", min_steps=0)
    train_linear(x, y, np.arange(40), C, cfg)
    # by hand: 40 clips / 4 = 10 steps per epoch, 20 in all; warm-up 0.1 * 20 = 2 steps
    assert len(seen) == 20
    assert seen[0] == 0.0 and seen[1] == pytest.approx(0.05) and seen[2] == pytest.approx(0.1)
    assert seen[11] == pytest.approx(0.05)                      # cos(pi * 9/18) = 0: half-way down
    assert seen[19] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 17 / 18)))
    assert all(a >= b for a, b in zip(seen[2:], seen[3:]))      # monotone after the warm-up


def _decays_by_name(model, grid):
    opt = train_mod.make_optimizer(model, grid, "adamw")
    wd = {id(p): (g["weight_decay"], g["lr"]) for g in opt.param_groups for p in g["params"]}
    return {name: wd[id(p)] for name, p in model.named_parameters()}


def _check_groups(model, grid):
    groups = _decays_by_name(model, grid)
    assert groups, "no parameters"
    for name, (wd, lr) in groups.items():
        head = int(name.split(".")[1])                        # heads.<g>.…
        want_lr, want_wd = grid[head]
        no_decay = name.endswith("bias") or name.endswith("_token") or "norm" in name.split(".")[-2]
        assert lr == want_lr, name
        assert wd == (0.0 if no_decay else want_wd), name
    return groups


@pytest.mark.slow
def test_param_groups_linear_and_mlp_heads():
    x, y = _clips(30)
    grid = [(1e-3, 0.05), (1e-2, 0.5)]
    lin, _ = train_linear(x, y, np.arange(30), C, LinearConfig(lrs=(1e-3,), weight_decays=(0.05,), epochs=1,
                                                               holdout=0.0, device="cpu", solver="minibatch"))
    groups = _check_groups(lin.model, grid[:1])
    assert groups["heads.0.weight"] == (0.05, 1e-3) and groups["heads.0.bias"] == (0.0, 1e-3)
    mlp, _ = train_mlp(x, y, np.arange(30), C, MlpConfig(lrs=(1e-3,), weight_decays=(0.05,), epochs=1,
                                                         holdout=0.0, device="cpu"))
    _check_groups(mlp.model, grid[:1])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["transformer", "scale_ft"])
def test_param_groups_set_probes_spare_tokens_norms_biases(kind):
    x, y = _clips(24, k=4)
    b = _boxes(24, 4)
    pos = np.arange(24)
    if kind == "transformer":
        cfg = TransformerConfig(lrs=(1e-3,), weight_decays=(0.05,), epochs=1, holdout=0.0, width=32, layers=1,
                                device="cpu", precision="fp32")
        result, _ = train_transformer(x, b, y, pos, C, cfg)
    else:
        pretrained = ScaleModel(ScaleConfig(width=32, layers=1, heads=1, pred_hidden=16, target_hidden=16,
                                            proj_dim=8), D)
        cfg = FinetuneConfig(lrs=(1e-3,), weight_decays=(0.05,), epochs=1, holdout=0.0, device="cpu",
                             precision="fp32")
        result, _ = train_finetune(pretrained, 32, x, b, y, pos, C, cfg)
    groups = _check_groups(result.model, [(1e-3, 0.05)])
    tokens = [n for n in groups if n.endswith("_token")]
    norms = [n for n, p in result.model.named_parameters() if p.ndim == 1 and not n.endswith("bias")]
    decayed = [n for n, (wd, _) in groups.items() if wd > 0]
    assert tokens and norms and decayed
    assert all(groups[n][0] == 0.0 for n in tokens + norms)
    assert all(dict(result.model.named_parameters())[n].ndim >= 2 for n in decayed)


@pytest.mark.slow
def test_batch_size_and_optimizer_are_searched_as_separate_passes():
    x, y = _clips(60, k=2)
    cfg = LinearConfig(lrs=(1e-3, 1e-2), weight_decays=(0.0,), epochs=2, batch_sizes=(8, 32),
                       optimizers=("adamw", "sgd"), holdout=0.2, device="cpu", precision="fp32",
                       solver="minibatch", min_steps=0)
    assert [(p.batch_size, p.optimizer) for p in cfg.passes()] == [(8, "adamw"), (8, "sgd"), (32, "adamw"),
                                                                   (32, "sgd")]
    result, _ = train_linear(x, y, np.arange(60), C, cfg)
    assert np.asarray(result.history).shape == (2, 8)           # epochs x (4 passes x 2 lrs)
    assert result.batch_size in (8, 32) and result.optimizer in ("adamw", "sgd")
    chosen = result.params()
    assert {"batch_size", "optimizer", "lr", "weight_decay", "epochs"} <= set(chosen)


def test_holdout_zero_needs_one_point_on_every_axis():
    from vssl.errors import VsslError

    with pytest.raises(VsslError, match="--batch-size"):
        LinearConfig(lrs=(1e-3,), weight_decays=(0.0,), batch_sizes=(8, 16), holdout=0.0,
                     solver="minibatch").validate()
    with pytest.raises(VsslError, match="--l2"):                 # the solved head selects only λ
        LinearConfig(l2s=(1e-2, 1e-4), holdout=0.0).validate()
    LinearConfig(l2s=(1e-4,), batch_sizes=(8, 16), holdout=0.0).validate()
    with pytest.raises(VsslError, match="warmup"):
        LinearConfig(warmup=1.0).validate()


def test_named_scale_grid_and_repeatable_axes():
    from vssl.probe.config import ProbeConfig

    full = ProbeConfig(grid="scale").train_config("linear")
    assert (full.lrs, full.weight_decays, full.epochs, full.warmup) == ((1e-4, 3e-4, 1e-3), (0.0, 1e-4), 60, 0.05)
    assert {(p.batch_size, p.optimizer) for p in full.passes()} == {(256, "adamw"), (256, "sgd"), (512, "adamw"),
                                                                    (512, "sgd")}
    # a flag beats the named grid; one value fixes the axis, several search it
    fixed = ProbeConfig(grid="scale", batch_size=64, optimizer=("sgd",)).train_config("transformer")
    assert [(p.batch_size, p.optimizer) for p in fixed.passes()] == [(64, "sgd")]
    searched = ProbeConfig(batch_size=(8, 16)).train_config("mlp")
    assert [p.batch_size for p in searched.passes()] == [8, 16]
    assert ProbeConfig().train_config("linear").passes()[0].batch_size == 1024      # the probe's own default


def test_selection_never_prefers_a_diverged_head():
    score = np.array([[np.nan, 50.0], [60.0, 70.0]])
    loss = np.array([[np.nan, 1.0], [1.0, 1.0]])
    assert select(score, loss) == (1, 1)
    assert select(np.array([[50.0, 50.0]]), np.array([[2.0, np.nan]])) == (0, 0)
