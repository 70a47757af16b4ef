"""Predictions of engine.brm fits (engine.multilevel.predict) against R, calibration and bad input.

R references: tests/fixtures/predict_brm/predict_refs.json, computed by make_predict_refs.R in R from
the draws in engine_draws.csv (design by model.matrix, random intercepts added in R, brms 2.18's
.bayes_R2 and posterior_summary, loo 2.5.1), so the design, the group mapping and every summary are
checked independently of engine's code.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import engine
from engine.brm import _Prepared
from engine.errors import ColumnNotFoundError, DataError, EngineInputError
from engine.multilevel.results import BrmFit, load_fit

FIX = Path(__file__).parent / "fixtures" / "predict_brm"
FORMULA = "y ~ x + f + (1 | school/class)"
COLS = ["Estimate", "Est.Error", "Q2.5", "Q97.5"]


@pytest.fixture(scope="module")
def ref():
    with open(FIX / "predict_refs.json") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def data():
    return pd.read_csv(FIX / "sim_data.csv")


@pytest.fixture(scope="module")
def fit(data):
    """A BrmFit holding the fixture's draws (no sampling) and the design engine.brm stores."""
    prepared = _Prepared(FORMULA, data, None)
    draws = pd.read_csv(FIX / "engine_draws.csv")
    chain = draws[".chain"].to_numpy()
    stack = lambda names: np.stack([draws.loc[chain == c, names].to_numpy() for c in np.unique(chain)])
    return BrmFit(
        formula=FORMULA,
        parameter_names=prepared.parameter_names,
        draws_values=stack(prepared.parameter_names),
        ranef_names=prepared.ranef_names,
        ranef_values=stack(prepared.ranef_names),
        stats={},
        groups=prepared.groups,
        nobs=prepared.nobs,
        data_name="d",
        chains=2,
        iter=300,
        warmup=200,
        thin=1,
        sampler="gibbs",
        design=prepared.design,
    )


def check_summary(table, expected, rtol=1e-10):
    assert list(table.columns) == COLS
    for col in COLS:
        np.testing.assert_allclose(table[col].to_numpy(), expected[col], rtol=rtol, atol=1e-12)


def test_bayes_r2_matches_brms(fit, ref):
    table = fit.bayes_R2()
    assert list(table.index) == ["R2"] and list(table.columns) == COLS
    np.testing.assert_allclose(table.loc["R2"].to_numpy(), ref["bayes_R2"], rtol=1e-10)
    np.testing.assert_allclose(fit.bayes_R2(summary=False), ref["bayes_R2_draws"], rtol=1e-10)


def test_fitted_matches_r(fit, ref):
    check_summary(fit.fitted(), ref["fitted"])
    check_summary(fit.fitted(re_formula=np.nan), ref["fitted_re_na"])
    check_summary(fit.fitted(re_formula="~0"), ref["fitted_re_na"])
    assert fit.posterior_epred().shape == (200, 320)
    np.testing.assert_array_equal(fit.posterior_linpred(), fit.posterior_epred())  # identity link


def test_newdata_matches_r(fit, ref):
    nd = pd.DataFrame(ref["newdata"])
    check_summary(fit.fitted(nd), ref["newdata_fitted"])
    check_summary(fit.fitted(nd, re_formula="~ (1 | school)"), ref["newdata_fitted_school_only"])
    # re_formula = NA needs no grouping columns at all, nor the response
    check_summary(fit.fitted(nd[["x", "f"]], re_formula="NA"), ref["newdata_fitted_re_na"])


def test_log_lik_and_loo_of_a_fit_match_r(fit, ref):
    ll = fit.log_lik()
    assert ll.shape == (200, 320)
    np.testing.assert_allclose(ll.mean(axis=0), ref["log_lik_colmeans"], rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = engine.loo(fit)
    np.testing.assert_allclose(result.estimates["Estimate"], ref["loo"]["estimates"], rtol=1e-8)
    np.testing.assert_allclose(result.estimates["SE"], ref["loo"]["se"], rtol=1e-8)
    np.testing.assert_allclose(result.pareto_k, ref["loo"]["pareto_k"], rtol=1e-6)


def test_new_levels(fit, data):
    nd = pd.DataFrame({"x": [0.3, 0.3], "f": ["a", "a"], "school": [99, 2], "class": [1, 77]})
    with pytest.raises(DataError, match=r"Levels '99' of grouping factor 'school'.*allow_new_levels"):
        fit.fitted(nd)
    eta = fit.posterior_linpred(nd, allow_new_levels=True, seed=5)
    fixed = fit.posterior_linpred(nd, re_formula=np.nan)
    r = fit.ranef_values.reshape(200, -1)
    names = fit.ranef_names
    school = r[:, [i for i, n in enumerate(names) if n.startswith("r_school[")]]
    school_class = r[:, [i for i, n in enumerate(names) if n.startswith("r_school:class[")]]
    # "uncertainty": every draw of the new school (row 0) is that draw of some existing school plus
    # that draw of some existing class
    extra = eta[:, 0] - fixed[:, 0]
    sums = school[:, :, None] + school_class[:, None, :]
    assert np.all(np.min(np.abs(sums - extra[:, None, None]), axis=(1, 2)) < 1e-10)
    # row 1: school 2 known, class 2_77 new
    extra1 = eta[:, 1] - fixed[:, 1] - school[:, 1]
    assert np.all(np.min(np.abs(school_class - extra1[:, None]), axis=1) < 1e-10)
    # "gaussian": N(0, sd) per draw; check the scale over many rows
    many = pd.DataFrame({"x": 0.0, "f": "a", "school": np.arange(100, 400), "class": 1})
    g = fit.posterior_linpred(many, allow_new_levels=True, sample_new_levels="gaussian", seed=1)
    base = fit.posterior_linpred(many, re_formula=np.nan)
    sd = np.hypot(fit.draws["sd_school__Intercept"].to_numpy(), fit.draws["sd_school:class__Intercept"].to_numpy())
    z = (g - base) / sd[:, None]
    assert abs(z.std() - 1) < 0.02 and abs(z.mean()) < 0.02  # 60,000 standard normals: SE 0.004 / 0.003
    old = fit.posterior_linpred(nd, allow_new_levels=True, sample_new_levels="old_levels", seed=2)
    # "old_levels": all draws of the new school come from one existing school (and class)
    extra_old = old[:, 0] - fixed[:, 0]
    worst = np.max(np.abs(sums - extra_old[:, None, None]), axis=0)  # over draws, per (school, class)
    assert worst.min() < 1e-10
    with pytest.raises(EngineInputError, match="sample_new_levels"):
        fit.fitted(nd, allow_new_levels=True, sample_new_levels="normal")


def test_predict_draws_and_summary(fit):
    yrep = fit.posterior_predict(seed=3)
    assert yrep.shape == (200, 320)
    np.testing.assert_array_equal(yrep, fit.posterior_predict(seed=3))
    table = fit.predict(seed=3)
    np.testing.assert_allclose(table["Estimate"], yrep.mean(axis=0))
    np.testing.assert_allclose(table["Q97.5"], np.quantile(yrep, 0.975, axis=0))
    # the predictive SD exceeds the epred SD by sigma (within Monte Carlo error of 200 draws)
    sig = fit.draws["sigma"].mean()
    excess = np.sqrt(np.maximum(table["Est.Error"] ** 2 - fit.fitted()["Est.Error"] ** 2, 0)).mean()
    assert abs(excess - sig) < 0.1 * sig
    assert fit.posterior_epred(ndraws=50, seed=1).shape == (50, 320)


def test_bad_newdata(fit, ref):
    nd = pd.DataFrame(ref["newdata"])
    with pytest.raises(ColumnNotFoundError, match="'x'"):
        fit.fitted(nd.drop(columns="x"))
    with pytest.raises(DataError, match=r"'f'.*'z'"):
        fit.fitted(nd.assign(f=["a", "z", "b"]))
    with pytest.raises(DataError, match="'x' has missing values"):
        fit.fitted(nd.assign(x=[0.0, np.nan, 1.0]))
    with pytest.raises(EngineInputError, match="'classroom'"):
        fit.fitted(nd, re_formula="~ (1 | classroom)")
    with pytest.raises(DataError, match="DataFrame"):
        fit.fitted(nd.to_numpy())
    original = nd.copy()
    fit.fitted(nd)
    pd.testing.assert_frame_equal(nd, original)  # the user's data is never modified


def test_save_and_load_keep_the_design(fit, ref, tmp_path):
    fit.save(tmp_path / "f")
    again = load_fit(tmp_path / "f")
    nd = pd.DataFrame(ref["newdata"])
    pd.testing.assert_frame_equal(again.fitted(nd), fit.fitted(nd))
    np.testing.assert_array_equal(again.log_lik(), fit.log_lik())
    # a file written without the design (older engine) loads, and prediction says why it cannot
    meta = json.loads((tmp_path / "f.json").read_text())
    del meta["design"]
    (tmp_path / "f.json").write_text(json.dumps(meta))
    old = load_fit(tmp_path / "f")
    with pytest.raises(EngineInputError, match="does not carry its data"):
        old.fitted()
    with pytest.raises(EngineInputError, match="does not carry its data"):
        engine.loo(old)


def simulate(rng, n_groups, n_per, beta=(1.0, 0.5), tau=0.8, sigma=1.0):
    u = rng.normal(0, tau, n_groups)
    g = np.repeat(np.arange(n_groups), n_per)
    x = rng.normal(size=g.size)
    y = beta[0] + beta[1] * x + u[g] + rng.normal(0, sigma, g.size)
    return pd.DataFrame({"y": y, "x": x, "g": g + 1})


@pytest.mark.slow
def test_posterior_predict_pit_is_uniform():
    """PIT of held-out observations under posterior_predict (same groups; and new groups with
    allow_new_levels) for data simulated from the model. Held-out rows are independent given the
    parameters, so under calibration their PIT values are uniform up to the posterior's
    concentration (40 groups x 20 rows). KS test against U(0, 1) at the 1% level for 400 values
    (critical D = 0.081); a predictive with half the true noise must fail it (power check)."""
    rng = np.random.default_rng(20261202)
    train = simulate(rng, 40, 30)
    held = train.groupby("g").tail(10)
    train = train.drop(held.index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm("y ~ x + (1 | g)", train, chains=2, iter=700, warmup=200, seed=7)
    yrep = fit.posterior_predict(held, seed=11)
    pit = (yrep < held["y"].to_numpy()[None, :]).mean(axis=0)
    assert stats.kstest(pit, "uniform").pvalue > 0.01
    # new groups, drawn from the same model: sample_new_levels="uncertainty" and "gaussian"
    new = simulate(np.random.default_rng(5), 400, 1).assign(g=lambda d: d["g"] + 1000)
    for how in ("uncertainty", "gaussian"):
        yrep_new = fit.posterior_predict(new, allow_new_levels=True, sample_new_levels=how, seed=3)
        pit_new = (yrep_new < new["y"].to_numpy()[None, :]).mean(axis=0)
        assert stats.kstest(pit_new, "uniform").pvalue > 0.01, how
    # power: too narrow a predictive (half the noise) is detected
    epred = fit.posterior_epred(held)
    narrow = epred + 0.5 * fit.draws["sigma"].to_numpy()[:, None] * np.random.default_rng(2).standard_normal(epred.shape)
    pit_bad = (narrow < held["y"].to_numpy()[None, :]).mean(axis=0)
    assert stats.kstest(pit_bad, "uniform").pvalue < 1e-4


def test_brm_multiple_loo_per_imputation_and_pooled(tmp_path):
    rng = np.random.default_rng(4)
    base = simulate(rng, 12, 8)
    sets = [base.assign(y=base["y"] + rng.normal(0, 0.3, len(base)) * (base.index % 5 == 0)) for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm_multiple("y ~ x + (1 | g)", sets, chains=2, iter=300, warmup=100, seed=3)
        result = engine.loo(fit)
        again = load_fit(fit.save(tmp_path / "m")[0])
        result_again = again.loo()
    assert result.m == 3 and list(result.table.index) == [1, 2, 3]
    for k in range(3):
        # data set k's likelihood under data set k's chains, computed here from the draws
        sel = fit.chain_imputation == k
        draws = fit.draws_values[sel].reshape(-1, fit.draws_values.shape[2])
        ranef = fit.ranef_values[sel].reshape(-1, fit.ranef_values.shape[2])
        names = fit.parameter_names
        d = sets[k]
        eta = draws[:, [names.index("b_Intercept")]] + draws[:, [names.index("b_x")]] * d["x"].to_numpy()
        eta = eta + ranef[:, d["g"].to_numpy() - 1]
        ll = stats.norm.logpdf(d["y"].to_numpy(), eta, draws[:, [names.index("sigma")]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            direct = engine.loo(ll.reshape(2, 200, -1))
        np.testing.assert_allclose(result.per_imputation[k].pointwise["elpd_loo"], direct.pointwise["elpd_loo"], rtol=1e-10)
        assert result.table.loc[k + 1, "elpd_loo"] == pytest.approx(direct.elpd_loo, rel=1e-12)
    est = result.table["elpd_loo"].to_numpy()
    se = result.table["se_elpd_loo"].to_numpy()
    assert result.estimates.loc["elpd_loo", "Estimate"] == pytest.approx(est.mean())
    assert result.estimates.loc["elpd_loo", "SE"] == pytest.approx(np.sqrt(np.mean(se**2) + (1 + 1 / 3) * est.var(ddof=1)))
    pd.testing.assert_frame_equal(result_again.table, result.table)
    assert "Per imputed data set" in str(result)
    # predictions of a brm_multiple fit use the first data set, as brms
    np.testing.assert_array_equal(fit.design.y, sets[0]["y"].to_numpy())
