"""engine.pool against R mice 3.15's pool() on R's own five completed data sets, and the limits."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import engine
from engine.datasets import as_r_factor
from engine.errors import EngineInputError
from engine.pool import barnard_rubin_df, pool
from engine.rcompat.numbers import format_real as format_r_numbers

MODEL1 = "mathscore2 ~ male + raven + csize + belief_survey1 + mathscore1 + grit"
RTOL = 1e-8


@pytest.fixture(scope="module")
def r_completed(fixtures_dir):
    """R's five completed data sets, prepared as the analysis does (prep.R)."""
    long = pd.read_csv(fixtures_dir / "mice" / "mice_pmm_completed_long.csv")
    sets = []
    for k in range(1, 6):
        d = long[long[".imp"] == k].drop(columns=[".imp", ".id"]).reset_index(drop=True)
        for col in ("male", "wealth", "schoolid"):
            d[col] = as_r_factor(d[col])
        d["grit"] = pd.Categorical(d["grit"], categories=["control", "intervention"])
        sets.append(d)
    return sets


@pytest.fixture(scope="module")
def r_pool(fixtures_dir):
    with open(fixtures_dir / "mice" / "mice_pool_reference.json") as f:
        return json.load(f)["m2"]


@pytest.fixture(scope="module")
def pooled(r_completed):
    return pool([engine.ols(MODEL1, d) for d in r_completed])


def test_per_imputation_fits_match_r(r_completed, r_pool):
    for d, est, se in zip(r_completed, r_pool["per_imputation_estimates"], r_pool["per_imputation_se"]):
        fit = engine.ols(MODEL1, d)
        np.testing.assert_allclose(fit.params.to_numpy(), est, rtol=RTOL)
        np.testing.assert_allclose(fit.bse.to_numpy(), se, rtol=RTOL)


def test_every_pooled_number_matches_r(pooled, r_pool):
    summary = pooled.summary(conf_int=True, conf_level=0.95)
    assert list(summary["term"]) == r_pool["term"]
    assert list(summary.columns) == ["term", "estimate", "std.error", "statistic", "df", "p.value",
                                     "2.5 %", "97.5 %"]
    for ours, theirs in [("estimate", "estimate"), ("std.error", "std.error"), ("statistic", "statistic"),
                         ("df", "df"), ("p.value", "p.value"), ("2.5 %", "lo"), ("97.5 %", "hi")]:
        np.testing.assert_allclose(summary[ours].to_numpy(), r_pool[theirs], rtol=RTOL, err_msg=ours)
    for name, values in [("ubar", pooled.ubar), ("b", pooled.b), ("t", pooled.t), ("riv", pooled.riv),
                         ("lambda", pooled.lambda_), ("fmi", pooled.fmi)]:
        np.testing.assert_allclose(values, r_pool[name], rtol=RTOL, err_msg=name)
    assert pooled.dfcom == r_pool["dfcom"][0] == 1492
    table = pooled.pooled
    np.testing.assert_allclose(table["lambda"], r_pool["lambda"], rtol=RTOL)
    assert list(table.columns) == ["term", "m", "estimate", "ubar", "b", "t", "dfcom", "df", "riv", "lambda", "fmi"]


def test_summary_prints_like_r(pooled, fixtures_dir):
    expected = (fixtures_dir / "mice" / "pool_m2_summary.txt").read_text().rstrip("\n")
    assert str(pooled.summary(conf_int=True)) == expected
    assert repr(pooled.summary()) == expected


def test_other_conf_level_and_no_interval(pooled):
    s90 = pooled.summary(conf_level=0.90)
    assert "5 %" in s90.columns and "95 %" in s90.columns
    from scipy import stats

    crit = stats.t.ppf(0.95, pooled.df)
    np.testing.assert_allclose(s90["95 %"], pooled.estimate + crit * np.sqrt(pooled.t), rtol=1e-12)
    assert list(pooled.summary(conf_int=False).columns) == ["term", "estimate", "std.error", "statistic",
                                                            "df", "p.value"]
    with pytest.raises(EngineInputError, match="conf_level"):
        pooled.summary(conf_level=1.5)


def test_mice_fit_list_pools_like_pool(r_completed, pooled):
    from engine.mice import MiceFits

    fits = MiceFits(engine.ols(MODEL1, d) for d in r_completed)
    np.testing.assert_allclose(fits.pool().df, pooled.df, rtol=1e-14)


def test_identical_fits_give_b_zero_and_the_fit(r_completed):
    fit = engine.ols(MODEL1, r_completed[0])
    p = pool([fit] * 5)
    np.testing.assert_allclose(p.estimate, fit.params.to_numpy(), rtol=1e-14)
    np.testing.assert_allclose(p.std_error, fit.bse.to_numpy(), rtol=1e-14)
    assert np.all(p.b == 0) and np.all(p.riv == 0)
    # B = 0: lambda floored at 1e-4 as mice does; df is then (essentially) the observed-data df
    dfcom = fit.df_resid
    df_obs = (dfcom + 1) / (dfcom + 3) * dfcom
    assert np.all(np.isfinite(p.df))
    np.testing.assert_allclose(p.df, df_obs * (1 - 1e-4) / (1 + df_obs * (1 - 1e-4) * 1e-8 / 4), rtol=1e-12)
    np.testing.assert_allclose(p.df, df_obs, rtol=2e-4)


def test_dfcom_infinite_gives_old_rubin_df(pooled, r_completed):
    fits = [engine.ols(MODEL1, d) for d in r_completed]
    p = pool(fits, dfcom=math.inf)
    np.testing.assert_allclose(p.df, (p.m - 1) / p.lambda_**2, rtol=1e-14)
    assert np.all(p.df > pooled.df)  # the small-sample df is always smaller
    # Barnard-Rubin increases towards the old df as dfcom grows
    np.testing.assert_allclose(barnard_rubin_df(5, p.b, p.t, 1e12), p.df, rtol=1e-6)


def test_generic_fit_objects_and_errors():
    params = pd.Series([1.0, 2.0], index=["(Intercept)", "x"])
    fits = [SimpleNamespace(params=params + 0.1 * k, vcov=np.diag([0.04, 0.09]), df_resid=50) for k in range(3)]
    p = pool(fits)
    np.testing.assert_allclose(p.estimate, [1.1, 2.1])
    np.testing.assert_allclose(p.ubar, [0.04, 0.09])
    np.testing.assert_allclose(p.b, [0.01, 0.01])
    assert p.dfcom == 50
    with pytest.raises(EngineInputError, match="at least 2"):
        pool(fits[:1])
    other = SimpleNamespace(params=pd.Series([1.0], index=["z"]), bse=pd.Series([0.1], index=["z"]), df_resid=5)
    with pytest.raises(EngineInputError, match="terms"):
        pool([fits[0], other])
    with pytest.raises(EngineInputError, match="params"):
        pool([object(), object()])


def test_r_number_formatting():
    assert format_r_numbers([1.5, 10.25, -3.0]) == [" 1.50", "10.25", "-3.00"]
    assert format_r_numbers([1.510968e-02, 5.62042e-27]) == ["1.510968e-02", "5.620420e-27"]
    assert format_r_numbers([172.241095358383, 55.0262512331042]) == ["172.24110", " 55.02625"]
