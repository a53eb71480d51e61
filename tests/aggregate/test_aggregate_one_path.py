"""One loss path for fixed and ragged views: full sets given without padding (a fixed view) and the
same sets marked all real (a ragged view of constant counts) give the same losses and gradients."""

from __future__ import annotations

import pytest
import torch

from vssl.aggregate import ScaleConfig, ScaleModel, sample_sets
from vssl.aggregate.data import RaggedBatch
from vssl.aggregate.masking import draw_masks


def tiny(**kw) -> ScaleConfig:
    return ScaleConfig(**{"width": 16, "layers": 1, "heads": 2, "dropout": 0.0, "proj_dim": 8, "pred_hidden": 24,
                          "target_hidden": 20, **kw})


def _losses_and_grads(model, *inputs):
    model.zero_grad()
    out = model.set_losses(*inputs)
    out["loss"].backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode", ["fixed", "bernoulli"])
def test_sets_without_padding_and_all_real_sets_give_the_same_losses_and_gradients(mode):
    g = torch.Generator().manual_seed(0)
    feats, boxes = torch.randn(4, 8, 12, generator=g), torch.rand(4, 8, 7, generator=g)
    sets = sample_sets(4, 8, 4, generator=g)
    masks = draw_masks(mode, 0.3, 4, 4, generator=g)          # an int in fixed mode, else [B, 2, S]
    batch = RaggedBatch(feats.view(32, 12), boxes.view(32, 7), torch.arange(4) * 8)
    clips, box = batch.sets(sets)                                 # a fixed view's batch: no padding mask
    torch.manual_seed(0)
    model = ScaleModel(tiny(), 12)
    fixed, fixed_grads = _losses_and_grads(model, clips, box, None, masks)
    real = torch.ones(4, 2, 4, dtype=torch.bool)
    ragged, ragged_grads = _losses_and_grads(model, clips, box, real, masks)
    gathered = model.pretrain_losses(feats, boxes, sets, masks)   # the stored clips and the set indices
    for key in fixed:
        torch.testing.assert_close(ragged[key], fixed[key], rtol=1e-5, atol=1e-6)
        assert torch.equal(gathered[key], fixed[key])
    assert fixed_grads.keys() == ragged_grads.keys()
    for name, grad in fixed_grads.items():
        torch.testing.assert_close(ragged_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
