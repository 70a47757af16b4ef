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


def _pairs_by_numpy(codes1, Z1, later):
    """The Z1'Z_rest pair blocks as engine.lmer built them with numpy (np.unique over the pair
    keys, a stable argsort by level j, a gather): (jptr, col0, q, term, vals), the reference for
    the compiled pass."""
    from engine.lmer_kernels import level_cross_sums

    n1 = int(codes1.max()) + 1
    pj, pc, pq, pt, pv = [], [], [], [], []
    off = 0
    for ti, (codes, Z, nl) in enumerate(later):
        q = Z.shape[1]
        uniq, inv = np.unique(codes1 * nl + codes, return_inverse=True)
        blocks = level_cross_sums(inv, Z1, Z, len(uniq))
        pj.append(uniq // nl)
        pc.append(off + (uniq % nl) * q)
        pq.append(np.full(len(uniq), q))
        pt.append(np.full(len(uniq), ti))
        pv.extend(list(blocks.reshape(len(uniq), -1)))
        off += q * nl
    pj = np.concatenate(pj)
    order = np.argsort(pj, kind="stable")
    jptr = np.searchsorted(pj[order], np.arange(n1 + 1))
    vals = np.concatenate([pv[k] for k in order])
    return jptr, np.concatenate(pc)[order], np.concatenate(pq)[order], np.concatenate(pt)[order], vals


def test_sufficient_moments_pairs_equal_the_numpy_construction():
    """lmer_kernels.sufficient_moments' Z1'Z_rest blocks (crossed terms of 1 and 2 columns, rows
    in no particular order) are np.unique's pairs, bit for bit; its nested test and column index
    agree with their definitions."""
    from engine.lmer_kernels import sufficient_moments

    rng = np.random.default_rng(7)
    n, n1 = 300, 23
    codes1 = rng.integers(0, n1, n)
    codes1[:n1] = np.arange(n1)
    Z1 = np.ascontiguousarray(np.column_stack([np.ones(n), rng.standard_normal(n)]))
    later = []
    for nl, q in ((7, 1), (5, 2)):
        codes = rng.integers(0, nl, n)
        codes[:nl] = np.arange(nl)
        Z = np.ascontiguousarray(np.column_stack([np.ones(n), rng.standard_normal(n)])[:, :q])
        later.append((codes, Z, nl))
    X = np.ascontiguousarray(np.column_stack([np.ones(n), rng.standard_normal(n)]))
    y = rng.standard_normal(n)
    rcodes = np.stack([c for c, _, _ in later])
    Zr = np.concatenate([Z for _, Z, _ in later], axis=1)
    rq = np.array([1, 2])
    rnl = np.array([7, 5])
    roff = np.array([0, 7])
    out = sufficient_moments(X, y, codes1, Z1, n1, rcodes, Zr, rq, roff, rnl, True)
    jptr, col0, q, term, off, vals, cptr, cpair, pair_j = out[3]
    ref = _pairs_by_numpy(codes1, Z1, later)
    for got, want in zip((jptr, col0, q, term, vals), ref):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(off, np.concatenate([[0], np.cumsum(2 * q)[:-1]]))
    assert out[4] is False and len(cptr) == 0  # crossed; blocks of 2 x k: no by-column index
    # one scalar later term: the by-column index is the stable sort of the pairs by column
    one = sufficient_moments(X, y, codes1, Z1[:, :1].copy(), n1, rcodes[:1].copy(), Zr[:, :1].copy(),
                             rq[:1], roff[:1], rnl[:1], True)
    jptr, col0, _q, _t, _o, _v, cptr, cpair, pair_j = one[3]
    np.testing.assert_array_equal(cpair, np.argsort(col0, kind="stable"))
    np.testing.assert_array_equal(cptr, np.searchsorted(col0[cpair], np.arange(8)))
    np.testing.assert_array_equal(pair_j, np.repeat(np.arange(n1), np.diff(jptr)))


def test_integer_unique_is_numpys_unique():
    """formula_kernels.integer_unique (numeric grouping ids by counting) gives np.unique's levels
    and inverse, and declines what it does not count (fractions, NaN, Inf, a wide range)."""
    from engine.formula_kernels import integer_unique

    rng = np.random.default_rng(11)
    for values in (rng.integers(-50, 50, 400).astype(float), np.array([3.0]), np.array([5.0, -2.0, 5.0, 0.0]),
                   rng.integers(0, 10**6, 30).astype(float) * 7.0):
        found, uniques, inverse = integer_unique(values)
        if not found:  # the range is too wide for counting
            assert np.ptp(values) + 1 > max(1 << 16, 4 * len(values))
            continue
        want_u, want_i = np.unique(values, return_inverse=True)
        np.testing.assert_array_equal(uniques, want_u)
        np.testing.assert_array_equal(inverse, want_i)
    for values in (np.array([1.0, 2.5]), np.array([1.0, np.nan]), np.array([np.inf, 1.0]), np.array([0.0, 1e15])):
        assert integer_unique(values)[0] is False
