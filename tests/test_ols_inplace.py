"""engine.ols on a large all-float64 design reads the columns in place (engine.ols._numeric_frame) and
never writes X: every output must equal the model_frame + least_squares route (bit for bit, except
what sums the residuals, see ``_assert_identical``), the model frame's X (gathered on demand) must
be model_frame's, and the route must be left for anything else (missing values, Inf, factors,
transformations, columns in several blocks)."""

import tracemalloc

import numpy as np
import pandas as pd
import pytest

import engine
import engine.ols as eo
from engine.errors import DataError

# bit for bit on both routes: the same triangle, hence the same R, Q'y, rank, pivot, coefficients
EXACT = ("coef", "aliased", "f_numdf")
# what reads the residual pass: the in-place route sums each row's X b in the design's column
# order (engine.ols._columns_fitted_rows), the other route in BLAS's order, so these agree to
# rounding only (the decision of issue 18: no n x p design written for the residuals)
RESIDUAL = ("std_error", "t_value", "p_value", "vcov", "sigma", "rss", "mss", "r_squared",
            "adj_r_squared", "fvalue", "f_pvalue")
EPS = np.finfo(float).eps


def _model_frame_route(formula, data):
    saved = eo._numeric_frame
    eo._numeric_frame = lambda f, d: (None, None, 0.0)
    try:
        return engine.ols(formula, data)
    finally:
        eo._numeric_frame = saved


def _assert_identical(formula, data, in_place):
    assert (eo._numeric_frame(formula, data)[0] is not None) is in_place
    new, old = engine.ols(formula, data), _model_frame_route(formula, data)
    for name in EXACT:
        assert np.array_equal(getattr(new._ls, name), getattr(old._ls, name), equal_nan=True), name
    for name in ("r", "qty", "pivot", "resid_ss"):
        assert np.array_equal(getattr(new._ls.qr, name), getattr(old._ls.qr, name)), name
    mf_new, mf_old = new.model_frame, old.model_frame
    X = mf_old.X
    # a dot product of p terms summed in any order is within p eps sum_j |b_j x_ij| of the exact
    # one (Higham, Accuracy and Stability, 2nd ed., eq. 3.5), so the two routes' fitted values are
    # within twice that of each other; the residuals y - fitted then too, up to y's rounding
    b = np.nan_to_num(old._ls.coef)
    bound = 2 * X.shape[1] * EPS * (np.abs(X) @ np.abs(b)) + EPS * np.abs(mf_old.y)
    for name in ("fitted", "resid"):
        a, c = getattr(new._ls, name), getattr(old._ls, name)
        assert (np.abs(a - c) <= bound).all(), name
        if not in_place:
            assert np.array_equal(a, c), name
    # sums of squares of residuals (sigma, R^2, F, the standard errors, t, p) from residuals that
    # agree to ~1e-16 relative: 1e-12 relative leaves room for t values up to ~1e3 in the p-values
    for name in RESIDUAL:
        a, c = getattr(new._ls, name), getattr(old._ls, name)
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=0, equal_nan=True, err_msg=name)
        if not in_place:
            assert np.array_equal(a, c, equal_nan=True), name
    # printed to 4-5 significant digits: the fixed-seed frames here print the same text
    assert str(new.summary()) == str(old.summary())
    for name in mf_old.__dataclass_fields__:
        a, b = getattr(mf_new, name), getattr(mf_old, name)
        if isinstance(a, np.ndarray):
            assert np.array_equal(a, b) and a.dtype == b.dtype and a.shape == b.shape, name
            assert a.flags.c_contiguous == b.flags.c_contiguous, name
        else:
            assert a == b, name
    return new, old


def _frame(n, k, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, k))
    names = [f"x{j}" for j in range(1, k + 1)]
    y = Z @ rng.standard_normal(k) + rng.standard_normal(n)
    return pd.DataFrame(Z * scale, columns=names).assign(y=y), names  # y in a block of its own


@pytest.mark.parametrize("n,k", [(65536, 2), (200003, 12), (140001, 1)])
def test_in_place_route_is_bit_identical(n, k):
    data, names = _frame(n, k)
    _assert_identical("y ~ " + " + ".join(names), data, True)
    _assert_identical("y ~ " + " + ".join(names) + " - 1", data, True)
    _assert_identical("y ~ " + " + ".join(reversed(names)), data, True)


def test_in_place_route_aliased_and_extreme_columns():
    data, names = _frame(70000, 3)
    Z = data[names].to_numpy().copy()
    Z[:, 2] = Z[:, 0] * 2.0  # aliased: R's pivoting on the same triangle
    aliased = pd.DataFrame(Z, columns=names).assign(y=data["y"].to_numpy())
    _assert_identical("y ~ x1 + x2 + x3", aliased, True)
    Z = data[names].to_numpy().copy()
    Z[:, 0] *= 1e-210  # scaled by pivoted_qr: the in-place triangle is not used, same numbers
    tiny = pd.DataFrame(Z, columns=names).assign(y=data["y"].to_numpy())
    _assert_identical("y ~ x1 + x2 + x3", tiny, True)
    huge, _ = _frame(70000, 3, scale=1e200)  # the in-place pass overflows: model_frame's route
    _assert_identical("y ~ x1 + x2 + x3", huge, False)


def test_other_designs_keep_the_model_frame_route():
    data, names = _frame(70000, 2)
    data["k"] = np.arange(70000) % 7  # integer column
    data["f"] = pd.Categorical(np.arange(70000) % 3)
    for formula in ("y ~ x1 + k", "y ~ x1 + f", "y ~ x1 + I(x1^2)", "y ~ x1:x2", "y ~ x1 * x2", "y ~ 1",
                    "y ~ .", "y ~ log(abs(x1)) + x2"):
        _assert_identical(formula, data, False)
    small, names = _frame(1000, 2)  # small frames: the plain-column path of model_frame
    _assert_identical("y ~ x1 + x2", small, False)
    split = data[["y", "x1"]].copy()
    split["x2"] = data["x2"].to_numpy().copy()  # the predictors in two blocks
    _assert_identical("y ~ x1 + x2", split, False)


def test_missing_and_infinite_values():
    data, names = _frame(70000, 2)
    Z = data[names].to_numpy().copy()
    Z[5, 0] = np.nan
    _assert_identical("y ~ x1 + x2", pd.DataFrame(Z, columns=names).assign(y=data["y"].to_numpy()), False)
    Z[5, 0] = np.inf
    with pytest.raises(DataError, match="'x1'"):
        engine.ols("y ~ x1 + x2", pd.DataFrame(Z, columns=names).assign(y=data["y"].to_numpy()))
    y = data["y"].to_numpy().copy()
    y[7] = np.nan  # a missing response: dropped by model_frame's route
    _assert_identical("y ~ x1 + x2", data[names].assign(y=y), False)


def test_the_data_is_not_modified():
    data, names = _frame(70000, 2)
    before = data.copy()
    engine.ols("y ~ x1 + x2", data)
    pd.testing.assert_frame_equal(data, before, check_exact=True)


def test_frame_built_from_an_array_slice():
    # pd.DataFrame(X[:, 1:], copy=False) keeps X's memory: its columns are strided rows of one
    # row-major array (the in-place passes' row-major branch; pandas 3 copies without copy=False)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((90001, 8))
    names = [f"x{j}" for j in range(1, 8)]
    data = pd.DataFrame(X[:, 1:], columns=names, copy=False).assign(y=X[:, 0] + rng.standard_normal(90001))
    source = eo.numeric_design("y ~ x1", data).source
    assert source.strides[0] < source.strides[1] and np.shares_memory(source, X)
    _assert_identical("y ~ " + " + ".join(names), data, True)
    _assert_identical("y ~ x7 + x2 + x5", data, True)


def test_no_design_is_written():
    # the in-place route allocates n-vectors (y, rows, fitted, resid), never the n x p design;
    # the model frame's X is gathered when asked for, and predict() (which reads it) then agrees
    data, names = _frame(70000, 30, seed=3)
    formula = "y ~ " + " + ".join(names)
    engine.ols(formula, data)  # compile / load the kernels first
    tracemalloc.start()
    try:
        fit = engine.ols(formula, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    design_bytes = 70000 * 31 * 8
    assert peak < design_bytes / 2, peak
    assert "X" not in fit.model_frame.__dict__
    old = _model_frame_route(formula, data)
    assert np.array_equal(fit.model_frame.X, old.model_frame.X)
    new_p, old_p = fit.predict(interval="confidence"), old.predict(interval="confidence")
    assert np.array_equal(new_p["fit"], old_p["fit"])  # the same X and coefficients
    np.testing.assert_allclose(new_p.to_numpy(), old_p.to_numpy(), rtol=1e-12, atol=0)


def test_design_on_demand_is_the_fitted_data():
    # X is gathered after the fit: a later change to the user's frame must not reach it
    data, names = _frame(70000, 3, seed=4)
    fit = engine.ols("y ~ x1 + x2 + x3", data)
    expected = np.column_stack([np.ones(70000), data[names].to_numpy()])
    data.loc[0, "x1"] = 99.0
    data["x2"] *= 2.0
    assert np.array_equal(fit.model_frame.X, expected)


def test_design_gathered_at_fit_without_copy_on_write(monkeypatch):
    # pandas 2 without copy-on-write shares a shallow copy's block with the user's frame: the
    # in-place route then gathers X at the fit, so a later change to the frame cannot reach it
    import engine.formula as formula_module

    monkeypatch.setattr(formula_module, "_pandas_copy_on_write", lambda: False)
    data, names = _frame(70000, 3, seed=5)
    fit = engine.ols("y ~ x1 + x2 + x3", data)
    assert "X" in fit.model_frame.__dict__ and fit.model_frame._data is None
    expected = np.column_stack([np.ones(70000), data[names].to_numpy()])
    data.loc[0, "x1"] = 99.0
    assert np.array_equal(fit.model_frame.X, expected)
