"""engine.multilevel.families: response handling, brms 2.18's default priors, log-likelihood, printing as brms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import engine
from engine.multilevel import families as F
from engine.errors import ColumnNotFoundError, DataError, DataWarning, EngineInputError, FormulaError, PriorError
from engine.priors import prior, prior_summary_table
from engine.rcompat.print_brms import format_prior_summary
from engine.multilevel.results import BrmFit, GroupInfo

CBPP = "incidence | trials(size) ~ period + (1 | herd)"
EPI = "count ~ zAge + zBase * Trt + (1 | patient)"


@pytest.fixture(scope="module")
def cbpp(fixtures_dir):
    return pd.read_csv(fixtures_dir / "families" / "lme4_cbpp.csv", dtype={"herd": str, "period": str})


@pytest.fixture(scope="module")
def epilepsy(fixtures_dir):
    return pd.read_csv(fixtures_dir / "families" / "brms_epilepsy.csv",
                       dtype={"Trt": str, "patient": str, "visit": str, "obs": str})


@pytest.fixture(scope="module")
def grit():
    from engine.datasets import load_grit

    return load_grit()


BINARY = "choicer1 ~ grit + male + raven + mathscore1 + (1 | schoolid/classid)"


def _model(formula, data, family, prior_=None):
    fam = F.get_family(family)
    frame, trials = F.glm_model_frame(formula, data, fam)
    return F.build_glm_model(frame, trials, prior_, fam)


def _binary_data(n=40, seed=1):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"y": rng.integers(0, 2, n), "x": rng.normal(size=n), "g": np.repeat(np.arange(8), n // 8)})


# ------------------------------------------------------------------------------ families, links


def test_families_and_links():
    assert F.get_family("bernoulli").links == (("mu", "logit"),)
    assert F.get_family("Poisson").link == "log"
    assert F.get_family("gaussian").links == (("mu", "identity"), ("sigma", "identity"))
    assert F.get_family("binomial", link="logit").name == "binomial"
    with pytest.raises(EngineInputError, match="unknown family 'negbinomial'"):
        F.get_family("negbinomial")
    with pytest.raises(EngineInputError, match="link 'probit' is not available for family 'bernoulli'"):
        F.get_family("bernoulli", link="probit")
    with pytest.raises(EngineInputError, match="unknown family"):
        engine.brm("y ~ x + (1 | g)", _binary_data(), family="logistic")


def test_split_response():
    spec = F.split_response("incidence | trials(size) ~ period + (1 | herd)")
    assert (spec.response, spec.trials, spec.rhs.strip()) == ("incidence", "size", "period + (1 | herd)")
    assert F.split_response("y ~ x").trials is None
    with pytest.raises(FormulaError, match="addition term 'weights\\(w\\)'"):
        F.split_response("y | weights(w) ~ x")


# ------------------------------------------------------------------------------ responses


@pytest.mark.parametrize("column", [
    pd.Series([0, 1, 1, 0] * 10),
    pd.Series([False, True, True, False] * 10),
    pd.Series(pd.Categorical(["no", "yes", "yes", "no"] * 10, categories=["no", "yes"])),
    pd.Series(["a", "b", "b", "a"] * 10),
])
def test_bernoulli_response_forms(column):
    data = _binary_data()
    data["y"] = column.to_numpy() if not isinstance(column.dtype, pd.CategoricalDtype) else column
    model = _model("y ~ x + (1 | g)", data, "bernoulli")
    assert np.array_equal(model.base.y, np.array([0, 1, 1, 0] * 10, dtype=float))
    assert model.base.response_name == "y"


def test_bernoulli_factor_second_level_is_success():
    data = _binary_data()
    data["y"] = pd.Categorical(["yes", "no", "no", "yes"] * 10, categories=["yes", "no"])
    assert np.array_equal(_model("y ~ x + (1 | g)", data, "bernoulli").base.y, np.array([0, 1, 1, 0] * 10, float))


def test_data_not_modified_and_missing_rows_dropped():
    data = _binary_data()
    data["y"] = data["y"].astype(float)
    data.loc[3, "y"] = np.nan
    before = data.copy()
    fam = F.get_family("bernoulli")
    frame, trials = F.glm_model_frame("y ~ x + (1 | g)", data, fam)
    pd.testing.assert_frame_equal(data, before)
    assert frame.n_dropped == 1 and len(frame.y) == 39 and trials.shape == (39,)
    assert list(data.columns) == list(before.columns)


def test_bad_responses(cbpp, epilepsy):
    data = _binary_data()
    data["y"] = data["y"] * 2
    with pytest.raises(DataError, match="bernoulli response 'y' must be 0 or 1"):
        _model("y ~ x + (1 | g)", data, "bernoulli")
    data["y"] = pd.Categorical(["a", "b", "c", "a"] * 10)
    with pytest.raises(DataError, match="bernoulli response 'y' is a factor with 3 levels"):
        _model("y ~ x + (1 | g)", data, "bernoulli")
    data["y"] = ["a", "b", "c", "a"] * 10
    with pytest.raises(DataError, match="bernoulli response 'y' has 3 distinct values"):
        _model("y ~ x + (1 | g)", data, "bernoulli")
    bad = epilepsy.copy()
    bad.loc[0, "count"] = -1
    with pytest.raises(DataError, match="poisson response 'count' must hold non-negative whole numbers.*-1"):
        _model(EPI, bad, "poisson")
    bad = epilepsy.assign(count=epilepsy["count"] + 0.5)
    with pytest.raises(DataError, match="poisson response 'count'.*found 5.5"):
        engine.brm(EPI, bad, family="poisson", sampler="nuts")
    bad = cbpp.copy()
    bad.loc[4, "size"] = 1
    with pytest.raises(DataError, match="binomial response 'incidence' exceeds its trials in 1 row.*row 5"):
        _model(CBPP, bad, "binomial")
    # brms 2.18 (make_standata, tests/fixtures/families): warns and uses max(y) as every row's trials
    with pytest.warns(DataWarning, match="maximum response value"):
        implied = _model("incidence ~ period + (1 | herd)", cbpp, "binomial")
    assert np.all(implied.trials == cbpp["incidence"].max())
    with pytest.raises(FormulaError, match="applies to the binomial family only"):
        _model("count | trials(Base) ~ zAge + (1 | patient)", epilepsy, "poisson")
    with pytest.raises(ColumnNotFoundError, match="trials column 'n_trials'"):
        _model("incidence | trials(n_trials) ~ period + (1 | herd)", cbpp, "binomial")
    with pytest.raises(DataError, match="trials column 'size' must hold non-negative whole numbers"):
        _model(CBPP, cbpp.assign(size=cbpp["size"] + 0.5), "binomial")


def test_constant_trials(cbpp):
    model = _model("incidence | trials(40) ~ period + (1 | herd)", cbpp, "binomial")
    assert np.all(model.trials == 40.0)


def test_sampler_errors(epilepsy):
    with pytest.raises(EngineInputError, match="sampler='gibbs' is not available for the poisson family"):
        engine.brm(EPI, epilepsy, family="poisson", sampler="gibbs")
    with pytest.raises(EngineInputError, match="marginalize=True is not available for the poisson family"):
        engine.brm(EPI, epilepsy, family="poisson", sampler="nuts", marginalize=True)


# ------------------------------------------------------------------------------ priors


@pytest.mark.parametrize("name,formula,family,data", [
    ("cbpp_binom", CBPP, "binomial", "cbpp"),
    ("epi_pois", EPI, "poisson", "epilepsy"),
    ("binary", BINARY, "bernoulli", "grit"),
])
def test_default_priors_print_as_brms(name, formula, family, data, request, fixtures_dir):
    model = _model(formula, request.getfixturevalue(data), family)
    expected = (fixtures_dir / "families" / f"{name}_priors.txt").read_text().rstrip("\n")
    assert format_prior_summary(prior_summary_table(model)) == expected


def test_default_prior_location_and_scale():
    # def_scale_prior.brmsterms: log link -> log(y), zeros as 0.1; scale max(2.5, round(mad, 1))
    y = np.array([0, 0, 0, 1, 200, 300, 5000, 3, 9000.0])
    rows = F.default_priors(F.get_family("poisson"), y, ["x"], ["g"], True)
    y_link = np.log(np.where(y == 0, 0.1, y))
    scale = max(2.5, round(1.4826 * np.median(np.abs(y_link - np.median(y_link))), 1))
    location = round(float(np.median(y_link)), 1)
    assert rows[1].mu == location and rows[1].scale == scale and scale > 2.5
    assert rows[2].scale == scale and rows[2].mu == 0.0
    logit = F.default_priors(F.get_family("bernoulli"), np.array([0, 1, 1.0]), ["x"], ["g"], True)
    assert logit[1].spec == "student_t(3, 0, 2.5)" and logit[2].spec == "student_t(3, 0, 2.5)"


def test_user_priors_and_sigma_prior(cbpp):
    model = _model(CBPP, cbpp, "binomial", [prior("normal(0, 1)", "b", coef="period2"), prior("normal(0, 5)", "sd")])
    table = prior_summary_table(model)
    assert set(table["class"]) == {"b", "Intercept", "sd"}
    assert table.loc[(table["class"] == "b") & (table["coef"] == "period2"), "prior"].item() == "normal(0, 1)"
    assert table.loc[table["class"] == "sd", "prior"].tolist() == ["normal(0, 5)"] * 3
    assert table.loc[table["class"] == "Intercept", "prior"].item() == "student_t(3, 0, 2.5)"
    with pytest.raises(PriorError, match="class 'sigma': the binomial family has no sigma"):
        _model(CBPP, cbpp, "binomial", prior("student_t(3, 0, 2.5)", "sigma"))


# ------------------------------------------------------------------------------ log-likelihood


def test_log_likelihood_against_scipy():
    rng = np.random.default_rng(4)
    eta = rng.normal(size=(3, 20))
    n = rng.integers(0, 12, 20).astype(float)
    y = np.minimum(rng.integers(0, 12, 20), n).astype(float)
    p = 1 / (1 + np.exp(-eta))
    np.testing.assert_allclose(F.log_likelihood(F.get_family("binomial"), y, n, eta), stats.binom.logpmf(y, n, p), rtol=1e-12, atol=1e-12)
    yb = (y > 3).astype(float)
    np.testing.assert_allclose(F.log_likelihood(F.get_family("bernoulli"), yb, np.ones(20), eta), stats.bernoulli.logpmf(yb, p), rtol=1e-12)
    np.testing.assert_allclose(F.log_likelihood(F.get_family("poisson"), y, None, eta), stats.poisson.logpmf(y, np.exp(eta)), rtol=1e-12)
    sigma = np.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(F.log_likelihood(F.get_family("gaussian"), y, None, eta, sigma),
                               stats.norm.logpdf(y, eta, sigma[:, None]), rtol=1e-12)
    np.testing.assert_allclose(F.link(F.get_family("bernoulli"), F.inverse_link(F.get_family("bernoulli"), eta)), eta, rtol=1e-10)


def test_linear_predictor_matches_design(cbpp):
    model = _model(CBPP, cbpp, "binomial")
    rng = np.random.default_rng(2)
    draws = rng.normal(size=(2, model.n_params))
    ranef = rng.normal(size=(2, model.base.n_levels_total))
    eta = F.linear_predictor(model, draws, ranef)
    X = np.column_stack([np.ones(56), pd.get_dummies(cbpp["period"], drop_first=True).to_numpy(float)])
    herd = [model.base.group_levels[0].index(h) for h in cbpp["herd"]]
    np.testing.assert_allclose(eta, draws[:, :4] @ X.T + ranef[:, herd], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ printing


PRINT_CASES = {  # name: formula, family, groups (name, levels), nobs, R's name of the data
    "cbpp_binom": (CBPP, "binomial", [("herd", 15)], 56, "p[[2]]"),
    "epi_pois": (EPI, "poisson", [("patient", 59)], 236, "p[[2]]"),
    "binary": (BINARY, "bernoulli", [("schoolid", 16), ("schoolid:classid", 41)], 1256, "d"),
}


@pytest.mark.parametrize("name", list(PRINT_CASES))
def test_print_as_brms(name, fixtures_dir):
    """brms' own draws in a BrmFit print as brms printed them (character for character)."""
    frame = pd.read_csv(fixtures_dir / "families" / f"{name}_draws.csv.gz").sort_values([".chain", ".iteration"])
    names = [c for c in frame.columns if not c.startswith(".")]
    draws = frame[names].to_numpy().reshape(4, -1, len(names))
    formula, family, groups, nobs, data_name = PRINT_CASES[name]
    fam = F.get_family(family)
    fit = BrmFit(formula=formula, parameter_names=names, draws_values=draws, ranef_names=[],
                 ranef_values=np.zeros((4, draws.shape[1], 0)), stats={},
                 groups=[GroupInfo(g, tuple(str(i) for i in range(k))) for g, k in groups],
                 nobs=nobs, data_name=data_name, chains=4, iter=2000, warmup=1000,
                 thin=1, sampler="nuts", family=fam.name, links=fam.links)
    expected = (fixtures_dir / "families" / f"{name}_print.txt").read_text()
    assert str(fit).rstrip("\n") == expected.rstrip("\n")


def test_average_effect_of_a_binary_column():
    rng = np.random.default_rng(6)
    n = 60
    data = pd.DataFrame({"y": rng.integers(0, 2, n), "t": np.repeat(["a", "b"], n // 2), "x": rng.normal(size=n),
                         "g": np.tile(np.arange(6), n // 6).astype(str)})
    model = _model("y ~ t + x + (1 | g)", data, "bernoulli")
    draws = rng.normal(size=(3, model.n_params))
    ranef = rng.normal(size=(3, 6))
    effect = F.average_effect(model, draws, ranef, "tb")
    levels = list(model.base.group_levels[0])
    g = np.array([levels.index(v) for v in data["g"]])
    for s in range(3):
        base = draws[s, 0] + draws[s, 2] * data["x"].to_numpy() + ranef[s, g]
        expected = np.mean(1 / (1 + np.exp(-(base + draws[s, 1]))) - 1 / (1 + np.exp(-base)))
        assert effect[s] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(Exception, match="not a 0/1 indicator"):
        F.average_effect(model, draws, ranef, "x")


def test_registry_picks_the_family_sampler():
    """One place dispatches on the family: the sampler registry, one implementation per (name, family)."""
    from engine.gibbs import GIBBS
    from engine.multilevel.gibbs_pg import GIBBS_PG
    from engine.multilevel.nuts_glm import NUTS_GLM
    from engine.multilevel.nuts_target import NUTS
    from engine.multilevel.sampler import get_sampler

    assert get_sampler("gibbs") is GIBBS and get_sampler("nuts", "gaussian") is NUTS
    assert get_sampler("gibbs", "bernoulli") is GIBBS_PG and get_sampler("GIBBS", "binomial") is GIBBS_PG
    assert all(get_sampler("nuts", f) is NUTS_GLM for f in ("bernoulli", "binomial", "poisson"))
    with pytest.raises(EngineInputError, match="sampler='gibbs' is not available for the poisson family.*sampler='nuts'"):
        get_sampler("gibbs", "poisson")
    with pytest.raises(EngineInputError, match="unknown sampler 'hmc'"):
        get_sampler("hmc", "bernoulli")
