"""InfoNCE in SCALE's notation (eq. 2–4): l2-normalised projections, temperature tau.

Only the rows the loss uses are ever formed: the MCM loss takes the predictions of the
masked clips (queries) against the targets of *all* clips of the minibatch (keys), so
its logit matrix is (masked clips) x (all clips), not (all clips) x (all clips).

Under DDP the keys of every rank are negatives too: the caller passes a ``gather``
(:func:`vssl.distributed.all_gather_keys`) and the losses score against the gathered keys: the
training loop decides who gathers, and a loss given a gather depends on its arguments alone
(a call given none uses this process's keys only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vssl.distributed.negatives import Gather


def _scaled_logits(queries: Tensor, keys: Tensor, temperature: float) -> Tensor:
    """cos(q, k) / tau for every pair; 1/tau is folded into the (smaller) query side.

    In float32 even under autocast: a bf16 product would round each direction's logit gradients
    separately, which one process (one matrix for both directions) and DDP (one per direction,
    against gathered keys) do differently; in float32 they agree to float32 rounding.
    """
    with torch.autocast(queries.device.type, enabled=False):
        q = F.normalize(queries.float(), dim=-1) * (1.0 / temperature)
        k = F.normalize(keys.float(), dim=-1)
        return q @ k.transpose(0, 1)


def info_nce(queries: Tensor, keys: Tensor, temperature: float, positives: Tensor | None = None, *,
             gather: Gather | None = None, key_valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One-directional InfoNCE (eq. 2): row i of ``queries`` must pick key ``positives[i]``.

    ``gather``: how to collect the keys of every rank (under DDP every rank's keys are
    negatives); ``None``: this process's keys only. ``key_valid`` (bool per key): keys that are
    candidates at all; the others (padding of a ragged batch) get logit -inf, so they add nothing
    to any softmax and receive no gradient, and every rank still gathers equal row counts.
    Returns the mean loss and the top-1 accuracy (fraction, no grad) as 0-dim tensors, so a
    training loop can accumulate them on the device without a host sync per step.
    """
    keys, offset = (keys, 0) if gather is None else gather(keys)
    logits = _scaled_logits(queries, keys, temperature)
    if key_valid is not None:
        if gather is not None:
            key_valid = gather(key_valid.to(logits.dtype))[0] > 0.5
        logits = logits.masked_fill(~key_valid[None, :], float("-inf"))
    if positives is None:
        positives = torch.arange(logits.shape[0], device=logits.device)
    if offset:
        positives = positives + offset
    loss = F.cross_entropy(logits.float(), positives)
    with torch.no_grad():
        top1 = (logits.argmax(dim=1) == positives).float().mean()
    return loss, top1


def symmetric_info_nce(a: Tensor, b: Tensor, temperature: float, *,
                       gather: Gather | None = None) -> tuple[Tensor, Tensor]:
    """L_ctr(a, b) of eq. 3: mean of a->b and b->a InfoNCE, row i of a paired with row i of b.

    One logit matrix serves both directions (its transpose is the b->a problem). ``gather``:
    as in :func:`info_nce`; with one, each direction scores against every rank's rows.
    """
    if gather is not None:
        return _symmetric_across_ranks(a, b, temperature, gather)
    logits = _scaled_logits(a, b, temperature).float()
    target = torch.arange(logits.shape[0], device=logits.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    with torch.no_grad():
        top1 = 0.5 * ((logits.argmax(dim=1) == target).float().mean()
                      + (logits.argmax(dim=0) == target).float().mean())
    return loss, top1


def _symmetric_across_ranks(a: Tensor, b: Tensor, temperature: float, gather: Gather) -> tuple[Tensor, Tensor]:
    """Eq. 3 for this rank's rows of a global batch: local a vs every rank's b, local b vs every a.

    The mean of the ranks' losses is the single-process loss on the concatenated batch. Each of a, b
    is used twice (local rows and gathered keys): cast to float32 once, so under bf16 autocast their
    two gradients meet in float32 and are rounded to bf16 once, as in one process (cast per use,
    they were rounded twice and summed in bf16, and DDP drifted from one process).
    """
    a, b = a.float(), b.float()
    b_all, offset = gather(b)
    a_all, _ = gather(a)
    target = torch.arange(a.shape[0], device=a.device) + offset
    ab = _scaled_logits(a, b_all, temperature).float()
    ba = _scaled_logits(b, a_all, temperature).float()
    loss = 0.5 * (F.cross_entropy(ab, target) + F.cross_entropy(ba, target))
    with torch.no_grad():
        top1 = 0.5 * ((ab.argmax(dim=1) == target).float().mean() + (ba.argmax(dim=1) == target).float().mean())
    return loss, top1
