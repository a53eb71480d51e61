"""Exact search: the neighbours and their order equal a plain numpy ranking, ties included."""

import numpy as np
import pytest

from vssl.errors import VsslError
from vssl.search.exact import exact_search


def numpy_ranking(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference: float64 scores, then a stable sort by descending score (lower row first on a tie)."""
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def test_neighbours_equal_numpy_on_random_vectors():
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((500, 32)).astype(np.float32)
    queries = rng.standard_normal((70, 32)).astype(np.float32)
    sims, rows = exact_search(gallery, queries, 10, block=16, device="cpu")
    ref_sims, ref_rows = numpy_ranking(gallery, queries, 10)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(sims, ref_sims, rtol=1e-5, atol=1e-5)


def test_ties_rank_by_gallery_row_also_at_the_cut_off():
    # many exact duplicates: the k-th value is shared by more rows than fit in the top k
    rng = np.random.default_rng(1)
    base = rng.standard_normal((6, 8)).astype(np.float32)
    gallery = base[rng.integers(0, 6, size=200)]
    queries = base[[0, 3, 5]]
    for k in (1, 5, 37, 200):
        sims, rows = exact_search(gallery, queries, k, block=2, device="cpu")
        ref_sims, ref_rows = numpy_ranking(gallery, queries, k)
        np.testing.assert_array_equal(rows, ref_rows)


def test_k_beyond_the_gallery_ranks_all_of_it():
    gallery = np.eye(4, dtype=np.float32)
    sims, rows = exact_search(gallery, gallery[[2]], 10, device="cpu")
    assert rows.tolist() == [[2, 0, 1, 3]]
    assert sims.tolist() == [[1.0, 0.0, 0.0, 0.0]]


def test_mismatched_widths_are_one_error():
    with pytest.raises(VsslError, match="one width"):
        exact_search(np.zeros((3, 4)), np.zeros((1, 5)), 1)


def test_a_nan_vector_is_refused_not_ranked():
    gallery = np.eye(4, dtype=np.float32)
    gallery[2] = np.nan
    with pytest.raises(VsslError, match=r"NaN or inf \(positions 2\)"):
        exact_search(gallery, np.eye(4, dtype=np.float32)[:1], 3)
    with pytest.raises(VsslError, match="query"):
        exact_search(np.eye(4, dtype=np.float32), np.full((1, 4), np.inf, np.float32), 3)
