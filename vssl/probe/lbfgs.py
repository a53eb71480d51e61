"""Linear heads solved to convergence: full-batch L-BFGS on standardised clip features.

A minibatch head trained for a fixed number of epochs stops wherever its budget runs out: on a
few hundred training videos that is a few dozen optimizer steps, far from the optimum (a linear
row 24 points below scikit-learn's logistic regression on the same features). A linear head is a
convex problem, so vssl solves it instead of training it:

    min_{W, b}  mean_i loss(W z_i + b, y_i) + λ/2 ||W||²,      z_i = (x_i - μ) / σ

one sample per clip with its video's label (softmax cross-entropy; one-vs-rest binary
cross-entropy for multi-label data; squared error for a regression target: ridge), μ and σ the
per-dimension mean and std of the fitted clips, the bias unpenalised: scikit-learn's
``LogisticRegression(C)`` on ``StandardScaler`` features with ``λ = 1 / (C · n_clips)``.

λ runs down a path from strong to weak regularisation, each solve warm-started from the last.
On every held-out part of the training split (:func:`~vssl.probe.train.held_out_folds`) the
path's heads are scored per video as at test time (the mean of a video's clips' softmax); the
path stops once the pooled held-out score has not improved for :data:`PATIENCE` steps (weak λ
on near-separable data is slow to solve and only overfits further), and the best λ is solved on
the whole training split, warm-started from a held-out part's solution. The standardisation is
folded into the head, so the result is a plain linear head on the stored features.

The solver runs in float64 where that is cheap (the CPU, up to :data:`FLOAT64_ELEMENTS` feature
values) and in float32 otherwise, always with TF32 off: a float32 gradient of a mean loss is
accurate far below the tolerance, and float32 products run twice as fast on a CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from vssl.device import matmul_numerics
from vssl.training_log import current_log, settings_text

from .common import resolve_device
from .task import Task, task_of, torch_labels
from .train import FitResult, GridHeads, expect, held_out_folds, select

log = logging.getLogger("vssl.probe")

#: λ of the default path: decades from strong to weak regularisation of standardised features
#: (scikit-learn's default C = 1 is λ = 1 / n_clips: 1e-3 at a thousand clips, 1e-6 at a million)
L2_PATH: tuple[float, ...] = tuple(float(10.0 ** -e) for e in range(0, 8))
#: path steps without a better pooled held-out score before the path stops
PATIENCE = 2
#: rows per chunk of the loss and gradient (bounded memory whatever the number of clips)
CHUNK_ROWS = 1 << 16
#: feature values (clips x dims) up to which a CPU solve runs in float64
FLOAT64_ELEMENTS = 1 << 24
#: feature values up to which the standardised rows are kept between iterations
CACHED_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Solution:
    """One λ's head in standardised coordinates, and how its solve went."""

    l2: float
    weight: torch.Tensor        # [C, D]
    bias: torch.Tensor          # [C]
    iterations: int
    converged: bool


class ClipRows:
    """The clips a head is fitted on as one matrix ``[m, D]`` (stored dtype, on the device) with
    each row's label, their per-dimension mean and std (float64 sums, as scikit-learn's scaler),
    and the solver's dtype (the module docstring)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, device: torch.device):
        small = x.size <= FLOAT64_ELEMENTS
        self.dtype = torch.float64 if device.type == "cpu" and small else torch.float32
        self.x = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        self.y = torch.from_numpy(np.ascontiguousarray(torch_labels(y))).to(device)
        if self.y.is_floating_point():
            self.y = self.y.to(self.dtype)
        total, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        for s in range(0, len(x), CHUNK_ROWS):
            part = np.asarray(x[s:s + CHUNK_ROWS], np.float64)
            total += part.sum(0)
            squares += (part * part).sum(0)
        n = max(len(x), 1)
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean * mean, 0.0))
        std = np.where(std > 1e-6 * max(std.max(initial=0.0), 1e-12), std, 1.0)   # constant dims stay 0
        self.mean = torch.from_numpy(mean).to(device, self.dtype)
        self.inv_std = torch.from_numpy(1.0 / std).to(device, self.dtype)
        self._chunks: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if x.size <= CACHED_ELEMENTS:                      # small: standardise once, keep it
            self._chunks = list(self._standardised())

    def __len__(self) -> int:
        return len(self.x)

    def chunks(self) -> Sequence[tuple[torch.Tensor, torch.Tensor]] | "_Lazy":
        """(standardised rows, labels) in chunks of :data:`CHUNK_ROWS`, in the solver's dtype."""
        return self._chunks if self._chunks is not None else _Lazy(self._standardised)

    def _standardised(self):
        for s in range(0, len(self.x), CHUNK_ROWS):
            yield (self.x[s:s + CHUNK_ROWS].to(self.dtype) - self.mean) * self.inv_std, self.y[s:s + CHUNK_ROWS]

    def standardised(self, head: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        """A head on the raw features in these rows' standardised coordinates (``raw_head``'s inverse)."""
        weight = head.weight.detach().to(self.dtype)
        return weight / self.inv_std, head.bias.detach().to(self.dtype) + weight @ self.mean

    def raw_head(self, solution: Solution) -> nn.Linear:
        """``solution``'s head on the raw (stored) features: W z + b = (W / σ) x + (b - (W / σ) μ)."""
        weight = solution.weight * self.inv_std
        head = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device)
        with torch.no_grad():
            head.weight.copy_(weight.float())
            head.bias.copy_((solution.bias - weight @ self.mean).float())
        return head


class _Lazy:
    """An iterable that standardises its chunks anew on each pass (large data: no second copy)."""

    def __init__(self, make):
        self.make = make

    def __iter__(self):
        return self.make()


class PathSolver:
    """The regularisation path of one set of clips: each :meth:`solve` warm-starts from the last."""

    def __init__(self, rows: ClipRows, task: Task, num_outputs: int, max_iter: int, tolerance: float,
                 start: nn.Linear | None = None):
        self.rows, self.task, self.max_iter, self.tolerance = rows, task, max_iter, tolerance
        shape, kw = (num_outputs, rows.x.shape[1]), dict(device=rows.x.device, dtype=rows.dtype)
        weight, bias = rows.standardised(start) if start is not None else (torch.zeros(*shape, **kw),
                                                                            torch.zeros(num_outputs, **kw))
        self.weight = weight.clone().requires_grad_(True)
        self.bias = bias.clone().requires_grad_(True)

    def solve(self, l2: float) -> Solution:
        """L-BFGS with a strong-Wolfe line search on the full batch. Converged means the largest
        gradient component fell below ``tolerance`` (scikit-learn's lbfgs stops on the same
        quantity); the loss is a mean over clips, so the tolerance does not depend on the data's size."""
        weight, bias, rows, n = self.weight, self.bias, self.rows, len(self.rows)
        opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=self.max_iter, max_eval=2 * self.max_iter,
                                tolerance_grad=self.tolerance, tolerance_change=0.0, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=False)
            total = 0.0
            for z, y in rows.chunks():
                part = self.task.loss(nn.functional.linear(z, weight, bias)[:, None, :], y) * (len(z) / n)
                part.backward()
                total += part.item()
            penalty = 0.5 * l2 * (weight * weight).sum()
            penalty.backward()
            return torch.tensor(total + penalty.item(), dtype=rows.dtype)

        with matmul_numerics(tf32=False):
            opt.step(closure)
            closure()                                   # the gradient where the solve stopped
        grad = max(weight.grad.abs().max().item(), bias.grad.abs().max().item())
        iterations = int(opt.state[weight].get("n_iter", 0))
        return Solution(l2, weight.detach().clone(), bias.detach().clone(), iterations, grad <= self.tolerance)


class SolvedLinear(GridHeads):
    """Linear heads on the raw features (one per λ), scored side by side by one matrix product."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.cat([h.weight for h in self.heads])          # [G*C, D]
        b = torch.cat([h.bias for h in self.heads])
        return nn.functional.linear(x.float(), w, b).reshape(len(x), len(self.heads), -1)


def fit_solved(inputs, positions: np.ndarray, num_outputs: int, cfg, advance: Callable[[int], None] | None = None
               ) -> FitResult:
    """Select λ on held-out parts of ``positions`` and solve it on all of them.

    ``inputs`` is a :class:`~vssl.probe.inputs.ClipInputs`; ``cfg`` a linear config (``l2s``,
    ``max_iter``, ``tolerance``, ``holdout``, ``holdout_min``, ``seed``, ``device``).
    """
    device = resolve_device(cfg.device)
    task = task_of(inputs.labels)
    cfg.validate()
    l2s = sorted(set(float(v) for v in cfg.l2s), reverse=True)
    folds = held_out_folds(inputs.labels, positions, cfg) if cfg.holdout > 0 else []
    expect(advance, len(folds) * len(l2s) + 1)
    solvers = [(PathSolver(_rows(inputs, f, device), task, num_outputs, cfg.max_iter, cfg.tolerance), h)
               for f, h in folds]
    held = sum(len(h) for _, h in folds)
    events = current_log()                                 # --log-dir: the settings and the λ path
    events.text("settings", settings_text(cfg.params()))
    scores: list[tuple[float, float]] = []                 # pooled (score, loss) per λ solved
    first_heads: list[nn.Linear] = []                      # the first part's head per λ: the refit's start
    for l2 in l2s if folds else []:
        score = loss = 0.0
        for i, (solver, held_pos) in enumerate(solvers):
            head = solver.rows.raw_head(solver.solve(l2))
            s, l = task.selection(inputs.predict(SolvedLinear([head]), held_pos, device, "fp32"),
                                  inputs.labels[held_pos])
            score, loss = score + float(s[0]) * len(held_pos) / held, loss + float(l[0]) * len(held_pos) / held
            if i == 0:
                first_heads.append(head)
        scores.append((score, loss))
        # the λ path as TensorBoard sees it: point i of the path (λ in the settings text and the report)
        events.scalars(len(scores) - 1, {f"held_out_{task.selection_metric}": score, "held_out_loss": loss,
                                         "l2": l2})
        if advance:
            advance(len(solvers))
        if len(scores) - 1 - _best(scores) >= PATIENCE:
            break
    best = _best(scores) if scores else 0
    rows = _rows(inputs, positions, device)
    chosen = PathSolver(rows, task, num_outputs, cfg.max_iter, cfg.tolerance,
                        start=first_heads[best] if first_heads else None).solve(l2s[best])
    expect(advance, getattr(advance, "done", 0) + 1)
    if advance:
        advance(1)
    if not chosen.converged:
        log.warning("linear head (λ %.3g): L-BFGS stopped after %d iterations with a gradient above %.0e; "
                    "the row may be below its converged value: raise --max-iter", chosen.l2, chosen.iterations,
                    cfg.tolerance)
    record = {"solver": "lbfgs", "l2": chosen.l2, "C": 1.0 / (chosen.l2 * len(rows)), "iterations": chosen.iterations,
              "converged": chosen.converged, "standardized": True,
              "path": [[l2, s, l] for l2, (s, l) in zip(l2s, scores)]}
    return FitResult(SolvedLinear([rows.raw_head(chosen)]), None, None, None,
                     scores[best][0] if scores else None, "fp32", [[s for s, _ in scores]],
                     val_metric=task.selection_metric, held_out=held, solver=record)


def _best(scores: list[tuple[float, float]]) -> int:
    """The path index of the best pooled held-out (score, loss) (:func:`~vssl.probe.train.select`:
    highest score, then lowest loss, then the earlier, more regularised λ)."""
    return select(np.array([[s for s, _ in scores]]), np.array([[l for _, l in scores]]))[1]


def _rows(inputs, positions: np.ndarray, device: torch.device) -> ClipRows:
    x, y = inputs.clip_rows(positions)
    return ClipRows(x, y, device)
