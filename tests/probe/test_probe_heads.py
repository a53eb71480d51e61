"""Trained probes: separable data is learnt, nonlinear probes beat linear on XOR, ensembling, selection."""

import numpy as np
import pytest
import torch

from vssl.probe.linear import LinearConfig, train_linear
from vssl.probe.mlp import MlpConfig, train_mlp
from vssl.probe.transformer import TransformerConfig, train_transformer

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")
N_TRAIN, N, K = 240, 360, 4


def _boxes(n, k):
    t = np.arange(k, dtype=np.float32)
    box = np.stack([t / k, 0 * t, 0 * t, (t + 1) / k, 0 * t + 1, 0 * t + 1, 0 * t], -1)
    return np.broadcast_to(box, (n, k, 7)).copy()


@pytest.fixture(scope="module")
def separable():
    rng = np.random.default_rng(0)
    c, d = 5, 16
    centers = 4 * rng.normal(size=(c, d))
    y = rng.integers(0, c, N)
    return (centers[y][:, None] + rng.normal(size=(N, K, d))).astype(np.float16), y, c


@pytest.fixture(scope="module")
def xor():
    """Label = sign(a) XOR sign(b) of two feature dimensions: no linear head can beat chance by much."""
    rng = np.random.default_rng(1)
    ab = rng.choice([-1.0, 1.0], size=(N, 2))
    y = ((ab[:, 0] > 0) ^ (ab[:, 1] > 0)).astype(np.int64)
    x = np.concatenate([ab[:, None, :] + 0.2 * rng.normal(size=(N, K, 2)), 0.3 * rng.normal(size=(N, K, 4))], -1)
    return x.astype(np.float32), y, 2


def _accuracy(result, inputs, y):
    test = np.arange(N_TRAIN, N)
    return (inputs.predict(result.model, test, CPU)[:, 0].argmax(1) == y[test]).mean() * 100


FAST = dict(epochs=12, batch_size=64, device="cpu", lrs=(3e-3, 1e-2), weight_decays=(1e-4,), min_steps=0,
            holdout_min=0)


@pytest.mark.slow
def test_linear_and_mlp_learn_separable_features(separable):
    x, y, c = separable
    for fn, cfg in ((train_linear, LinearConfig(**FAST)), (train_mlp, MlpConfig(**FAST, hidden=64))):
        result, inputs = fn(x, y, np.arange(N_TRAIN), c, cfg)
        assert _accuracy(result, inputs, y) >= 98.0, fn.__name__


@pytest.mark.slow
def test_transformer_learns_separable_features(separable):
    x, y, c = separable
    cfg = TransformerConfig(epochs=8, batch_size=32, device="cpu", lrs=(1e-3,), weight_decays=(1e-4,),
                            width=32, layers=1)
    result, inputs = train_transformer(x, _boxes(N, K), y, np.arange(N_TRAIN), c, cfg)
    test = np.arange(N_TRAIN, N)
    assert (inputs.predict(result.model, test, CPU)[:, 0].argmax(1) == y[test]).mean() >= 0.98


@pytest.mark.slow
def test_nonlinear_probes_beat_linear_on_xor(xor):
    x, y, c = xor
    lin, lin_in = train_linear(x, y, np.arange(N_TRAIN), c, LinearConfig(**FAST))
    mlp, mlp_in = train_mlp(x, y, np.arange(N_TRAIN), c, MlpConfig(**FAST, hidden=64))
    cfg = TransformerConfig(epochs=15, batch_size=32, device="cpu", lrs=(3e-3,), weight_decays=(1e-4,),
                            width=32, layers=1, dropout=0.0)
    tfm, tfm_in = train_transformer(x, _boxes(N, K), y, np.arange(N_TRAIN), c, cfg)
    acc_lin, acc_mlp, acc_tfm = _accuracy(lin, lin_in, y), _accuracy(mlp, mlp_in, y), _accuracy(tfm, tfm_in, y)
    assert acc_lin < 75.0
    assert acc_mlp > 95.0 and acc_tfm > 90.0, (acc_lin, acc_mlp, acc_tfm)


def test_video_score_is_the_mean_of_clip_softmaxes(separable):
    x, y, c = separable
    cfg = LinearConfig(**{**FAST, "epochs": 2}, precision="fp32")
    result, inputs = train_linear(x, y, np.arange(N_TRAIN), c, cfg)
    head = result.model.heads[0]
    w, b = head.weight.detach().numpy().astype(np.float64), head.bias.detach().numpy().astype(np.float64)
    logits = x[N_TRAIN:].astype(np.float64) @ w.T + b                 # [n, K, C]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    expected = (p / p.sum(-1, keepdims=True)).mean(1)
    got = inputs.predict(result.model, np.arange(N_TRAIN, N), CPU)[:, 0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_batchnorm_makes_the_grid_scale_free(separable):
    x, y, c = separable
    big = x.astype(np.float32) * 1e4 + 3e4
    cfg = LinearConfig(**{**FAST, "lrs": (1e-2,)}, batchnorm=True, solver="minibatch")
    result, inputs = train_linear(big, y, np.arange(N_TRAIN), c, cfg)
    assert _accuracy(result, inputs, y) >= 98.0


@pytest.mark.slow
def test_solved_head_is_scale_free(separable):
    """The solved head standardises its inputs: features 1e4 times larger, far from 0, fit as well."""
    x, y, c = separable
    result, inputs = train_linear(x.astype(np.float32) * 1e4 + 3e4, y, np.arange(N_TRAIN), c,
                                  LinearConfig(device="cpu"))
    assert _accuracy(result, inputs, y) >= 98.0 and result.params()["converged"]


def test_selection_picks_the_grid_point_that_fits_the_held_out_part(separable):
    """A learning rate of ~0 cannot learn; selection on held-out training videos must reject it."""
    x, y, c = separable
    cfg = LinearConfig(**{**FAST, "lrs": (1e-9, 1e-2)}, solver="minibatch")
    result, _ = train_linear(x, y, np.arange(N_TRAIN), c, cfg)
    assert result.lr == 1e-2 and result.val_score >= 95.0
    assert 1 <= result.epochs <= cfg.epochs


def test_training_repeats_for_a_seed(xor):
    x, y, c = xor
    cfg = MlpConfig(**{**FAST, "epochs": 2}, hidden=16)
    a, ai = train_mlp(x, y, np.arange(N_TRAIN), c, cfg)
    b, bi = train_mlp(x, y, np.arange(N_TRAIN), c, cfg)
    test = np.arange(N_TRAIN, N)
    np.testing.assert_array_equal(ai.predict(a.model, test, CPU), bi.predict(b.model, test, CPU))
