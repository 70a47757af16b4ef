"""engine.ols on a large all-float64 design reads the columns in place (engine.ols._numeric_frame):
every output must equal the model_frame + least_squares route bit for bit, and the route must be
left for anything else (missing values, Inf, factors, transformations, columns in several blocks)."""

import numpy as np
import pandas as pd
import pytest

import engine
import engine.ols as eo
from engine.errors import DataError

STATS = ("coef", "aliased", "resid", "fitted", "std_error", "t_value", "p_value", "vcov", "sigma", "rss",
         "mss", "r_squared", "adj_r_squared", "fvalue", "f_numdf", "f_pvalue")


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
    for name in STATS:
        assert np.array_equal(getattr(new._ls, name), getattr(old._ls, name), equal_nan=True), name
    for name in ("r", "qty", "pivot", "resid_ss"):
        assert np.array_equal(getattr(new._ls.qr, name), getattr(old._ls.qr, name)), name
    assert str(new.summary()) == str(old.summary())
    mf_new, mf_old = new.model_frame, old.model_frame
    for name in mf_old.__dataclass_fields__:
        a, b = getattr(mf_new, name), getattr(mf_old, name)
        if isinstance(a, np.ndarray):
            assert np.array_equal(a, b) and a.dtype == b.dtype and a.shape == b.shape, name
            assert a.flags.c_contiguous == b.flags.c_contiguous, name
        else:
            assert a == b, name


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
    # pd.DataFrame(X[:, 1:]) keeps X's memory: its columns are strided rows of one row-major
    # array (benchmarks/bench_ols.py builds its frame so)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((90001, 8))
    names = [f"x{j}" for j in range(1, 8)]
    data = pd.DataFrame(X[:, 1:], columns=names).assign(y=X[:, 0] + rng.standard_normal(90001))
    _assert_identical("y ~ " + " + ".join(names), data, True)
    _assert_identical("y ~ x7 + x2 + x5", data, True)
