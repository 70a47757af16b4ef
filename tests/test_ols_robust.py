"""engine.ols(vcov=, cluster=) against R 4.2.2's sandwich 3.0-2 and clubSandwich 0.5.8 (fixtures in
tests/fixtures/cluster/, made by the R scripts there) and statsmodels (simulated designs)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine.datasets import load_grit
from engine.errors import ColumnNotFoundError, DataError, DataWarning, ModelSpecError
from engine.robust import cluster_scores

RTOL = 1e-10
MODEL1 = "mathscore2 ~ male + raven + csize + belief_survey1 + mathscore1 + grit"
CLUSTER = {"school": "schoolid", "class": "classid", "twoway": ["schoolid", "classid"]}
CONTROLS = ("raven", "mathscore1", "verbalscore1", "belief_survey1", "grit_survey1")


@pytest.fixture(scope="module")
def grit():
    return load_grit()


@pytest.fixture(scope="module")
def paper_data(grit):
    """The paper's Stata do-file: controls mean-imputed over all 1,499 rows, named <x>_c."""
    data = grit.copy()
    for name in CONTROLS:
        data[name + "_c"] = data[name].fillna(data[name].mean())
    return data


@pytest.fixture(scope="module")
def sandwich_ref(fixtures_dir):
    return json.loads((fixtures_dir / "cluster" / "cluster_reference.json").read_text())["model1"]


@pytest.fixture(scope="module")
def extra_ref(fixtures_dir):
    return json.loads((fixtures_dir / "cluster" / "cluster_extra_reference.json").read_text())


def _kw(key: str) -> dict:
    kind, _, dim = key.partition("_")
    return {"vcov": kind, "cluster": CLUSTER[dim]} if dim else {"vcov": kind}


def _assert_vcov(fit, reference):
    V = fit.vcov.to_numpy()
    R = np.asarray(reference, dtype=float)
    assert V.shape == R.shape
    assert np.max(np.abs(V - R)) <= RTOL * np.max(np.abs(R))
    np.testing.assert_allclose(fit.bse.to_numpy(), np.sqrt(np.diag(R)), rtol=RTOL, atol=0)


@pytest.mark.parametrize("key", ["HC0", "HC1", "HC2", "HC3", "CR0_school", "CR1_school",
                                 "CR1_class", "CR1_twoway"])
def test_model1_matches_sandwich(grit, sandwich_ref, key):
    fit = engine.ols(MODEL1, grit, **_kw(key))
    assert list(fit.params.index) == sandwich_ref["names"]
    _assert_vcov(fit, sandwich_ref["vcov"][key])


def test_cluster_alone_means_cr1(grit, sandwich_ref):
    fit = engine.ols(MODEL1, grit, cluster="schoolid")
    assert fit.cov_type == "CR1"
    _assert_vcov(fit, sandwich_ref["vcov"]["CR1_school"])


@pytest.mark.parametrize("model", ["factors_model", "paper_spec"])
@pytest.mark.parametrize("key", ["HC0", "HC1", "HC2", "HC3", "CR0_school", "CR1_school",
                                 "CR2_school", "CR0_class", "CR1_class", "CR2_class",
                                 "CR0_twoway", "CR1_twoway", "CR2_twoway"])
def test_more_models_match_sandwich_and_clubsandwich(grit, paper_data, extra_ref, model, key):
    """Factors, an interaction and I() (rows dropped); the paper's specification. CR2 one-way is
    clubSandwich's vcovCR; two-way CR2 is sandwich's vcovCL(type = "HC2")."""
    ref = extra_ref[model]
    data = paper_data if model == "paper_spec" else grit
    fit = engine.ols(ref["formula"], data, **_kw(key))
    assert list(fit.params.index) == ref["names"]
    assert fit.nobs == ref["nobs"]
    np.testing.assert_allclose(fit.params.to_numpy(), ref["coef"], rtol=RTOL)
    _assert_vcov(fit, ref["vcov"][key])


def test_cr2_with_cluster_fixed_effects_matches_clubsandwich(grit, extra_ref):
    """School dummies make I - H_gg singular within schools: clubSandwich's power-0 convention."""
    ref = extra_ref["fixed_effect_model"]
    for key, cluster in (("CR2_school", "schoolid"), ("CR2_class", "classid")):
        fit = engine.ols(ref["formula"], grit, vcov="CR2", cluster=cluster)
        assert list(fit.params.index) == ref["names"]
        _assert_vcov(fit, ref[key])


def test_paper_specification(paper_data, extra_ref):
    """grit 0.3107 on 1,347 students, SE clustered by school; t on G - 1 = 15 df as Stata."""
    ref = extra_ref["paper_spec"]
    fit = engine.ols(ref["formula"], paper_data, cluster="schoolid")
    assert fit.nobs == 1347 and fit.df_inference == ref["n_clusters_school"] - 1 == 15
    assert round(float(fit.params["gritintervention"]), 4) == 0.3107
    np.testing.assert_allclose(fit.bse.to_numpy(), ref["CR1_school_se"], rtol=RTOL)
    np.testing.assert_allclose(fit.pvalues.to_numpy(), ref["CR1_school_p"], rtol=RTOL)
    np.testing.assert_allclose(fit.conf_int().to_numpy(), ref["CR1_school_ci"], rtol=RTOL)
    text = str(fit.summary())
    assert "cluster-robust CR1" in text and "schoolid (16 clusters)" in text
    assert "on 15 degrees of freedom" in text
    assert "F-statistic:" in text and "on 8 and 15 DF" in text


def _simulated(seed: int, n: int = 300, groups: int = 12):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x1 = rng.normal(size=n) + 0.3 * rng.normal(size=groups)[g]
    x2 = rng.normal(size=n)
    f = rng.choice(["a", "b", "c"], n)
    y = 1 + 0.5 * x1 - x2 + (f == "b") + rng.normal(size=groups)[g] + rng.normal(size=n) * (1 + np.abs(x1))
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "f": f, "g": g})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_agrees_with_statsmodels(seed):
    """HC0-HC3 and one-way CR1 (statsmodels' cluster with its default corrections, t on G - 1),
    with the Wald F of the slopes."""
    data = _simulated(seed)
    formula = "y ~ x1 + x2 + f + x1:f"
    for kind in ("HC0", "HC1", "HC2", "HC3", "CR1"):
        fit = engine.ols(formula, data, vcov=kind, cluster="g" if kind == "CR1" else None)
        mf = fit.model_frame
        if kind == "CR1":
            ref = sm.OLS(mf.y, mf.X).fit(cov_type="cluster", cov_kwds={"groups": data["g"].to_numpy()},
                                         use_t=True)
        else:
            ref = sm.OLS(mf.y, mf.X).fit(cov_type=kind, use_t=True)
        np.testing.assert_allclose(fit.vcov.to_numpy(), ref.cov_params(), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(fit.pvalues.to_numpy(), ref.pvalues, rtol=1e-9)
        np.testing.assert_allclose(fit.conf_int().to_numpy(), ref.conf_int(), rtol=1e-10)
        np.testing.assert_allclose(fit.fvalue, ref.fvalue, rtol=1e-10)
        np.testing.assert_allclose(fit.f_pvalue, ref.f_pvalue, rtol=1e-8)


def test_cluster_column_outside_formula_and_dropped_rows():
    """Rows the model drops for missing values leave the clusters too; the cluster column may
    have missing values in those rows only."""
    data = _simulated(4)
    data.loc[[3, 10, 50], "x2"] = np.nan
    data["g2"] = data["g"].astype(float)
    data.loc[[3, 50], "g2"] = np.nan  # only where the model drops the row anyway
    fit = engine.ols("y ~ x1 + x2", data, vcov="CR0", cluster="g2")
    kept = data.dropna(subset=["x2"])
    direct = engine.ols("y ~ x1 + x2", kept, vcov="CR0", cluster="g")
    assert fit.nobs == len(data) - 3
    np.testing.assert_allclose(fit.vcov.to_numpy(), direct.vcov.to_numpy(), rtol=1e-12)
    assert data["g2"].isna().sum() == 2  # the user's data is not modified


def test_string_and_categorical_clusters_agree():
    data = _simulated(5)
    data["gs"] = "school-" + data["g"].astype(str)
    data["gc"] = pd.Categorical(data["g"])
    base = engine.ols("y ~ x1", data, cluster="g").vcov.to_numpy()
    for col in ("gs", "gc"):
        np.testing.assert_allclose(engine.ols("y ~ x1", data, cluster=col).vcov.to_numpy(), base,
                                   rtol=1e-13)


def test_two_way_with_identical_dimensions_reduces_to_one_way():
    """Inclusion-exclusion: clustering by (g, g) gives M_g + M_g - M_g = M_g (CR0)."""
    data = _simulated(6)
    data["h"] = data["g"]
    one = engine.ols("y ~ x1 + x2", data, vcov="CR0", cluster="g").vcov.to_numpy()
    two = engine.ols("y ~ x1 + x2", data, vcov="CR0", cluster=["g", "h"]).vcov.to_numpy()
    np.testing.assert_allclose(two, one, rtol=1e-12)


def test_scores_add_over_row_partitions():
    """The meat is a sum over rows: score matrices of disjoint row blocks add up."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(50, 3))
    w = rng.normal(size=50)
    codes = rng.integers(0, 6, 50)
    whole = cluster_scores(X, w, codes, 6)
    parts = cluster_scores(X[:20], w[:20], codes[:20], 6) + cluster_scores(X[20:], w[20:], codes[20:], 6)
    np.testing.assert_allclose(parts, whole, rtol=1e-13)
    slow = np.array([(X[codes == g] * w[codes == g, None]).sum(axis=0) for g in range(6)])
    np.testing.assert_allclose(whole, slow, rtol=1e-13)


def test_aliased_columns_are_nan_and_the_rest_as_the_reduced_model():
    data = _simulated(8)
    data["x3"] = 2 * data["x1"]
    fit = engine.ols("y ~ x1 + x2 + x3", data, vcov="HC3")
    assert np.isnan(fit.bse["x3"]) and np.isnan(fit.vcov.loc["x3"]).all()
    reduced = engine.ols("y ~ x1 + x2", data, vcov="HC3")
    np.testing.assert_allclose(fit.vcov.loc[["(Intercept)", "x1", "x2"], ["(Intercept)", "x1", "x2"]],
                               reduced.vcov, rtol=1e-10)


def test_default_is_unchanged(grit):
    plain = engine.ols(MODEL1, grit)
    assert plain.cov_type == "nonrobust" and plain.df_inference == plain.df_resid
    assert "Standard errors:" not in str(plain.summary())


def test_hc_summary_names_the_covariance(grit):
    text = str(engine.ols(MODEL1, grit, vcov="HC3").summary())
    assert "Standard errors: heteroskedasticity-consistent HC3" in text
    assert "on 1173 degrees of freedom" in text


def test_leverage_one_gives_nan_with_warning_as_sandwich():
    """A dummy for one row has hat value 1: sandwich warns naming the row and returns NaN."""
    data = _simulated(9, n=40)
    data["one"] = 0.0
    data.loc[4, "one"] = 1.0
    for kind in ("HC2", "HC3"):
        with pytest.warns(DataWarning, match=r"hat values are close to 1 as for observations 5 "):
            fit = engine.ols("y ~ x1 + one", data, vcov=kind)
        assert np.isnan(fit.vcov.to_numpy()).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = engine.ols("y ~ x1 + one", data, vcov="HC0")  # HC0 needs no hat values
    assert np.isfinite(fit.bse).all()


def test_bad_arguments():
    data = _simulated(10, n=40)
    with pytest.raises(ModelSpecError, match="HC4"):
        engine.ols("y ~ x1", data, vcov="HC4")
    with pytest.raises(ModelSpecError, match="needs cluster="):
        engine.ols("y ~ x1", data, vcov="CR2")
    with pytest.raises(ModelSpecError, match="not clustered"):
        engine.ols("y ~ x1", data, vcov="HC1", cluster="g")
    with pytest.raises(ColumnNotFoundError, match="'school'"):
        engine.ols("y ~ x1", data, cluster="school")
    with pytest.raises(ModelSpecError, match="column name"):
        engine.ols("y ~ x1", data, cluster=3)


def test_cluster_with_missing_values_among_kept_rows():
    data = _simulated(11, n=40)
    data["gm"] = data["g"].astype(float)
    data.loc[7, "gm"] = np.nan
    with pytest.raises(DataError, match=r"cluster column 'gm' has missing values in 1 of the 40 rows"):
        engine.ols("y ~ x1", data, cluster="gm")


def test_one_cluster_is_an_error():
    data = _simulated(12, n=40)
    data["one"] = "A"
    with pytest.raises(ModelSpecError, match=r"cluster column 'one' has only one cluster"):
        engine.ols("y ~ x1", data, cluster=["g", "one"])


def test_replicate_prints_the_paper_specification(grit, extra_ref, capsys):
    """replicate's paper-specification block: the printed model, its numbers and closing-table row."""
    from engine.replicate import PAPER_FORMULA, TREATMENT, Outcome, effects_table, run_paper_spec

    outcome = Outcome()
    run_paper_spec(grit, outcome)
    ref = extra_ref["paper_spec"]
    assert PAPER_FORMULA == ref["formula"]
    numbers = outcome.numbers["paper_spec"]
    assert numbers["nobs"] == 1347 and numbers["vcov"] == "CR1" and numbers["df_inference"] == 15
    se = dict(zip(ref["names"], ref["CR1_school_se"]))
    assert numbers["std_error"][TREATMENT] == pytest.approx(se[TREATMENT], rel=RTOL)
    (row,) = outcome.effects
    assert round(row["estimate"], 4) == 0.3107 and row["std_error"] == pytest.approx(se[TREATMENT], rel=RTOL)
    assert "0.3107" in effects_table(outcome.effects)
    assert "clustered by schoolid (16 clusters)" in capsys.readouterr().out
    assert "raven_c" not in grit.columns  # the user's data is not modified


def test_no_wald_f_with_more_slopes_than_cluster_df():
    """Stata reports no F when the slopes outnumber G - 1: the clustered meat has too low a rank."""
    data = _simulated(13, n=60, groups=3)
    fit = engine.ols("y ~ x1 + x2 + f", data, cluster="g")
    assert fit.df_inference == 2 and np.isnan(fit.fvalue) and np.isnan(fit.f_pvalue)
    assert "F-statistic:   NaN on 4 and 2 DF" in str(fit.summary())
    assert np.isfinite(engine.ols("y ~ x1", data, cluster="g").fvalue)


def _slow_sandwich(X, y, dims, kind):
    """The textbook formulas with explicit matrices: (X'X)^-1 by inversion, H = X (X'X)^-1 X',
    (I - H_gg)^(-1/2) by an eigen-decomposition (power 0 below 1e-12, as clubSandwich), and the
    inclusion-exclusion sum of Cameron, Gelbach & Miller (2011) over every subset of dimensions."""
    from itertools import combinations

    n, k = X.shape
    XtXi = np.linalg.inv(X.T @ X)
    e = y - X @ (XtXi @ (X.T @ y))
    H = X @ XtXi @ X.T
    V = np.zeros((k, k))
    for size in range(1, len(dims) + 1):
        for subset in combinations(range(len(dims)), size):
            labels = np.array(["_".join(str(dims[d][i]) for d in subset) for i in range(n)])
            uniq = np.unique(labels)
            M = np.zeros((k, k))
            for lab in uniq:
                idx = np.flatnonzero(labels == lab)
                eg = e[idx]
                if kind == "CR2":
                    lam, U = np.linalg.eigh(np.eye(len(idx)) - H[np.ix_(idx, idx)])
                    power = np.where(lam > 1e-12, 1.0 / np.sqrt(np.abs(lam)), 0.0)
                    eg = U @ (power * (U.T @ eg))
                s = X[idx].T @ eg
                M += np.outer(s, s)
            adj = len(uniq) / (len(uniq) - 1) if kind == "CR1" else 1.0
            V += (-1) ** (size + 1) * adj * XtXi @ M @ XtXi
    return V * ((n - 1) / (n - k) if kind == "CR1" else 1.0)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(12, 50), g1=st.integers(2, 8),
       g2=st.integers(2, 12), ndims=st.integers(1, 3), kind=st.sampled_from(["CR0", "CR1", "CR2"]))
def test_clustered_matches_slow_textbook_formulas(seed, n, g1, g2, ndims, kind):
    rng = np.random.default_rng(seed)
    data = pd.DataFrame({"y": rng.normal(size=n), "x1": rng.normal(size=n),
                         "x2": rng.exponential(size=n),
                         "c1": rng.integers(0, g1, n), "c2": rng.integers(0, g2, n),
                         "c3": rng.integers(0, n, n)})  # many one-row clusters
    names = ["c1", "c2", "c3"][:ndims]
    if any(data[c].nunique() < 2 for c in names):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # multiway: negative variances can occur
        fit = engine.ols("y ~ x1 + x2", data, vcov=kind, cluster=names)
    X = fit.model_frame.X
    slow = _slow_sandwich(X, fit.model_frame.y, [data[c].to_numpy() for c in names], kind)
    np.testing.assert_allclose(fit.vcov.to_numpy(), slow, rtol=1e-8, atol=1e-12 * np.max(np.abs(slow)))


def test_negative_multiway_variance_warns():
    """Two-way CR0 can have a negative variance (sandwich's fix = FALSE): NaN SE and a warning."""
    data = pd.DataFrame({"y": [0.3, 0.8, 0.3, -1.3, 0.9, 0.4, -0.5, 0.6],
                         "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
                         "a": [1, 1, 2, 2, 3, 3, 4, 4], "b": [1, 2, 1, 2, 1, 2, 1, 2]})
    slow = _slow_sandwich(np.column_stack([np.ones(8), data["x"]]), data["y"].to_numpy(),
                          [data["a"].to_numpy(), data["b"].to_numpy()], "CR0")
    assert slow[1, 1] < 0 < slow[0, 0]
    with pytest.warns(DataWarning, match="negative variances for x: "):
        fit = engine.ols("y ~ x", data, vcov="CR0", cluster=["a", "b"])
    np.testing.assert_allclose(fit.vcov.to_numpy(), slow, rtol=1e-10)
    assert np.isnan(fit.bse["x"]) and np.isfinite(fit.bse["(Intercept)"])
