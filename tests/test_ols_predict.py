"""OLSResults.predict against R 4.2.2's predict.lm (fixtures in tests/fixtures/predict/, made by
predict_ref.R there): factors (character, ordered, factor(k)), a logical, interactions, I(), log(),
missing predictors in the new data, a rank-deficient fit; and R's errors for bad new data."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import engine
from engine.errors import (ColumnNotFoundError, DataError, DataWarning, EngineInputError,
                           ModelSpecError, NewFactorLevelError)

RTOL = 1e-10
MODELS = ("main", "no_intercept", "aliased")
INTERVALS = ("none", "confidence", "prediction")
LEVELS = (0.95, 0.9)


def _load(path):
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    frame["o"] = pd.Categorical(frame["o"], categories=["low", "mid", "high"], ordered=True)
    return frame


@pytest.fixture(scope="module")
def fx(fixtures_dir):
    return fixtures_dir / "predict"


@pytest.fixture(scope="module")
def ref(fx):
    return json.loads((fx / "predict_reference.json").read_text())


@pytest.fixture(scope="module")
def fit_data(fx):
    return _load(fx / "predict_fit.csv")


@pytest.fixture(scope="module")
def new_data(fx):
    return _load(fx / "predict_new.csv")


def _values(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _check(frame, expected):
    for col in ("fit", "se_fit", "lwr", "upr"):
        if not expected.get(col):
            assert col not in frame.columns
            continue
        want = _values(expected[col])
        got = frame[col].to_numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=RTOL, atol=0)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize("level", LEVELS)
def test_newdata_matches_predict_lm(ref, fit_data, new_data, model, interval, level):
    r = ref[model]
    fit = engine.ols(r["formula"], fit_data)
    assert list(fit.params.index) == r["names"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred = fit.predict(new_data, interval=None if interval == "none" else interval, level=level)
    rank_warned = any("rank-deficient" in str(w.message) for w in caught)
    assert rank_warned == (model == "aliased")  # R 4.2.2 warns for new data on a rank-deficient fit
    expected = r[f"new_{interval}_{level}"]
    _check(pred, expected)
    assert list(pred.index) == list(new_data.index)
    assert pred.attrs["df"] == expected["df"]
    assert pred.attrs["residual_scale"] == pytest.approx(expected["residual_scale"], rel=RTOL)
    # rows 3 (x), 5 (z) and 6 (f) of the new data have a missing predictor: NA as R
    if model == "main":
        assert np.isnan(pred["fit"].to_numpy()[[2, 4, 5]]).all()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize("level", LEVELS)
def test_fitted_rows_match_predict_lm(ref, fit_data, model, interval, level):
    r = ref[model]
    fit = engine.ols(r["formula"], fit_data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # R: "predictions on current data refer to _future_ responses"
        pred = fit.predict(interval=None if interval == "none" else interval, level=level)
    expected = r[f"fitted_{interval}_{level}"]
    assert [i + 1 for i in pred.index] == expected["rows"]  # R's row names of the kept rows
    _check(pred, expected)
    np.testing.assert_allclose(pred["fit"], fit.fitted, rtol=1e-12)


def test_prediction_interval_on_current_data_warns(ref, fit_data):
    fit = engine.ols(ref["main"]["formula"], fit_data)
    with pytest.warns(DataWarning, match="_future_ responses"):
        fit.predict(interval="prediction")


def test_new_levels_raise_r_errors(ref, fit_data, new_data):
    fit = engine.ols(ref["main"]["formula"], fit_data)
    two = new_data.iloc[:2].copy()
    two["f"] = ["a", "zz"]
    with pytest.raises(NewFactorLevelError) as info:
        fit.predict(two)
    assert str(info.value) == ref["errors"]["new_level_two"]
    one = new_data.iloc[:2].copy()
    one["f"] = ["zz", "zz"]
    with pytest.raises(NewFactorLevelError) as info:
        fit.predict(one)
    assert str(info.value) == ref["errors"]["new_level_one"]
    k4 = new_data.iloc[:2].copy()
    k4["k"] = [4, 1]
    with pytest.raises(NewFactorLevelError) as info:
        fit.predict(k4)
    assert str(info.value) == ref["errors"]["new_level_factor_k"]
    assert issubclass(NewFactorLevelError, DataError) and issubclass(NewFactorLevelError, EngineInputError)


def test_unused_categories_and_category_order_do_not_matter(ref, fit_data, new_data):
    """Levels are matched by label; categories no row uses are dropped first (R: xi[, drop = TRUE])."""
    fit = engine.ols(ref["main"]["formula"], fit_data)
    base = fit.predict(new_data, interval="confidence")
    other = new_data.copy()
    other["f"] = pd.Categorical(other["f"], categories=["c", "zz", "b", "a"])
    other["o"] = pd.Categorical(other["o"].astype(str), categories=["high", "low", "mid"])
    pd.testing.assert_frame_equal(fit.predict(other, interval="confidence"), base, rtol=1e-14)


def test_missing_predictor_column_is_named(ref, fit_data, new_data):
    fit = engine.ols(ref["main"]["formula"], fit_data)
    with pytest.raises(ColumnNotFoundError, match=r"'z'"):
        fit.predict(new_data.drop(columns=["z"]))
    assert "y" not in new_data.columns  # the response is not needed


def test_type_mismatch_is_rs_error(ref, fit_data, new_data):
    fit = engine.ols(ref["main"]["formula"], fit_data)
    bad = new_data.copy()
    bad["f"] = np.arange(len(bad), dtype=float)
    with pytest.raises(DataError, match=r"variable 'f' was fitted with type \"factor\" but type \"numeric\""):
        fit.predict(bad)
    bad = new_data.copy()
    bad["b"] = 1.0
    with pytest.raises(DataError, match=r"variable 'b' was fitted with type \"logical\""):
        fit.predict(bad)
    bad = new_data.copy()
    bad["x"] = "1"
    with pytest.raises(DataError, match=r"'x'"):
        fit.predict(bad)


def test_newdata_is_not_modified(ref, fit_data, new_data):
    fit = engine.ols(ref["main"]["formula"], fit_data)
    before = new_data.copy()
    fit.predict(new_data, interval="prediction")
    pd.testing.assert_frame_equal(new_data, before)


def test_fitting_rows_as_newdata_give_the_fitted_values(ref, fit_data):
    fit = engine.ols(ref["main"]["formula"], fit_data)
    pred = fit.predict(fit_data, interval="confidence")
    kept = fit.fitted.index
    np.testing.assert_allclose(pred.loc[kept, "fit"], fit.fitted, rtol=1e-12)
    np.testing.assert_allclose(pred.loc[kept, "se_fit"], fit.predict().loc[kept, "se_fit"], rtol=1e-10)
    dropped = fit_data.index.difference(kept)
    # rows the fit dropped for a missing predictor are NA; the row with a missing response is not
    assert pred.loc[dropped, "fit"].isna().tolist() == [True, True, True, False]


def test_dot_formula_predicts_as_the_explicit_one(fit_data, new_data):
    cols = ["y", "x", "f", "z"]
    dotted = engine.ols("y ~ . + I(x^2)", fit_data[cols])
    explicit = engine.ols("y ~ x + f + z + I(x^2)", fit_data[cols])
    pd.testing.assert_frame_equal(dotted.predict(new_data, interval="prediction"),
                                  explicit.predict(new_data, interval="prediction"), rtol=1e-13)


def test_robust_option(fit_data, new_data):
    """R's predict.lm ignores a sandwich covariance: so does the default; robust=True uses it."""
    formula = "y ~ f * x + log(z)"
    plain = engine.ols(formula, fit_data)
    hc = engine.ols(formula, fit_data, vcov="HC3")
    pd.testing.assert_frame_equal(hc.predict(new_data, interval="confidence"),
                                  plain.predict(new_data, interval="confidence"))
    rob = hc.predict(new_data, interval="confidence", robust=True)
    X = np.column_stack([np.ones(len(new_data)), new_data["f"] == "b", new_data["f"] == "c",
                         new_data["x"], np.log(new_data["z"]),
                         (new_data["f"] == "b") * new_data["x"], (new_data["f"] == "c") * new_data["x"]])
    X[new_data["f"].isna().to_numpy()] = np.nan
    V = hc.vcov.to_numpy()
    se = np.sqrt(np.einsum("ij,jk,ik->i", X, V, X))
    np.testing.assert_allclose(rob["se_fit"], se, rtol=1e-12)
    from scipy import stats

    q = stats.t.ppf(0.975, hc.df_inference)
    np.testing.assert_allclose(rob["upr"] - rob["fit"], q * se, rtol=1e-12)


def test_bad_arguments(ref, fit_data, new_data):
    fit = engine.ols(ref["main"]["formula"], fit_data)
    with pytest.raises(ModelSpecError, match="interval"):
        fit.predict(new_data, interval="credible")
    with pytest.raises(ModelSpecError, match="level"):
        fit.predict(new_data, level=95)
    with pytest.raises(DataError, match="DataFrame"):
        fit.predict(new_data.to_dict())


def test_study_data_matches_predict_lm(fx):
    """Model 1 + wealth + an interaction + I() on the study data (pandas categoricals as
    load_grit makes them), predicted for its first 40 rows, several with missing predictors."""
    from engine.datasets import load_grit

    ref = json.loads((fx / "predict_grit_reference.json").read_text())
    data = load_grit()
    fit = engine.ols(ref["formula"], data)
    assert fit.df_resid == ref["df"]
    conf = fit.predict(data.iloc[:40], interval="confidence")
    pred = fit.predict(data.iloc[:40], interval="prediction", level=0.9)
    for got, key in ((conf["fit"], "fit"), (conf["se_fit"], "se_fit"), (conf["lwr"], "conf_lwr"),
                     (conf["upr"], "conf_upr"), (pred["lwr"], "pred90_lwr"), (pred["upr"], "pred90_upr")):
        want = _values(ref[key])
        assert np.isnan(want).any() and not np.isnan(want).all()
        np.testing.assert_array_equal(np.isnan(got.to_numpy()), np.isnan(want))
        np.testing.assert_allclose(got.to_numpy()[~np.isnan(want)], want[~np.isnan(want)], rtol=RTOL)
