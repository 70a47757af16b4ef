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
