"""Predictions, log_lik, loo and bayes_R2 of engine.brm fits with random slopes and non-Gaussian
families (engine.multilevel.predict, engine.newdata.multilevel_rows).

References: brms 2.18's draws and ``log_lik(fit)`` matrices of three fits (tests/fixtures/predict_families,
made by make_family_fixtures.py from the project's brms references): ``Reaction ~ Days + (Days | Subject)``
(gaussian), ``count ~ zAge + zBase * Trt + (1 | patient)`` (poisson) and ``incidence | trials(size) ~
period + (1 | herd)`` (binomial). engine's log_lik on brms' draws must reproduce brms' matrix (the draws
hold the random effects of three levels per group, so the observations of those levels are checked; the
others get zero effects and are not compared). Closed forms (scipy's dbinom, dpois, bernoulli) and the
draws' own arithmetic check the rest.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit

import engine
from engine.brm import _Prepared
from engine.errors import ColumnNotFoundError, DataError, NewFactorLevelError
from engine.multilevel.results import BrmFit, load_fit

FIX = Path(__file__).parent / "fixtures"
HERE = FIX / "predict_families"
MODELS = {
    "sleep_slope": ("Reaction ~ Days + (Days | Subject)", "gaussian", FIX / "brms_slopes" / "sleepstudy.csv",
                    {"Subject": str}),
    "epi_pois": ("count ~ zAge + zBase * Trt + (1 | patient)", "poisson", FIX / "families" / "brms_epilepsy.csv",
                 {"Trt": str, "patient": str}),
    "cbpp_binom": ("incidence | trials(size) ~ period + (1 | herd)", "binomial", FIX / "families" / "lme4_cbpp.csv",
                   {"herd": str, "period": str}),
}


def brms_fit(name):
    """A BrmFit holding brms' draws (4 x 250; random effects of levels without draws set to 0) and the
    design engine.brm stores; and the data."""
    formula, family, path, dtypes = MODELS[name]
    data = pd.read_csv(path, dtype=dtypes)
    prep = _Prepared(formula, data, None, family=family)
    draws = pd.read_csv(HERE / f"{name}_draws.csv.gz")
    zeros = np.zeros(len(draws))
    stack = lambda names: np.column_stack([draws[n].to_numpy() if n in draws else zeros for n in names]).reshape(4, 250, -1)
    fit = BrmFit(formula=formula, parameter_names=prep.parameter_names, draws_values=stack(prep.parameter_names),
                 ranef_names=prep.ranef_names, ranef_values=stack(prep.ranef_names), stats={}, groups=prep.groups,
                 nobs=prep.nobs, data_name="d", chains=4, iter=2000, warmup=1000, thin=4, sampler="nuts",
                 family=family, design=prep.design)
    return fit, data, draws


@pytest.fixture(scope="module")
def sleep():
    return brms_fit("sleep_slope")


@pytest.fixture(scope="module")
def epi():
    return brms_fit("epi_pois")


@pytest.fixture(scope="module")
def cbpp():
    return brms_fit("cbpp_binom")


@pytest.mark.parametrize("name", list(MODELS))
def test_log_lik_matches_brms(name):
    fit, data, _ = brms_fit(name)
    ref = pd.read_csv(HERE / f"{name}_loglik3.csv.gz")
    rows = ref.columns.astype(int).to_numpy()
    ll = fit.log_lik()
    assert ll.shape == (1000, len(data))
    np.testing.assert_allclose(ll[:, rows], ref.to_numpy(), rtol=1e-10, atol=1e-12)
    assert fit.log_lik(as_array=True).shape == (4, 250, len(data))


def test_slope_linpred_from_the_draws(sleep):
    fit, data, draws = sleep
    eta = fit.posterior_linpred()
    fixed = draws["b_Intercept"].to_numpy()[:, None] + draws["b_Days"].to_numpy()[:, None] * data["Days"].to_numpy()
    np.testing.assert_allclose(fit.posterior_linpred(re_formula="~0"), fixed, rtol=1e-12)
    for subject in ("308", "309", "310"):
        rows = (data["Subject"] == subject).to_numpy()
        want = fixed[:, rows] + draws[f"r_Subject[{subject},Intercept]"].to_numpy()[:, None] \
            + draws[f"r_Subject[{subject},Days]"].to_numpy()[:, None] * data.loc[rows, "Days"].to_numpy()
        np.testing.assert_allclose(eta[:, rows], want, rtol=1e-12)
    # newdata rows: the same numbers by level label, in any order
    nd = pd.DataFrame({"Days": [7.5, 0.0, 3.0], "Subject": ["310", "308", "310"]})
    got = fit.posterior_epred(nd)
    want = (draws["b_Intercept"].to_numpy()[:, None] + draws["b_Days"].to_numpy()[:, None] * nd["Days"].to_numpy()
            + np.column_stack([draws[f"r_Subject[{s},Intercept]"] + draws[f"r_Subject[{s},Days]"] * d
                               for s, d in zip(nd["Subject"], nd["Days"])]))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # the grouping column is not needed without the group-level terms
    np.testing.assert_allclose(fit.posterior_linpred(nd[["Days"]], re_formula=np.nan),
                               want - (got - fit.posterior_linpred(nd, re_formula=np.nan)), rtol=1e-12)


def test_slope_new_levels(sleep):
    fit, data, draws = sleep
    nd = pd.DataFrame({"Days": [0.0, 1.0, 0.0], "Subject": ["new1", "new1", "new2"]})
    with pytest.raises(DataError, match=r"Levels 'new1', 'new2' of grouping factor 'Subject'.*allow_new_levels"):
        fit.posterior_linpred(nd)
    fixed = fit.posterior_linpred(nd, re_formula=np.nan)
    r = fit.ranef_values.reshape(1000, -1)
    names = fit.ranef_names
    known = ["308", "309", "310"]
    ints = np.column_stack([r[:, names.index(f"r_Subject[{s},Intercept]")] for s in known])
    slopes = np.column_stack([r[:, names.index(f"r_Subject[{s},Days]")] for s in known])
    levels = [g.levels for g in fit.groups][0]
    n_zero = len(levels) - 3  # levels whose draws the fixture lacks hold (0, 0)
    # "uncertainty": per draw, the whole (intercept, slope) vector of one existing level of that draw
    eta = fit.posterior_linpred(nd, allow_new_levels=True, seed=4)
    u0 = eta[:, 0] - fixed[:, 0]
    u1 = eta[:, 1] - fixed[:, 1] - u0  # the slope part at Days = 1
    cand_i = np.column_stack([ints, np.zeros(len(ints))])
    cand_s = np.column_stack([slopes, np.zeros(len(ints))])
    match = (np.abs(cand_i - u0[:, None]) < 1e-9) & (np.abs(cand_s - u1[:, None]) < 1e-9)
    assert match.any(axis=1).all()
    # each of the three known levels is picked in about 1/18 of the draws
    picked = match[:, :3].sum(axis=0)
    assert np.all(np.abs(picked - 1000 / 18) < 4 * np.sqrt(1000 / 18))
    assert n_zero == 15
    # "old_levels": one existing level for every draw
    old = fit.posterior_linpred(nd, allow_new_levels=True, sample_new_levels="old_levels", seed=0)
    o0 = old[:, 0] - fixed[:, 0]
    assert np.any([np.allclose(o0, ints[:, k]) for k in range(3)]) or np.allclose(o0, 0)
    # "gaussian": N(0, Sigma[s]) with the draw's correlation; whitened draws are standard normal
    many = pd.DataFrame({"Days": np.tile([0.0, 1.0], 400), "Subject": np.repeat([f"n{i}" for i in range(400)], 2)})
    g = fit.posterior_linpred(many, allow_new_levels=True, sample_new_levels="gaussian", seed=1)
    g = g - fit.posterior_linpred(many, re_formula=np.nan)
    a, b = g[:, 0::2], g[:, 1::2] - g[:, 0::2]  # (S, 400) intercepts and slopes
    sd0, sd1 = draws["sd_Subject__Intercept"].to_numpy()[:, None], draws["sd_Subject__Days"].to_numpy()[:, None]
    rho = draws["cor_Subject__Intercept__Days"].to_numpy()[:, None]
    z0 = a / sd0
    z1 = (b / sd1 - rho * z0) / np.sqrt(1 - rho ** 2)
    for z in (z0, z1):  # 400,000 values: SE of the mean 0.0016, of the SD 0.0011
        assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(z0 * z1)) < 0.01
    # and the correlation is there: a fit without it would give corr(a, b) = 0
    assert abs(np.mean(a / sd0 * b / sd1) - rho.mean()) < 0.01


def test_poisson_epred_predict_and_loglik(epi):
    fit, data, draws = epi
    eta = fit.posterior_linpred()
    np.testing.assert_allclose(fit.posterior_epred(), np.exp(eta), rtol=1e-13)
    y = data["count"].to_numpy()
    np.testing.assert_allclose(fit.log_lik(), stats.poisson.logpmf(y[None, :], np.exp(eta)), rtol=1e-10)
    yrep = fit.posterior_predict(seed=2)
    assert yrep.shape == eta.shape and np.all(yrep == np.round(yrep)) and yrep.min() >= 0
    np.testing.assert_array_equal(yrep, fit.posterior_predict(seed=2))
    # E yrep = E exp(eta): 1000 draws per row, checked on the sum over rows (SE from the Poisson variance)
    total = yrep.sum(axis=1).mean()
    se = np.sqrt(np.exp(eta).sum(axis=1).mean() / 1000 + np.exp(eta).sum(axis=1).var() / 1000)
    assert abs(total - np.exp(eta).sum(axis=1).mean()) < 4 * se
    # newdata (the response not needed) and log_lik on newdata with its response
    nd = data.iloc[[3, 0, 7]].drop(columns="count")
    np.testing.assert_allclose(fit.posterior_epred(nd), np.exp(eta[:, [3, 0, 7]]), rtol=1e-12)
    np.testing.assert_allclose(fit.log_lik(data.iloc[[3, 0, 7]]), fit.log_lik()[:, [3, 0, 7]], rtol=1e-12)


def test_binomial_trials_from_data_and_newdata(cbpp):
    fit, data, _ = cbpp
    eta = fit.posterior_linpred()
    n = data["size"].to_numpy()
    y = data["incidence"].to_numpy()
    np.testing.assert_allclose(fit.posterior_epred(), n * expit(eta), rtol=1e-12)  # brms: mu * trials
    np.testing.assert_allclose(fit.log_lik(), stats.binom.logpmf(y, n, expit(eta)), rtol=1e-9)
    yrep = fit.posterior_predict(seed=1)
    assert np.all((yrep >= 0) & (yrep <= n[None, :])) and np.all(yrep == np.round(yrep))
    nd = data.iloc[:4].assign(size=[1, 10, 100, 0])
    np.testing.assert_allclose(fit.posterior_epred(nd), nd["size"].to_numpy() * expit(eta[:, :4]), rtol=1e-12)
    assert np.all(fit.posterior_predict(nd, seed=3)[:, 3] == 0)
    ll = fit.log_lik(nd.assign(incidence=[1, 2, 3, 0]))
    np.testing.assert_allclose(ll, stats.binom.logpmf([1, 2, 3, 0], nd["size"].to_numpy(), expit(eta[:, :4])), rtol=1e-9)
    # the linear predictor needs neither the trials nor the response
    np.testing.assert_allclose(fit.posterior_linpred(nd.drop(columns=["size", "incidence"])), eta[:, :4], rtol=1e-12)
    with pytest.raises(ColumnNotFoundError, match="trials column 'size'"):
        fit.posterior_epred(nd.drop(columns="size"))
    with pytest.raises(ColumnNotFoundError, match="trials column 'size'"):
        fit.posterior_predict(nd.drop(columns="size"))
    with pytest.raises(DataError, match="'size'.*whole numbers"):
        fit.posterior_epred(nd.assign(size=[1.5, 2, 3, 4]))
    # a trials column that is a predictor too is read from newdata, not filled in
    formula = "incidence | trials(size) ~ period + size + (1 | herd)"
    prep = _Prepared(formula, data, None, family="binomial")
    both = BrmFit(formula=formula, parameter_names=prep.parameter_names,
                  draws_values=np.random.default_rng(0).normal(size=(1, 10, len(prep.parameter_names))),
                  ranef_names=prep.ranef_names, ranef_values=np.zeros((1, 10, len(prep.ranef_names))), stats={},
                  groups=prep.groups, nobs=prep.nobs, data_name="d", chains=1, iter=20, warmup=10, thin=1,
                  sampler="nuts", family="binomial", design=prep.design)
    np.testing.assert_allclose(both.posterior_linpred(nd.drop(columns="incidence")), both.posterior_linpred()[:, :4]
                               + both.draws_values[0][:, [prep.parameter_names.index("b_size")]]
                               * (nd["size"].to_numpy() - data["size"].to_numpy()[:4]), rtol=1e-12)
    with pytest.raises(ColumnNotFoundError, match="'size'"):
        both.posterior_linpred(nd.drop(columns="size"))


@pytest.mark.parametrize("name", ["epi_pois", "cbpp_binom"])
def test_bayes_r2_non_gaussian(name):
    """brms 2.18's .bayes_R2 for every family: var(epred) / (var(epred) + var(y - epred)) per draw."""
    fit, data, _ = brms_fit(name)
    y = fit.design.y
    mu = np.exp(fit.posterior_linpred()) if name == "epi_pois" else data["size"].to_numpy() * expit(fit.posterior_linpred())
    r2 = np.var(mu, axis=1, ddof=1) / (np.var(mu, axis=1, ddof=1) + np.var(y - mu, axis=1, ddof=1))
    np.testing.assert_allclose(fit.bayes_R2(summary=False), r2, rtol=1e-12)
    table = fit.bayes_R2()
    assert table.loc["R2", "Estimate"] == pytest.approx(r2.mean(), rel=1e-12)
    assert table.loc["R2", "Q97.5"] == pytest.approx(np.quantile(r2, 0.975), rel=1e-12)


def test_loo_of_a_slope_fit_and_a_poisson_fit(sleep, epi):
    for fit, _, _ in (sleep, epi):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = engine.loo(fit)
            direct = engine.loo(fit.log_lik(as_array=True))
        pd.testing.assert_frame_equal(result.estimates, direct.estimates)


def test_bad_newdata(sleep, epi):
    fit, data, _ = sleep
    with pytest.raises(ColumnNotFoundError, match="'Days'"):
        fit.posterior_epred(data[["Subject"]].iloc[:2])
    fit, data, _ = epi
    nd = data.iloc[:3].drop(columns="count")
    with pytest.raises(ColumnNotFoundError, match="'zBase'"):
        fit.posterior_epred(nd.drop(columns="zBase"))
    with pytest.raises(NewFactorLevelError, match=r"'Trt'.*'7'"):
        fit.posterior_epred(nd.assign(Trt=["0", "7", "1"]))
    with pytest.raises(ColumnNotFoundError, match="'count'"):
        fit.log_lik(nd)
    original = nd.copy()
    fit.posterior_predict(nd, seed=1)
    pd.testing.assert_frame_equal(nd, original)


def bernoulli_data(seed=1, groups=20, per=10):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x = rng.normal(size=g.size)
    u = rng.normal(0, 0.7, groups)
    p = expit(0.3 + x + u[g])
    return pd.DataFrame({"g": (g + 1).astype(str), "x": x, "y": (rng.random(g.size) < p).astype(int)})


def test_bernoulli_fit_carries_its_data(tmp_path):
    data = bernoulli_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm("y ~ x + (1 | g)", data, family="bernoulli", chains=2, iter=200, warmup=100, seed=3)
    eta = fit.posterior_linpred()
    np.testing.assert_allclose(fit.posterior_epred(), expit(eta), rtol=1e-12)
    ll = fit.log_lik()
    np.testing.assert_allclose(ll, stats.bernoulli.logpmf(data["y"].to_numpy(), expit(eta)), rtol=1e-9, atol=1e-12)
    yrep = fit.posterior_predict(seed=1)
    assert set(np.unique(yrep)) <= {0.0, 1.0}
    nd = pd.DataFrame({"x": [0.0, 1.0], "g": ["1", "99"]})
    assert fit.fitted(nd, allow_new_levels=True, seed=1).shape == (2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(fit.loo().elpd_loo)
    assert 0 < fit.bayes_R2().loc["R2", "Estimate"] < 1
    # saved and loaded, the design (and a binomial's trials) come back
    again = load_fit(fit.save(tmp_path / "b")[0])
    np.testing.assert_array_equal(again.log_lik(), ll)


def test_binomial_design_saved_with_trials(cbpp, tmp_path):
    fit, data, _ = cbpp
    fit.save(tmp_path / "c")
    again = load_fit(tmp_path / "c")
    np.testing.assert_array_equal(again.design.trials, data["size"].to_numpy(float))
    np.testing.assert_array_equal(again.log_lik(), fit.log_lik())
    nd = data.iloc[:3]
    np.testing.assert_array_equal(again.posterior_epred(nd), fit.posterior_epred(nd))


def test_poisson_posterior_predict_pit_is_uniform():
    """Randomised PIT (Czado, Gneiting & Held 2009, Biometrics 65: u = F(y - 1) + V (F(y) - F(y - 1)),
    F the predictive CDF from the draws, V ~ U(0, 1)) of held-out counts under posterior_predict, for
    data simulated from the model (40 groups; 10 rows per group fitted, 5 held out): uniform under
    calibration (KS test at the 1 % level, 200 values); a predictive with 1.6 times the mean fails it."""
    rng = np.random.default_rng(20261203)
    g = np.repeat(np.arange(40), 15)
    x = rng.normal(size=g.size)
    u = rng.normal(0, 0.5, 40)
    data = pd.DataFrame({"y": rng.poisson(np.exp(0.5 + 0.4 * x + u[g])), "x": x, "g": (g + 1).astype(str)})
    held = data.groupby("g").tail(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm("y ~ x + (1 | g)", data.drop(held.index), family="poisson", sampler="nuts", chains=2,
                         iter=600, warmup=300, seed=3)
    y = held["y"].to_numpy()
    v = np.random.default_rng(2).random(y.size)

    def pit(yrep):
        below, upto = (yrep < y).mean(axis=0), (yrep <= y).mean(axis=0)
        return below + v * (upto - below)

    assert stats.kstest(pit(fit.posterior_predict(held, seed=1)), "uniform").pvalue > 0.01
    too_high = np.random.default_rng(5).poisson(1.6 * fit.posterior_epred(held))
    assert stats.kstest(pit(too_high), "uniform").pvalue < 1e-3


def test_crossed_intercepts_by_label(cbpp):
    """Two crossed grouping factors: each row adds the draw of its level of each (brms' r_ names)."""
    _, data, _ = cbpp
    data = data.assign(block=["a", "b", "c", "d"] * 14)
    formula = "incidence | trials(size) ~ period + (1 | herd) + (1 | block)"
    prep = _Prepared(formula, data, None, family="binomial")
    rng = np.random.default_rng(0)
    values = lambda k: rng.normal(size=(2, 50, k))
    fit = BrmFit(formula=formula, parameter_names=prep.parameter_names, draws_values=values(len(prep.parameter_names)),
                 ranef_names=prep.ranef_names, ranef_values=values(len(prep.ranef_names)), stats={}, groups=prep.groups,
                 nobs=prep.nobs, data_name="d", chains=2, iter=100, warmup=50, thin=1, sampler="nuts",
                 family="binomial", design=prep.design)
    d = fit.draws_values.reshape(100, -1)
    r = fit.ranef_values.reshape(100, -1)
    col = lambda name: d[:, fit.parameter_names.index(name)]
    nd = pd.DataFrame({"period": ["2", "1"], "herd": ["7", "3"], "block": ["c", "a"], "size": [5, 6]})
    want = np.column_stack([
        col("b_Intercept") + col("b_period2") + r[:, fit.ranef_names.index("r_herd[7,Intercept]")]
        + r[:, fit.ranef_names.index("r_block[c,Intercept]")],
        col("b_Intercept") + r[:, fit.ranef_names.index("r_herd[3,Intercept]")]
        + r[:, fit.ranef_names.index("r_block[a,Intercept]")]])
    np.testing.assert_allclose(fit.posterior_linpred(nd), want, rtol=1e-12)
    np.testing.assert_allclose(fit.posterior_linpred(nd, re_formula="~ (1 | block)"),
                               want - r[:, [fit.ranef_names.index("r_herd[7,Intercept]"),
                                            fit.ranef_names.index("r_herd[3,Intercept]")]], rtol=1e-12)
    np.testing.assert_allclose(fit.posterior_epred(nd), [5, 6] * expit(want), rtol=1e-12)


def test_bernoulli_factor_response_on_newdata():
    """log_lik on newdata reads a factor response on the fitted levels (brms: the second is the
    success), even when newdata holds one level only; an unseen value is a named error."""
    data = bernoulli_data(seed=4, groups=10).assign(y=lambda d: np.where(d["y"] == 1, "yes", "no"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm("y ~ x + (1 | g)", data, family="bernoulli", chains=2, iter=200, warmup=100, seed=1)
    np.testing.assert_array_equal(fit.design.y, (data["y"] == "yes").to_numpy(float))
    rows = np.flatnonzero(data["y"] == "yes")[:3]
    np.testing.assert_allclose(fit.log_lik(data.iloc[rows]), fit.log_lik()[:, rows], rtol=1e-12)
    with pytest.raises(DataError, match=r"'y'.*'maybe'"):
        fit.log_lik(data.iloc[rows].assign(y="maybe"))


def test_brm_multiple_bernoulli_loo_per_imputation():
    """A non-Gaussian brm_multiple fit carries each imputed data set's design: data set k's LOO is
    PSIS-LOO of its bernoulli log-likelihood under its own chains (computed here with scipy)."""
    base = bernoulli_data(seed=6, groups=8, per=10)
    flip = np.random.default_rng(1).random(len(base)) < 0.1
    sets = [base, base.assign(y=np.where(flip, 1 - base["y"], base["y"]))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm_multiple("y ~ x + (1 | g)", sets, family="bernoulli", chains=2, iter=200, warmup=100, seed=2)
        result = engine.loo(fit)
    assert result.m == 2
    names = fit.parameter_names
    for k, d in enumerate(sets):
        sel = fit.chain_imputation == k
        draws = fit.draws_values[sel].reshape(-1, len(names))
        ranef = fit.ranef_values[sel].reshape(-1, fit.ranef_values.shape[2])
        codes = [fit.ranef_names.index(f"r_g[{v},Intercept]") for v in d["g"]]
        eta = draws[:, [names.index("b_Intercept")]] + draws[:, [names.index("b_x")]] * d["x"].to_numpy() + ranef[:, codes]
        ll = stats.bernoulli.logpmf(d["y"].to_numpy(), expit(eta))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            direct = engine.loo(ll.reshape(2, 100, -1))
        np.testing.assert_allclose(result.per_imputation[k].pointwise["elpd_loo"], direct.pointwise["elpd_loo"], rtol=1e-9)
    # predictions use the first data set, as brms
    np.testing.assert_array_equal(fit.design.y, sets[0]["y"].to_numpy(float))


def test_to_arviz_of_a_slope_fit_and_a_poisson_fit(sleep, epi):
    az = pytest.importorskip("arviz")
    fit, data, draws = sleep
    idata = fit.to_arviz()
    r = idata.posterior["r_Subject"]
    assert r.shape == (4, 250, 18, 2) and list(r["Subject__coef"].values) == ["Intercept", "Days"]
    np.testing.assert_array_equal(r.sel(Subject__level="309", Subject__coef="Days").values.ravel(),
                                  draws["r_Subject[309,Days]"].to_numpy())
    fit, data, _ = epi
    idata = fit.to_arviz()
    np.testing.assert_array_equal(idata.observed_data["count"].values, data["count"].to_numpy(float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = engine.loo(fit, r_eff=1.0)
        theirs = az.loo(idata, pointwise=True, reff=1.0)
    np.testing.assert_allclose(theirs.loo_i.values, ours.pointwise["elpd_loo"], rtol=1e-10)
