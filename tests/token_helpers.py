"""Token views in tests: a numpy reference of the grid pooling, and a small backbone with several blocks."""

from __future__ import annotations

import math

import numpy as np
import torch

from vssl.extract.backbones import Backbone, InputSpec

BLOCKS_SPEC = InputSpec(frames=4, stride=2, size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def numpy_pool(grid: np.ndarray, cells: tuple[int, int, int]) -> np.ndarray:
    """Adaptive average pooling by its definition: cell i of n over an axis of L averages positions
    floor(i*L/n) .. ceil((i+1)*L/n) - 1; cells flattened t-major, then h, then w. ``grid`` (B, T, H, W, D)."""
    b, t, h, w, d = grid.shape
    out = []
    for i in range(cells[0]):
        for j in range(cells[1]):
            for k in range(cells[2]):
                ts = slice(i * t // cells[0], math.ceil((i + 1) * t / cells[0]))
                hs = slice(j * h // cells[1], math.ceil((j + 1) * h / cells[1]))
                ws = slice(k * w // cells[2], math.ceil((k + 1) * w / cells[2]))
                out.append(grid[:, ts, hs, ws].reshape(b, -1, d).mean(axis=1))
    return np.stack(out, axis=1)


class Blocks(Backbone):
    """Three "blocks" over 4x4-pixel patches of each frame (token grid T x S/4 x S/4, width 4): block k maps
    the previous one through tanh(A_k ·). Records the clips it sees and which entry point ran."""

    pooling = "avgpool"

    def __init__(self, spec: InputSpec = BLOCKS_SPEC) -> None:
        super().__init__(embed_dim=4, spec=spec, family="test-blocks")
        rng = np.random.default_rng(0)
        self.mats = [rng.normal(size=(4, 3)).astype(np.float32)] + \
                    [rng.normal(size=(4, 4)).astype(np.float32) for _ in range(2)]
        self.seen: list[torch.Tensor] = []
        self.calls = {"forward": 0, "forward_tokens": 0}

    def _blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = torch.nn.functional.avg_pool3d(x, (1, 4, 4))
        out = []
        for a in self.mats:
            h = torch.tanh(torch.einsum("oc,bcthw->bothw", torch.from_numpy(a).to(x.dtype), h))
            out.append(h)
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._blocks(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls["forward"] += 1
        self.seen.append(x.detach().clone())
        return super().forward(x)

    def forward_tokens(self, x: torch.Tensor, layers: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        self.calls["forward_tokens"] += 1
        self.seen.append(x.detach().clone())
        return [(h.mean(dim=(2, 3, 4)), h.permute(0, 2, 3, 4, 1)) for h in self._blocks(x)[-layers:]]


def blocks_reference(model: Blocks, clips: np.ndarray) -> list[np.ndarray]:
    """numpy: the token grids (N, T, H, W, D) of the three blocks of ``model`` for normalised ``clips``."""
    n, c, t, s, _ = clips.shape
    h = clips.astype(np.float64).reshape(n, c, t, s // 4, 4, s // 4, 4).mean(axis=(4, 6))
    out = []
    for a in model.mats:
        h = np.tanh(np.einsum("oc,bcthw->bothw", a.astype(np.float64), h))
        out.append(h.transpose(0, 2, 3, 4, 1))
    return out
