"""InfoNCE in SCALE's notation (eq. 2–4): l2-normalised projections, temperature tau.

Only the rows the loss uses are ever formed: the MCM loss takes the predictions of the
masked clips (queries) against the targets of *all* clips of the minibatch (keys), so
its logit matrix is (masked clips) x (all clips), not (all clips) x (all clips).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vssl.distributed import gather_keys, gathering


def _scaled_logits(queries: Tensor, keys: Tensor, temperature: float) -> Tensor:
    """cos(q, k) / tau for every pair; 1/tau is folded into the (smaller) query side."""
    q = F.normalize(queries.float(), dim=-1) * (1.0 / temperature)
    k = F.normalize(keys.float(), dim=-1)
    return q @ k.transpose(0, 1)


def info_nce(queries: Tensor, keys: Tensor, temperature: float,
             positives: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One-directional InfoNCE (eq. 2): row i of ``queries`` must pick key ``positives[i]``.

    Returns the mean loss and the top-1 accuracy (fraction, no grad) as 0-dim tensors, so a
    training loop can accumulate them on the device without a host sync per step.
    """
    keys, offset = gather_keys(keys)  # under DDP: every rank's keys are negatives (vssl.distributed)
    logits = _scaled_logits(queries, keys, temperature)
    if positives is None:
        positives = torch.arange(logits.shape[0], device=logits.device)
    if offset:
        positives = positives + offset
    loss = F.cross_entropy(logits.float(), positives)
    with torch.no_grad():
        top1 = (logits.argmax(dim=1) == positives).float().mean()
    return loss, top1


def symmetric_info_nce(a: Tensor, b: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """L_ctr(a, b) of eq. 3: mean of a->b and b->a InfoNCE, row i of a paired with row i of b.

    One logit matrix serves both directions (its transpose is the b->a problem).
    """
    if gathering():
        return _symmetric_across_ranks(a, b, temperature)
    logits = _scaled_logits(a, b, temperature).float()
    target = torch.arange(logits.shape[0], device=logits.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    with torch.no_grad():
        top1 = 0.5 * ((logits.argmax(dim=1) == target).float().mean()
                      + (logits.argmax(dim=0) == target).float().mean())
    return loss, top1


def _symmetric_across_ranks(a: Tensor, b: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Eq. 3 for this rank's rows of a global batch: local a vs every rank's b, local b vs every a.

    The mean of the ranks' losses is the single-process loss on the concatenated batch.
    """
    b_all, offset = gather_keys(b)
    a_all, _ = gather_keys(a)
    target = torch.arange(a.shape[0], device=a.device) + offset
    ab = _scaled_logits(a, b_all, temperature).float()
    ba = _scaled_logits(b, a_all, temperature).float()
    loss = 0.5 * (F.cross_entropy(ab, target) + F.cross_entropy(ba, target))
    with torch.no_grad():
        top1 = 0.5 * ((ab.argmax(dim=1) == target).float().mean() + (ba.argmax(dim=1) == target).float().mean())
    return loss, top1
