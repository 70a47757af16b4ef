"""engine.lmer's shortcuts around its per-call work give what the full computation gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.errors import DataWarning
from engine.lmer import _clearly_full_rank, lmer
from engine.ols import pivoted_qr


def _designs():
    rng = np.random.default_rng(20261203)
    n = 60
    one = np.ones(n)
    x = rng.standard_normal(n)
    z = rng.standard_normal(n)
    yield "full rank", np.column_stack([one, x, z])
    yield "aliased", np.column_stack([one, x, 2.0 * x - 3.0])
    yield "aliased at 1e-9", np.column_stack([one, x, x + 1e-9 * z])  # dqrdc2 drops it (tol 1e-7)
    yield "kept at 1e-5", np.column_stack([one, x, x + 1e-5 * z])  # dqrdc2 keeps it; the shortcut declines
    yield "zero column", np.column_stack([one, np.zeros(n)])
    yield "huge scale", np.column_stack([one, 1e200 * x])
    yield "tiny scale", np.column_stack([one, 1e-200 * x])
    yield "wide", rng.standard_normal((3, 5))


@pytest.mark.parametrize("name,X", list(_designs()), ids=[name for name, _ in _designs()])
def test_full_rank_shortcut_implies_qr_keeps_every_column(name, X):
    shortcut = _clearly_full_rank(X)
    rank = pivoted_qr(X).rank
    if shortcut:
        assert rank == X.shape[1]
    expected = {"full rank": True, "aliased": False, "aliased at 1e-9": False, "kept at 1e-5": False,
                "zero column": False, "huge scale": False, "tiny scale": False, "wide": False}[name]
    assert shortcut is expected
    if name == "kept at 1e-5":
        assert rank == 3  # the QR still decides: kept, as R's qr(X, tol = 1e-7)


def test_aliased_column_dropped_as_lme4():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(10), 6)
    x = rng.standard_normal(60)
    d = pd.DataFrame({"y": x + rng.standard_normal(10)[g] + rng.standard_normal(60), "x": x, "x2": 2 * x, "g": g})
    with pytest.warns(DataWarning, match="rank deficient so dropping 1 column"):
        fit = lmer("y ~ x + x2 + (1 | g)", d)
    assert list(fit.fixef.index) == ["(Intercept)", "x"]
    ref = lmer("y ~ x + (1 | g)", d)
    np.testing.assert_array_equal(fit.fixef.to_numpy(), ref.fixef.to_numpy())


def test_trailing_moments_equal_scipy_sparse_products():
    """The trailing block's moments from Z2 by rows: the same sums (bit for bit) as
    scipy.sparse's Z2'Z2 and Z2'[X y], on two later terms, one with a slope."""
    import scipy.sparse

    from engine.lmer_kernels import trailing_moments

    rng = np.random.default_rng(11)
    n = 500
    a, b = rng.integers(0, 7, n), rng.integers(0, 5, n)
    x = rng.standard_normal(n)
    Xa = np.column_stack([np.ones(n), x, rng.standard_normal(n)])
    # term 1: (1 | a), 7 columns at 0..6; term 2: (1 + x | b), 10 columns at 7..16
    cols = np.column_stack([a, 7 + 2 * b, 7 + 2 * b + 1]).astype(np.int64)
    vals = np.column_stack([np.ones(n), np.ones(n), x])
    Z2 = scipy.sparse.csr_matrix((vals.T.ravel(), (np.tile(np.arange(n), 3), cols.T.ravel())), shape=(n, 17))
    A22, ZXa2 = trailing_moments(cols, vals, Xa, 17)
    np.testing.assert_array_equal(A22, (Z2.T @ Z2).toarray())
    np.testing.assert_array_equal(ZXa2, np.asarray(Z2.T @ Xa))


def test_scale_check_names_the_column_beyond_the_cross_product_range():
    """check_lmer_scales (one pass over X's columns): the largest finite magnitude of the response
    and of each non-intercept column against [1e-150, 1e150]; NaN/Inf entries are skipped, a column
    with no finite value passes; the first offending column (response first) is named."""
    from engine.errors import DataError
    from engine.validate import check_lmer_scales

    rng = np.random.default_rng(5)
    n = 40
    X = np.column_stack([np.ones(n), rng.standard_normal(n), rng.standard_normal(n)])
    y = rng.standard_normal(n)
    names = ["(Intercept)", "a", "b"]
    check_lmer_scales(X, y, names, "y")
    X2 = X.copy()
    X2[:, 2] *= 1e-200
    X2[3, 2] = np.inf  # skipped: the finite entries decide
    with pytest.raises(DataError, match="fixed-effect column 'b' has largest magnitude [0-9.]+e-200"):
        check_lmer_scales(X2, y, names, "y")
    X2[:, 1] = 1e200
    with pytest.raises(DataError, match="column 'a' has largest magnitude 1e\\+200"):
        check_lmer_scales(X2, y, names, "y")
    with pytest.raises(DataError, match="the response 'y' has largest magnitude"):
        check_lmer_scales(X2, y * 1e200, names, "y")
    X3 = X.copy()
    X3[:, 1] = np.nan  # nothing finite: nothing to check
    X3[:, 0] = 1e300  # the intercept's column is not checked
    check_lmer_scales(X3, y, names, "y")
    check_lmer_scales(X[:, :0], y, [], "y")
    g = np.repeat(np.arange(8), 5)
    d = pd.DataFrame({"y": y + rng.standard_normal(8)[g], "x": 1e-200 * X[:, 1], "g": g})
    with pytest.raises(DataError, match="fixed-effect column 'x'"):
        lmer("y ~ x + (1 | g)", d)
