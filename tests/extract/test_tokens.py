"""Token grids: the spec parser and the pooling, against a numpy reference written from the definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.token_helpers import numpy_pool
from vssl.errors import VsslError
from vssl.extract.tokens import TokenGrid, layer_view_name, pool_tokens, token_view_name


@pytest.mark.parametrize("cells", [(1, 1, 1), (2, 4, 4), (2, 3, 5), (3, 7, 6), (1, 2, 3)])
def test_pool_tokens_equals_numpy_definition(cells):
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(2, 3, 7, 6, 5)).astype(np.float32)  # uneven sizes: overlapping cells
    got = pool_tokens(torch.from_numpy(grid), cells).numpy()
    assert got.shape == (2, cells[0] * cells[1] * cells[2], 5)
    np.testing.assert_allclose(got, numpy_pool(grid.astype(np.float64), cells), rtol=1e-5, atol=1e-6)


def test_full_keeps_every_token_t_major():
    grid = np.arange(2 * 2 * 3 * 4 * 3, dtype=np.float32).reshape(2, 2, 3, 4, 3)
    got = pool_tokens(torch.from_numpy(grid), TokenGrid.parse("full")).numpy()
    np.testing.assert_array_equal(got, grid.reshape(2, 24, 3))


def test_pooling_runs_in_float32_for_low_precision_grids():
    grid = torch.randn(1, 2, 8, 8, 4).to(torch.bfloat16)
    got = pool_tokens(grid, (1, 1, 1))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy()[:, 0], grid.float().numpy().mean(axis=(1, 2, 3)), rtol=1e-6)


@pytest.mark.parametrize("text, cells", [("2x4x4", (2, 4, 4)), (" 1 x 1 x 1 ", (1, 1, 1)), ("full", None),
                                         ("FULL", None)])
def test_parse(text, cells):
    assert TokenGrid.parse(text).cells == cells


@pytest.mark.parametrize("text", ["2x4", "0x4x4", "axbxc", "", "2x4x4x1", "-1x2x2"])
def test_parse_refuses_in_one_line(text):
    with pytest.raises(VsslError, match="--tokens .*expected T'xH'xW'") as err:
        TokenGrid.parse(text)
    assert "\n" not in str(err.value)


def test_resolve_full_and_refuse_finer_than_the_encoder():
    assert TokenGrid.parse("full").resolve((8, 14, 14)) == (8, 14, 14)
    assert TokenGrid.parse("2x4x4").resolve((8, 14, 14)) == (2, 4, 4)
    with pytest.raises(VsslError, match="finer than the encoder's token grid 2x8x8"):
        TokenGrid.parse("4x4x4").resolve((2, 8, 8))


def test_view_names():
    assert token_view_name("uniform5x3", (2, 4, 4)) == "uniform5x3.tokens2x4x4"
    assert layer_view_name("uniform5x3", 1) == "uniform5x3"
    assert token_view_name(layer_view_name("u", 3), (1, 1, 1)) == "u.layer-3.tokens1x1x1"
