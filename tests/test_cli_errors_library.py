"""Library input checks of ``Strategy.select`` / ``check_request`` and ``fit_head``: non-integer
labels, NaN or inf feature rows (counted, and only among the rows read), an int seed as ``rng``, an
integral float batch size; each refused (or accepted) at once with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import blobs

from ralif.head import fit_head
from ralif.strategies import check_request, make_strategy


@pytest.fixture(scope="module")
def data():
    x, y = blobs(300, 8, 3, seed=0)
    labeled = np.arange(0, 30)
    unlabeled = np.arange(30, 280)   # rows 280.. are read by no one (a test split, say)
    head = fit_head(x, labeled, y[labeled], 3, device="cpu")
    return x, y, labeled, unlabeled, head


def test_fit_head_refuses_non_integer_labels(data):
    x, y, labeled, _, head = data
    with pytest.raises(ValueError, match=r"labels must be integer class indices; 30 of 30 are not whole numbers"):
        fit_head(x, labeled, y[labeled] + 0.5, 3, device="cpu")
    with pytest.raises(ValueError, match="integer class indices"):
        fit_head(x, labeled, np.where(np.arange(30) == 4, np.nan, y[labeled]), 3, device="cpu")
    with pytest.raises(ValueError, match="integer class indices, got an array of <U"):
        fit_head(x, labeled, y[labeled].astype(str), 3, device="cpu")
    # Whole numbers stored as floats are the same labels.
    same = fit_head(x, labeled, y[labeled].astype(np.float64), 3, device="cpu")
    np.testing.assert_allclose(same.weight.cpu().numpy(), head.weight.cpu().numpy())


def test_fit_head_counts_nonfinite_labeled_rows(data):
    x, y, labeled, _, _ = data
    bad = x.copy()
    bad[[3, 7], 1] = np.nan
    bad[11, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf values in 3 of the 30 labeled rows \(rows 3, 7, 11\)"):
        fit_head(bad, labeled, y[labeled], 3, device="cpu")


def test_select_counts_nonfinite_rows_it_reads_and_ignores_the_others(data):
    x, _, labeled, unlabeled, head = data
    bad = x.copy()
    bad[5, 2] = np.nan          # labeled
    bad[[40, 41], 0] = -np.inf  # unlabeled
    bad[290, :] = np.nan        # read by no one
    for spec in ("random", "ralif", "coreset"):
        with pytest.raises(ValueError, match=r"NaN or inf values in 3 of the 280 rows the selection reads "
                                             r"\(rows 5, 40, 41; 1 labeled, 2 unlabeled\)"):
            make_strategy(spec).select(head, bad, labeled, unlabeled, 5, np.random.default_rng(0))
    clean_read = x.copy()
    clean_read[290:, :] = np.nan
    picked = make_strategy("ralif").select(head, clean_read, labeled, unlabeled, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(picked, make_strategy("ralif").select(head, x, labeled, unlabeled, 5,
                                                                        np.random.default_rng(0)))


def test_nonfinite_rows_is_exact():
    from ralif.head import nonfinite_rows

    x = np.full((40, 4), 3e38, dtype=np.float32)  # every row's sum overflows, yet all values are finite
    x[[2, 30], 1] = np.nan
    x[17, 3] = -np.inf
    np.testing.assert_array_equal(nonfinite_rows(x), [2, 17, 30])
    np.testing.assert_array_equal(nonfinite_rows(x, step=7), [2, 17, 30])
    np.testing.assert_array_equal(nonfinite_rows(x, np.array([30, 1, 2])), [2, 30])      # gathered rows
    np.testing.assert_array_equal(nonfinite_rows(x, np.arange(25)), [2, 17])             # most rows: sliced
    assert nonfinite_rows(np.ones((5, 3), dtype=np.int64)).size == 0


def test_rng_may_be_an_int_seed(data):
    x, _, labeled, unlabeled, head = data
    for spec in ("random", "ralif"):
        with_seed = make_strategy(spec).select(head, x, labeled, unlabeled, 5, 0)
        with_generator = make_strategy(spec).select(head, x, labeled, unlabeled, 5, np.random.default_rng(0))
        np.testing.assert_array_equal(with_seed, with_generator)
    with pytest.raises(TypeError, match=r"rng must be a numpy Generator .* or an int seed, not str"):
        make_strategy("random").select(head, x, labeled, unlabeled, 5, "0")
    with pytest.raises(TypeError, match="not NoneType"):
        make_strategy("random").select(head, x, labeled, unlabeled, 5, None)
    with pytest.raises(ValueError, match="non-negative"):
        make_strategy("random").select(head, x, labeled, unlabeled, 5, -1)


def test_integral_float_budget_is_accepted_and_others_refused_at_once(data):
    x, _, labeled, unlabeled, head = data
    for spec in ("random", "ralif", "coreset"):
        picked = make_strategy(spec).select(head, x, labeled, unlabeled, 10.0, np.random.default_rng(0))
        np.testing.assert_array_equal(
            picked, make_strategy(spec).select(head, x, labeled, unlabeled, 10, np.random.default_rng(0)))
    assert len(make_strategy("ralif").select(head, x, labeled, unlabeled, np.float32(250.0), 0)) == 250
    for budget in (2.5, float("nan"), float("inf"), True, "10", None):
        with pytest.raises(ValueError, match="batch size must be a positive integer"):
            check_request(x, labeled, unlabeled, budget)
