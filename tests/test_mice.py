"""engine.mice: kernels against slow references, invariants of the imputations, input errors,
and statistical validity by simulation (coverage of pooled intervals; agreement with statsmodels)."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import engine
from engine.impute import cart as cart_kernels
from engine.impute import linear, logistic
from engine import _linalg
from engine.errors import DataWarning, ImputationError
from engine.mice import mice, remove_lindep


# ------------------------------------------------------------------ kernels vs slow references

def slow_pmm_match(yhat_obs, yhat_mis, k, u_pick, u_tie):
    """Obviously correct O(n_obs) per target: the donor pool is the k nearest, ties at the k-th
    distance entering at random; same use of the uniforms as the kernel (documented there)."""
    out = []
    order = np.lexsort((np.arange(len(yhat_obs)), yhat_obs))  # by value, then index
    for t, u1, u2 in zip(yhat_mis, u_pick, u_tie):
        dist = np.abs(yhat_obs - t)
        d_k = np.sort(dist)[k - 1]
        less = [i for i in order if dist[i] < d_k]
        ties = [i for i in order if dist[i] == d_k]
        ties = [i for i in ties if yhat_obs[i] < t] + [i for i in ties if yhat_obs[i] >= t]
        j = int(u1 * k)
        out.append(less[j] if j < len(less) else ties[int(u2 * len(ties))])
    return np.array(out)


@pytest.mark.parametrize("rounding", [None, 1])
def test_pmm_match_equals_slow_reference_and_donor_is_among_5_closest(rounding):
    rng = np.random.default_rng(11)
    yhat_obs = rng.normal(size=400)
    yhat_mis = rng.normal(size=150) * 1.3
    if rounding is not None:  # many exact ties
        yhat_obs = np.round(yhat_obs, rounding)
        yhat_mis = np.round(yhat_mis, rounding)
    u1, u2 = rng.random(150), rng.random(150)
    fast = linear.pmm_match(yhat_obs, yhat_mis, 5, u1, u2)
    np.testing.assert_array_equal(fast, slow_pmm_match(yhat_obs, yhat_mis, 5, u1, u2))
    for t, donor in zip(yhat_mis, fast):
        dist = np.abs(yhat_obs - t)
        assert dist[donor] <= np.sort(dist)[4]


def test_pmm_ties_are_broken_at_random_per_case():
    yhat_obs = np.zeros(50)  # every observed case is tied
    rng = np.random.default_rng(3)
    donors = linear.pmm_match(yhat_obs, np.zeros(2000), 5, rng.random(2000), rng.random(2000))
    counts = np.bincount(donors, minlength=50)
    assert counts.min() > 0  # all 50 tied cases get chosen, not a fixed 5
    assert abs(counts.mean() - 40) < 1e-9 and counts.max() < 80


def _factor_target(seed=21, n=300):
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=n), (rng.random(n) < 0.4).astype(float), rng.normal(size=n)])
    latent = 1.2 * x[:, 0] - 0.8 * x[:, 1] + rng.normal(scale=0.8, size=n)
    codes = np.digitize(latent, [-1.0, 0.0, 1.0]).astype(float)  # 4 classes, 0..3
    rng.shuffle(codes[:40])  # some noise in the class order
    return x, codes


def test_quantify_scores_are_mices_uncentred_second_canonical_variate():
    """mice >= 3.16's quantify: cancor(dummies of all levels, [1, x], no centring), the second
    variate (the first is the constant pair), scaled. Written here from the definition, by QR + SVD;
    engine's scores must be the same vector up to sign (pmm's matching is invariant to it)."""
    x, codes = _factor_target()
    x1 = np.column_stack([np.ones(len(codes)), x])
    dummies = (codes[:, None] == np.arange(4)).astype(float)
    q_y, _ = np.linalg.qr(dummies)
    q_x, _ = np.linalg.qr(x1)
    u, sv, _ = np.linalg.svd(q_y.T @ q_x)
    assert sv[0] == pytest.approx(1.0, abs=1e-12)  # the trivial constant pair
    reference = q_y @ u[:, 1]
    reference = (reference - reference.mean()) / reference.std(ddof=1)
    chol, _ = _linalg.cholesky_with_ridge(_linalg.crossprod(x1), linear.RIDGE)
    scores = engine.mice.quantify(codes, x1, chol)
    assert abs(np.corrcoef(scores, reference)[0, 1]) == pytest.approx(1.0, abs=1e-12)
    assert scores.std(ddof=1) == pytest.approx(1.0) and abs(scores.mean()) < 1e-12


def test_pmm_on_factor_codes_when_quantify_is_off():
    """quantify=False (mice <= 3.15): the regression draw is on the codes 1..L and the donors are
    matched on it: reproduced step by step with the same random numbers."""
    from engine import mice as mice_module

    x, codes = _factor_target()
    observed = np.arange(len(codes)) >= 60
    x_obs, x_mis, y_obs = x[observed], x[~observed], codes[observed]
    imputed = mice_module._impute_pmm(y_obs, x_obs, x_mis, np.random.default_rng(5), True,
                                        mice_module._StepState(quantify=False))
    rng = np.random.default_rng(5)
    xo = np.column_stack([np.ones(len(y_obs)), x_obs])
    xm = np.column_stack([np.ones(len(x_mis)), x_mis])
    z = rng.standard_normal(xo.shape[1])
    chisq = rng.chisquare(len(y_obs) - xo.shape[1])
    beta_hat, beta_star, _, _ = linear.bayes_linear_draw(xo, y_obs + 1.0, z, chisq, linear.RIDGE)
    donors = linear.pmm_match(xo @ beta_hat, xm @ beta_star, 5, rng.random(len(x_mis)), rng.random(len(x_mis)))
    np.testing.assert_array_equal(imputed, y_obs[donors])
    scaled = mice_module._impute_pmm(y_obs, x_obs, x_mis, np.random.default_rng(5), True)
    assert not np.array_equal(scaled, imputed)  # the option changes the draws
    data = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 2], "f": pd.Categorical(codes.astype(int))})
    data.loc[~observed, "f"] = np.nan
    for flag in (True, False):
        completed = mice(data, m=1, maxit=2, method={"f": "pmm"}, quantify=flag, seed=3).complete(1)
        assert completed["f"].notna().all() and set(completed["f"].cat.categories) == {0, 1, 2, 3}
    with pytest.raises(ImputationError, match="quantify"):
        mice(data, m=1, quantify="yes")


def test_bayes_linear_draw_moments():
    rng = np.random.default_rng(5)
    n, p = 60, 3
    x = np.column_stack([np.ones(n), rng.normal(size=(n, p - 1))])
    y = x @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=n)
    draws = []
    for _ in range(20000):
        _, beta_star, sigma, _ = linear.bayes_linear_draw(x, y, rng.standard_normal(p), rng.chisquare(n - p), linear.RIDGE)
        draws.append(beta_star)
    draws = np.array(draws)
    beta_hat = np.linalg.lstsq(x, y, rcond=None)[0]
    s2 = np.sum((y - x @ beta_hat) ** 2) / (n - p)
    # posterior: multivariate t with scale s2 (X'X)^-1 and n - p df: covariance * (n-p)/(n-p-2)
    cov = s2 * np.linalg.inv(x.T @ x) * (n - p) / (n - p - 2)
    se = np.sqrt(np.diag(cov) / len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - beta_hat) < 4 * se)
    # sampling sd of a covariance entry ~ sqrt((C_ii C_jj + C_ij^2) / N) (heavier for t: allow 5)
    tol = 5 * np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / len(draws))
    assert np.all(np.abs(np.cov(draws.T) - cov) < tol)


def test_cart_tree_finds_a_step_and_keeps_leaves_of_five():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(300, 3))
    y = np.where(x[:, 1] < 0.4, 0.0, 10.0) + rng.normal(scale=0.1, size=300)
    feature, threshold, left, right, n_nodes, leaf = cart_kernels.grow_tree(x, y, 0, 15, 5, 1e-4, 30)
    assert feature[0] == 1 and abs(threshold[0] - 0.4) < 0.02
    assert np.bincount(leaf)[np.unique(leaf)].min() >= 5
    np.testing.assert_array_equal(cart_kernels.predict_leaves(feature, threshold, left, right, x), leaf)
    # classification: gini finds the informative feature
    cls = (x[:, 2] > 0.7).astype(float)
    feature, threshold, *_ = cart_kernels.grow_tree(x, cls, 2, 15, 5, 1e-4, 30)
    assert feature[0] == 2 and abs(threshold[0] - 0.7) < 0.02


def test_remove_lindep_drops_constant_and_collinear():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 200))
    x = np.column_stack([a, np.ones(200), b, a + b, rng.normal(size=200)])
    keep = remove_lindep(x, rng.normal(size=200))
    assert not keep[1]
    assert keep.sum() == 3 and keep[4]
    assert not remove_lindep(x, np.ones(200)).any()  # constant target: no predictors


# ------------------------------------------------------------------ imputations

def small_frame(seed=0, n=300):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = 0.5 * x1 + rng.normal(size=n)
    g = np.where(x1 + rng.normal(size=n) > 0, "b", "a")
    h = pd.Categorical(rng.choice(["lo", "mid", "hi"], size=n, p=[0.3, 0.4, 0.3]), categories=["lo", "mid", "hi"])
    k = pd.Categorical(rng.choice(["u", "v", "w", "z"], size=n), categories=["u", "v", "w", "z"])
    frame = pd.DataFrame({"x1": x1, "x2": x2, "g": pd.Categorical(g), "h": h, "k": k,
                          "s": pd.Series(np.where(x2 > 0, "yes", "no"), dtype=object)})
    for col, frac in [("x1", 0.2), ("x2", 0.15), ("g", 0.1), ("h", 0.2), ("k", 0.1), ("s", 0.1)]:
        frame.loc[rng.random(n) < frac, col] = np.nan if col in ("x1", "x2") else None
    return frame


def test_pmm_imputes_only_observed_values_and_factors_get_levels():
    data = small_frame()
    before = data.copy()
    imp = mice(data, m=3, maxit=3, method={"h": "polyreg", "k": "lda", "s": "cart"}, seed=1)
    pd.testing.assert_frame_equal(data, before)  # input untouched
    assert imp.method == {"x1": "pmm", "x2": "pmm", "g": "logreg", "h": "polyreg", "k": "lda", "s": "cart"}
    for k in range(1, 4):
        done = imp.complete(k)
        assert not done.isna().any().any()
        for col in ("x1", "x2"):
            observed = set(data[col].dropna())
            assert set(done.loc[data[col].isna(), col]) <= observed
        for col in ("g", "h", "k"):
            assert isinstance(done[col].dtype, pd.CategoricalDtype)
            assert list(done[col].cat.categories) == list(data[col].cat.categories)
            pd.testing.assert_series_equal(done.loc[data[col].notna(), col], data.loc[data[col].notna(), col])
        assert set(done["s"]) <= {"yes", "no"}
    for col in ("h", "k", "g"):
        assert set(imp.imp[col].to_numpy().ravel()) <= set(data[col].cat.categories)


@pytest.mark.parametrize("method", ["pmm", "cart", "lda", "polyreg"])
def test_each_factor_method_returns_levels(method):
    data = small_frame(seed=3)[["x1", "x2", "k"]]
    imp = mice(data, m=2, maxit=2, method={"k": method, "x1": "norm", "x2": "cart"}, seed=2)
    done = imp.complete(2)
    assert set(done["k"]) <= {"u", "v", "w", "z"} and not done["k"].isna().any()


def test_no_missing_data_is_the_identity():
    data = small_frame().dropna().reset_index(drop=True)
    imp = mice(data, m=2, maxit=2, seed=1)
    for k in (0, 1, 2):
        pd.testing.assert_frame_equal(imp.complete(k), data)
    assert all(v == "" for v in imp.method.values())


def test_complete_long_and_original():
    data = small_frame()
    imp = mice(data, m=2, maxit=1, seed=9)
    pd.testing.assert_frame_equal(imp.complete(0), data)
    long = imp.complete("long")
    assert list(long.columns[:2]) == [".imp", ".id"] and len(long) == 2 * len(data)
    assert list(long[".imp"].unique()) == [1, 2] and list(long[".id"][:3]) == [1, 2, 3]
    pd.testing.assert_frame_equal(long[long[".imp"] == 2].drop(columns=[".imp", ".id"]).reset_index(drop=True),
                                  imp.complete(2))
    assert len(imp.complete("long", include=True)) == 3 * len(data)
    assert imp.chain_means["x1"].shape == (1, 2) and imp.chain_vars["h"].shape == (1, 2)
    with pytest.raises(ImputationError):
        imp.complete(3)


def test_same_seed_same_imputations_whatever_the_executor():
    data = small_frame(seed=5)
    a = mice(data, m=3, maxit=2, seed=42)
    with ThreadPoolExecutor(max_workers=1) as one, ThreadPoolExecutor(max_workers=3) as three:
        b = mice(data, m=3, maxit=2, seed=42, executor=one)
        c = mice(data, m=3, maxit=2, seed=42, executor=three)
    for other in (b, c):
        for k in (1, 2, 3):
            pd.testing.assert_frame_equal(a.complete(k), other.complete(k))
    d = mice(data, m=3, maxit=2, seed=43)
    assert not a.complete(1).equals(d.complete(1))
    assert not a.complete(1).equals(a.complete(2))  # imputations use different streams


def test_bad_input_errors_name_the_culprit():
    data = small_frame()
    with pytest.raises(ImputationError, match="'x1'.*entirely missing|entirely missing"):
        mice(data.assign(x1=np.nan), m=1)
    with pytest.raises(ImputationError, match="unknown imputation method 'magic'.*'x2'"):
        mice(data, method={"x2": "magic"})
    with pytest.raises(ImputationError, match="'logreg' needs a factor.*'x1'"):
        mice(data, method={"x1": "logreg"})
    with pytest.raises(ImputationError, match="'norm' needs a numeric.*'h'"):
        mice(data, method={"h": "norm"})
    with pytest.raises(ImputationError, match="predictor_matrix has shape \\(3, 3\\)"):
        mice(data, predictor_matrix=np.ones((3, 3)))
    with pytest.raises(ImputationError, match="m \\(the number of imputations\\)"):
        mice(data, m=0)
    with pytest.raises(ImputationError, match="not in the data"):
        mice(data, method={"nope": "pmm"})
    assert issubclass(ImputationError, ValueError)


def test_predictor_matrix_and_visit_sequence_are_used():
    data = small_frame()[["x1", "x2", "g"]]
    pred = pd.DataFrame(1, index=data.columns, columns=data.columns)
    pred.loc["x1", :] = 0  # x1 imputed from nothing: pmm on the intercept only
    imp = mice(data, m=1, maxit=1, predictor_matrix=pred, visit_sequence=["g", "x2", "x1"], seed=1)
    assert imp.visit_sequence == ["g", "x2", "x1"]
    assert imp.predictor_matrix.loc["x1"].sum() == 0


def test_constant_and_collinear_columns_are_logged():
    data = small_frame()[["x1", "x2"]].assign(const=1.0, twin=lambda d: 2 * d["x2"] + 1)
    with pytest.warns(DataWarning, match="const \\(constant\\).*twin \\(collinear\\)"):
        imp = mice(data, m=1, maxit=1, seed=1)
    assert imp.predictor_matrix["const"].sum() == 0 and imp.predictor_matrix["twin"].sum() == 0
    assert set(imp.logged_events["meth"]) >= {"constant", "collinear"}


def test_full_grit_analysis_configuration_runs():
    """The analysis' call: default_method ("cart", "lda", "pmm", "polr") on all 52 columns."""
    data = engine.load_grit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        imp = mice(data, m=2, maxit=1, default_method=("cart", "lda", "pmm", "polr"), seed=7)
    assert imp.method["mathscore3"] == "cart" and imp.method["choicer1"] == "lda"
    assert imp.method["wealth"] == "pmm" and imp.method["schoolid"] == ""
    done = imp.complete(2)
    imputed = [c for c, meth in imp.method.items() if meth]
    assert not done[imputed].isna().any().any()
    for col in imputed:
        if isinstance(data[col].dtype, pd.CategoricalDtype):
            assert list(done[col].cat.categories) == list(data[col].cat.categories)


def test_fit_and_pool_workflow():
    data = small_frame()[["x1", "x2", "g"]]
    imp = mice(data, m=3, maxit=2, seed=3)
    fits = imp.fit(lambda d: engine.ols("x2 ~ x1 + g", d))
    assert len(fits) == 3
    pooled = engine.pool(fits)
    assert list(pooled.summary()["term"]) == ["(Intercept)", "x1", "gb"]
    assert pooled.dfcom == len(data) - 3


# ------------------------------------------------------------------ statistical validity

def simulate_mar(rng, n=300, slope=0.5):
    """y = 1 + slope x + e; x missing with probability rising in y (MAR given y)."""
    x = rng.normal(size=n)
    y = 1.0 + slope * x + rng.normal(size=n)
    z = 0.7 * x + rng.normal(scale=0.7, size=n)  # auxiliary, always observed
    p_mis = 1.0 / (1.0 + np.exp(-(-0.7 + 1.5 * (y - 1.0))))
    x_obs = np.where(rng.random(n) < p_mis, np.nan, x)
    return pd.DataFrame({"y": y, "x": x_obs, "z": z})


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pmm", "norm"])
def test_pooled_intervals_cover_the_truth_under_mar(method):
    rng = np.random.default_rng(20240611 if method == "pmm" else 20240612)
    reps, truth = 200, 0.5
    covered, cc_estimates, cc_covered = 0, [], 0
    for r in range(reps):
        data = simulate_mar(rng)
        imp = mice(data, m=5, maxit=5, method=method, seed=int(rng.integers(2**31)))
        summary = engine.pool(imp.fit(lambda d: engine.ols("y ~ x + z", d))).summary()
        row = summary[summary["term"] == "x"].iloc[0]
        covered += row["2.5 %"] <= truth <= row["97.5 %"]
        cc = engine.ols("y ~ x + z", data)
        half = stats.t.ppf(0.975, cc.df_resid) * cc.bse["x"]
        lo, hi = cc.params["x"] - half, cc.params["x"] + half
        cc_estimates.append(cc.params["x"])
        cc_covered += lo <= truth <= hi
    coverage = covered / reps
    print(f"{method}: MI coverage {coverage:.3f}, complete-case coverage {cc_covered / reps:.3f}")
    mc_se = np.sqrt(0.95 * 0.05 / reps)
    assert abs(coverage - 0.95) <= 3 * mc_se, coverage
    # complete-case analysis is visibly biased (selection on the outcome) and undercovers
    cc_estimates = np.array(cc_estimates)
    cc_bias = cc_estimates.mean() - truth
    assert abs(cc_bias) > 6 * cc_estimates.std(ddof=1) / np.sqrt(reps), cc_bias
    assert cc_covered / reps < coverage - 3 * mc_se


@pytest.mark.slow
def test_pooled_estimate_agrees_with_statsmodels_mice():
    from statsmodels.imputation.mice import MICEData
    import statsmodels.api as sm

    data = simulate_mar(np.random.default_rng(77), n=1000)
    m = 20
    imp = mice(data, m=m, maxit=10, method="pmm", seed=5)
    ours = engine.pool(imp.fit(lambda d: engine.ols("y ~ x + z", d)))
    j = ours.terms.index("x")
    np.random.seed(5)  # statsmodels draws from numpy's global generator
    sm_data = MICEData(data.copy())
    estimates = []
    for _ in range(m):
        sm_data.update_all(10)
        done = sm_data.data
        fit = sm.OLS(done["y"], sm.add_constant(done[["x", "z"]])).fit()
        estimates.append(fit.params["x"])
    estimates = np.array(estimates)
    mc_error = np.sqrt(ours.b[j] / m + estimates.var(ddof=1) / m)
    assert abs(ours.estimate[j] - estimates.mean()) < 4 * mc_error, (ours.estimate[j], estimates.mean(), mc_error)


def test_multinomial_and_logistic_fits_match_statsmodels():
    import statsmodels.api as sm

    rng = np.random.default_rng(1)
    n = 800
    x = np.column_stack([np.ones(n), rng.normal(size=(n, 3))])
    eta = np.column_stack([np.zeros(n), x @ [0.2, 1, -1, 0.5], x @ [-0.3, 0.5, 0.5, -1]])
    prob = np.exp(eta) / np.exp(eta).sum(axis=1, keepdims=True)
    y = (rng.random(n)[:, None] > np.cumsum(prob, axis=1)).sum(axis=1)
    beta = logistic.multinom_newton(x, y, np.ones(n), 3, np.zeros((4, 3)), 100, 1e-12)
    np.testing.assert_allclose(beta[:, 1:], sm.MNLogit(y, x).fit(disp=0, tol=1e-12).params, atol=1e-8)
    yb = (y > 0).astype(float)
    w = rng.uniform(0.5, 2.0, size=n)
    coef, chol, converged = logistic.logistic_irls(x, yb, w, 25, 1e-10)
    ref = sm.GLM(yb, x, family=sm.families.Binomial(), var_weights=w).fit(tol=1e-12)
    assert converged
    np.testing.assert_allclose(coef, ref.params, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(np.linalg.inv(chol @ chol.T), ref.cov_params(), rtol=1e-6)


def test_study_imputations_pool_like_r_within_monte_carlo_error(fixtures_dir):
    """engine's 12-column imputation of the study data, pooled for model1, against R mice's own
    pooled result (fixture): the two differ only by Monte Carlo error of the imputations."""
    import json

    with open(fixtures_dir / "mice" / "mice_pool_reference.json") as f:
        r_ref = json.load(f)["m2"]
    data = engine.load_grit()[["mathscore1", "mathscore2", "mathscore3", "male", "raven", "csize",
                               "belief_survey1", "grit", "grit_survey1", "age", "wealth", "schoolid"]]
    m = 10
    imp = mice(data, m=m, maxit=5, method={"wealth": "polyreg"}, seed=4387510)
    assert imp.method["wealth"] == "polyreg" and imp.method["mathscore3"] == "pmm"
    ours = engine.pool(imp.fit(lambda d: engine.ols(
        "mathscore2 ~ male + raven + csize + belief_survey1 + mathscore1 + grit", d)))
    assert ours.terms == r_ref["term"]
    mc_sd = np.sqrt(np.array(r_ref["b"]) / 5 + ours.b / m)
    z = (ours.estimate - np.array(r_ref["estimate"])) / mc_sd
    assert np.all(np.abs(z) < 4), z
    # the within-imputation variance is stable across imputation runs (R's five vary by < 2 %)
    np.testing.assert_allclose(ours.ubar, r_ref["ubar"], rtol=0.05)
    # between-imputation variances: R's has 4 df, ours 9; their ratio is F(9, 4)-distributed
    # under equal truth, whose central 99.8 % range is about (0.09, 21)
    from scipy import stats

    ratio = ours.b / np.array(r_ref["b"])
    assert np.all((ratio > stats.f.ppf(0.001, m - 1, 4)) & (ratio < stats.f.ppf(0.999, m - 1, 4))), ratio
