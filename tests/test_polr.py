"""engine.impute.polr and mice's ``polr`` method: the proportional-odds fit against statsmodels'
OrderedModel and R's MASS::polr (fixtures in tests/fixtures/polr, see PROVENANCE.md), its
derivatives against finite differences, the class draws against the fitted probabilities, and
engine.mice on ordered factors (default method, ordered result, fall-back to polyreg, validity)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import engine
from engine.impute import logistic
from engine import mice as mice_module
from engine.impute import polr
from engine.errors import DataError
from engine.mice import mice

TRUE_BETA = np.array([1.0, -0.5, 0.8])
TRUE_ZETA = np.array([-1.0, 0.2, 1.5])


def simulate(rng, n, beta=TRUE_BETA, zeta=TRUE_ZETA):
    """Design (n, 3) with a binary column, and classes from logit P(Y <= j) = zeta_j - x'beta."""
    x = np.column_stack([rng.normal(size=n), rng.normal(size=n), (rng.random(n) < 0.3).astype(float)])
    cumulative = stats.logistic.cdf(zeta[None, :] - (x @ beta)[:, None])
    y = (rng.random(n)[:, None] > cumulative).sum(axis=1)
    return x, y


def naive_probabilities(x, beta, zeta):
    """P(Y = j | x) as differences of the cumulative logits (plain numpy)."""
    cumulative = stats.logistic.cdf(zeta[None, :] - (x @ beta)[:, None])
    padded = np.column_stack([np.zeros(x.shape[0]), cumulative, np.ones(x.shape[0])])
    return np.diff(padded, axis=1)


# ------------------------------------------------------------------ the fit vs references


def test_fit_matches_statsmodels_ordered_model():
    """statsmodels' OrderedModel(distr="logit") has P(Y <= j) = F(cut_j - x'beta), the same signs
    as MASS; its thresholds are reported as cut_0 then log increments. Its BFGS is run to
    gtol 1e-9, so the optimum agrees to ~1e-7: checked at 1e-6 relative."""
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    x, y = simulate(np.random.default_rng(1), 400)
    fit = polr.fit_polr(x, y)
    assert fit.converged and fit.iterations < 15
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = OrderedModel(y, x, distr="logit").fit(method="bfgs", disp=0, gtol=1e-9, maxiter=5000)
    thresholds = reference.params[3:]
    ref_zeta = np.cumsum(np.r_[thresholds[0], np.exp(thresholds[1:])])
    np.testing.assert_allclose(fit.beta, reference.params[:3], rtol=1e-6)
    np.testing.assert_allclose(fit.zeta, ref_zeta, rtol=1e-6)
    assert fit.loglik == pytest.approx(reference.llf, rel=1e-10)
    # engine's point is at least as high on statsmodels' own likelihood
    ours = np.r_[fit.beta, fit.zeta[0], np.log(np.diff(fit.zeta))]
    assert OrderedModel(y, x, distr="logit").loglike(ours) >= reference.llf - 1e-9


@pytest.fixture(scope="module")
def r_polr(fixtures_dir):
    folder = fixtures_dir / "polr"
    return {
        "data": pd.read_csv(folder / "polr_data.csv"),
        "augmented": pd.read_csv(folder / "polr_augmented.csv"),
        "augmented_missing": pd.read_csv(folder / "polr_augmented_missing.csv"),
        "coefficients": pd.read_csv(folder / "polr_coefficients.csv"),
        "fitted": pd.read_csv(folder / "polr_fitted.csv").to_numpy(),
    }


def r_estimates(r_polr, name):
    values = r_polr["coefficients"].query("fit == @name").set_index("term")["value"]
    return (values[["x1", "x2", "x3"]].to_numpy(), values[[f"zeta{j}" for j in range(1, 5)]].to_numpy(),
            float(values["deviance"]))


@pytest.mark.parametrize("name", ["unweighted", "weighted", "augmented"])
def test_fit_matches_r_mass_polr(r_polr, name):
    """MASS::polr (BFGS run to reltol 1e-15, PROVENANCE.md) agrees with the Newton MLE to ~1e-8:
    coefficients to 1e-6 relative, cutpoints to 1e-6 relative to max(|zeta|, 1) (one lies near 0),
    deviance to 1e-9. ``weighted``: polr(weights = w); ``augmented``: the weighted fit mice's
    polr method makes on mice's augment() output."""
    frame = r_polr["augmented"] if name == "augmented" else r_polr["data"]
    x = frame[["x1", "x2", "x3"]].to_numpy()
    y = frame["y"].to_numpy() - 1
    w = None if name == "unweighted" else frame["w"].to_numpy()
    fit = polr.fit_polr(x, y, w)
    beta, zeta, deviance = r_estimates(r_polr, name)
    assert fit.converged
    np.testing.assert_allclose(fit.beta, beta, rtol=1e-6)
    np.testing.assert_allclose(fit.zeta, zeta, rtol=1e-6, atol=1e-6)
    assert -2 * fit.loglik == pytest.approx(deviance, rel=1e-9)
    if name == "unweighted":
        probs = polr.predict_probabilities(x, fit.beta, fit.zeta)
        np.testing.assert_allclose(probs, r_polr["fitted"], rtol=1e-6)


def test_engine_augment_reproduces_mice_augment(r_polr):
    """engine.impute.logistic.augment on complete data gives mice 3.15's augment() rows and weights."""
    data = r_polr["data"]
    x = data[["x1", "x2", "x3"]].to_numpy()
    x_aug, y_aug, w_aug = logistic.augment(x, data["y"].to_numpy() - 1, 5)
    reference = r_polr["augmented"]
    np.testing.assert_allclose(x_aug, reference[["x1", "x2", "x3"]].to_numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(y_aug, reference["y"].to_numpy() - 1)
    np.testing.assert_allclose(w_aug, reference["w"].to_numpy(), rtol=1e-14)


def test_engine_augment_takes_predictor_moments_from_all_rows(r_polr):
    """With missing targets, mice's augment() centres and scales its pseudo-rows by the predictors
    of all rows (observed and missing targets): engine's pseudo-rows equal R's for rows 241-300
    missing (fixture made by make_augment_missing_fixture.R)."""
    data = r_polr["data"]
    x = data[["x1", "x2", "x3"]].to_numpy()
    observed = np.arange(len(data)) < 240
    x_aug, y_aug, w_aug = logistic.augment(x[observed], data["y"].to_numpy()[observed] - 1, 5, x[~observed])
    reference = r_polr["augmented_missing"]
    n_obs = int(observed.sum())
    np.testing.assert_allclose(x_aug[n_obs:], reference[["x1", "x2", "x3"]].to_numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(y_aug[n_obs:], reference["y"].to_numpy() - 1)
    np.testing.assert_allclose(w_aug[n_obs:], reference["w"].to_numpy(), rtol=1e-14)
    observed_only, *_ = logistic.augment(x[observed], data["y"].to_numpy()[observed] - 1, 5)
    assert np.abs(observed_only[n_obs:] - x_aug[n_obs:]).max() > 1e-3  # the moments do differ here


def test_integer_weights_equal_replicated_cases():
    rng = np.random.default_rng(2)
    x, y = simulate(rng, 150)
    counts = rng.integers(1, 4, size=150)
    weighted = polr.fit_polr(x, y, counts.astype(float))
    replicated = polr.fit_polr(np.repeat(x, counts, axis=0), np.repeat(y, counts))
    np.testing.assert_allclose(weighted.beta, replicated.beta, rtol=1e-9)
    np.testing.assert_allclose(weighted.zeta, replicated.zeta, rtol=1e-9)
    assert weighted.loglik == pytest.approx(replicated.loglik, rel=1e-12)


def test_any_feasible_start_reaches_the_same_maximum():
    """Warm starts (mice reuses the previous sweep's estimates) change the path, not the MLE."""
    x, y = simulate(np.random.default_rng(10), 300)
    cold = polr.fit_polr(x, y)
    for beta0, zeta0 in [(cold.beta + 0.3, cold.zeta - 0.2), (np.array([-2.0, 2.0, -1.0]), np.array([-4.0, 0.0, 4.0]))]:
        warm = polr.fit_polr(x, y, beta0=beta0, zeta0=zeta0)
        assert warm.converged
        np.testing.assert_allclose(warm.beta, cold.beta, rtol=1e-8)
        np.testing.assert_allclose(warm.zeta, cold.zeta, rtol=1e-8)


def test_no_predictors_gives_marginal_cumulative_logits():
    y = np.repeat([0, 1, 2, 3], [10, 25, 5, 20])
    fit = polr.fit_polr(np.zeros((60, 0)), y)
    cumulative = np.array([10, 35, 40]) / 60
    np.testing.assert_allclose(fit.zeta, np.log(cumulative / (1 - cumulative)), rtol=1e-12)
    assert fit.converged and fit.beta.shape == (0,)


def test_gradient_and_hessian_match_finite_differences():
    rng = np.random.default_rng(3)
    x, y = simulate(rng, 80)
    x[:, 1] = np.where(rng.random(80) < 0.5, 0.0, x[:, 1])  # zeros exercise the sparse pattern
    w = rng.uniform(0.3, 2.0, size=80)
    beta, zeta = np.array([0.3, -0.2, 0.5]), np.array([-0.8, 0.1, 1.2])
    nz_start = np.r_[0, np.cumsum((x != 0).sum(axis=1))].astype(np.int64)
    nz_col = np.concatenate([np.flatnonzero(row) for row in x]).astype(np.int64)
    grad, hess = polr._gradient_hessian(x, nz_start, nz_col, y, w, beta, zeta)

    def loglik(theta):
        return polr.polr_loglik(x, y, w, theta[:3], theta[3:])

    def gradient(theta):
        return polr._gradient_hessian(x, nz_start, nz_col, y, w, theta[:3], theta[3:])[0]

    theta = np.r_[beta, zeta]
    h = 1e-5
    basis = np.eye(theta.size)
    numeric_grad = np.array([(loglik(theta + h * e) - loglik(theta - h * e)) / (2 * h) for e in basis])
    numeric_hess = np.column_stack([(gradient(theta + h * e) - gradient(theta - h * e)) / (2 * h) for e in basis])
    np.testing.assert_allclose(grad, numeric_grad, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(hess, numeric_hess, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hess, hess.T, rtol=0, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(hess) < 0)  # concave (Pratt 1981)


def test_probabilities_match_cumulative_differences_and_keep_tails():
    rng = np.random.default_rng(4)
    x, _ = simulate(rng, 50)
    probs = polr.predict_probabilities(x, TRUE_BETA, TRUE_ZETA)
    np.testing.assert_allclose(probs, naive_probabilities(x, TRUE_BETA, TRUE_ZETA), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-14)
    # far in the upper tail the middle classes are tiny but still carry relative precision
    far = polr.predict_probabilities(np.array([[60.0]]), np.array([1.0]), np.array([-1.0, 0.0, 1.0]))[0]
    exact = np.exp(-60.0) * (np.exp(np.array([-1.0, 0.0, 1.0])) - np.exp(np.array([-np.inf, -1.0, 0.0])))
    np.testing.assert_allclose(far[:3], exact, rtol=1e-10)
    assert far[3] == pytest.approx(1.0)


def test_bad_inputs_raise_data_errors():
    x, y = simulate(np.random.default_rng(5), 40)
    with pytest.raises(DataError, match="no \\(weighted\\) cases"):
        polr.fit_polr(x, np.where(y == 1, 0, y))  # class 1 empty
    with pytest.raises(DataError, match="non-negative weight"):
        polr.fit_polr(x, y, -np.ones(40))
    with pytest.raises(DataError, match="strictly increasing"):
        polr.fit_polr(x, y, zeta0=np.array([0.0, 0.0, 1.0]))


# ------------------------------------------------------------------ the draws


def test_draws_follow_mice_rule_and_fitted_probabilities():
    """The class is 1 + #{j : u > cumsum(p)_j} (mice); over many uniforms the frequencies match
    the fitted probabilities within 4.5 binomial standard errors (all 4 x 3 cells)."""
    rng = np.random.default_rng(6)
    x, y = simulate(rng, 300)
    fit = polr.fit_polr(x, y)
    rows = x[:3]
    probs = polr.predict_probabilities(rows, fit.beta, fit.zeta)
    draws = 100_000
    u = rng.random(draws)
    for r in range(3):
        classes = logistic.draw_categories(np.repeat(probs[r:r + 1], draws, axis=0), u)
        np.testing.assert_array_equal(classes, (u[:, None] > np.cumsum(probs[r])[None, :]).sum(axis=1))
        freq = np.bincount(classes, minlength=4) / draws
        se = np.sqrt(probs[r] * (1 - probs[r]) / draws)
        assert np.all(np.abs(freq - probs[r]) < 4.5 * se)


def test_impute_polr_is_fit_on_augmented_data_then_one_uniform_per_case():
    """mice.impute.polr step by step: augment the observed cases, weighted polr fit, fitted
    probabilities of the missing cases, class 1 + #{u > cumsum(p)} with the stream's uniforms.
    Classes absent among the observed (code 1 here) are never imputed."""
    rng = np.random.default_rng(12)
    x, y = simulate(rng, 250)
    y = np.where(y == 1, 0, y).astype(float)  # observed classes 0, 2, 3
    x_mis = rng.normal(size=(40, 3))
    imputed = mice_module._impute_polr(y, x, x_mis, np.random.default_rng(99), True)
    local = np.searchsorted([0, 2, 3], y.astype(int))
    x_aug, y_aug, w_aug = logistic.augment(x, local, 3, x_mis)
    fit = polr.fit_polr(x_aug, y_aug, w_aug)
    u = np.random.default_rng(99).random(40)
    expected = np.array([0, 2, 3])[(u[:, None] > np.cumsum(polr.predict_probabilities(x_mis, fit.beta, fit.zeta), axis=1)).sum(axis=1)]
    np.testing.assert_array_equal(imputed, expected.astype(float))


def test_impute_polr_follows_a_strong_predictor():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 1))
    y = np.digitize(3.0 * x[:, 0] + rng.logistic(size=400), [-2.0, 0.0, 2.0]).astype(float)
    x_mis = np.array([[-3.0]] * 200 + [[3.0]] * 200)
    imputed = mice_module._impute_polr(y, x, x_mis, np.random.default_rng(8), True)
    assert set(np.unique(imputed)) <= {0.0, 1.0, 2.0, 3.0}
    assert np.mean(imputed[:200] == 0) > 0.9 and np.mean(imputed[200:] == 3) > 0.9


# ------------------------------------------------------------------ engine.mice with ordered factors


LEVELS = ["low", "mid", "high", "top"]  # not alphabetical: the factor's order must be kept


def ordered_frame(seed, n=300, missing=0.3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    z = rng.normal(size=n)
    y = np.digitize(1.5 * x + rng.logistic(size=n), [-1.5, 0.0, 1.5])
    frame = pd.DataFrame({"x": x, "z": z, "y": pd.Categorical.from_codes(y, categories=LEVELS, ordered=True)})
    frame.loc[rng.random(n) < missing, "y"] = np.nan
    frame.loc[rng.random(n) < 0.1, "z"] = np.nan
    return frame


def test_mice_uses_polr_for_ordered_factors_and_keeps_them_ordered():
    data = ordered_frame(11)
    before = data.copy()
    imp = mice(data, m=2, maxit=2, seed=1)
    assert imp.method["y"] == "polr" and imp.method["z"] == "pmm"
    assert imp.logged_events.empty
    pd.testing.assert_frame_equal(data, before)  # the user's frame is untouched
    for k in (1, 2):
        done = imp.complete(k)
        assert isinstance(done["y"].dtype, pd.CategoricalDtype) and done["y"].cat.ordered
        assert list(done["y"].cat.categories) == LEVELS
        assert not done["y"].isna().any()
        observed = before["y"].notna()
        pd.testing.assert_series_equal(done["y"][observed], before["y"][observed])
    assert set(np.unique(imp.imp["y"].to_numpy())) <= set(LEVELS)
    assert imp.complete("long")["y"].cat.ordered
    # the same seed gives the same imputations
    again = mice(data, m=2, maxit=2, seed=1)
    pd.testing.assert_frame_equal(again.imp["y"], imp.imp["y"])
    # default_method's 4th entry chooses the ordered-factor method
    assert mice(data, m=1, maxit=1, seed=2, default_method=("pmm", "logreg", "polyreg", "lda")).method["y"] == "lda"


def test_polr_falls_back_to_polyreg_when_it_cannot_fit():
    """As mice: MASS::polr needs 3 observed classes, so two observed classes go to multinom
    (logged); one observed class imputes that class."""
    data = ordered_frame(12)
    two = data.assign(y=data["y"].where(data["y"].isin(["low", "top"]) | data["y"].isna()))
    imp = mice(two, m=2, maxit=2, seed=3)
    assert imp.method["y"] == "polr"
    events = imp.logged_events.query("meth == 'polr'")
    assert len(events) == 4 and set(events["out"]) == {"polr falls back to multinom"}
    assert set(np.unique(imp.imp["y"].to_numpy())) == {"low", "top"}
    assert imp.complete(1)["y"].cat.ordered
    # one observed class: mice's setup drops the column as constant; the method itself imputes it
    single = mice_module._impute_polr(np.full(20, 2.0), np.random.default_rng(1).normal(size=(20, 2)),
                                      np.zeros((5, 2)), np.random.default_rng(2), True)
    np.testing.assert_array_equal(single, np.full(5, 2.0))
    # an explicit polr on a two-level factor works the same way (mice allows it)
    binary = data.assign(b=pd.Categorical(np.where(data["x"] > 0, "yes", "no")).astype(object))
    binary.loc[::7, "b"] = np.nan
    assert set(np.unique(mice(binary, m=1, maxit=1, seed=4, method={"b": "polr"}).imp["b"].to_numpy())) <= {"no", "yes"}


def test_polr_non_convergence_falls_back(monkeypatch):
    """A failed fit (here forced: converged=False) takes the polyreg path and is logged."""
    real = polr.fit_polr

    def failing(*args, **kwargs):
        return real(*args, **kwargs)._replace(converged=False)

    monkeypatch.setattr(polr, "fit_polr", failing)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(200, 2))
    y = rng.integers(0, 4, size=200).astype(float)
    step = mice_module._StepState()
    imputed = mice_module._impute_polr(y, x, rng.normal(size=(30, 2)), np.random.default_rng(1), True, step)
    assert step.notes == ["polr falls back to multinom"]
    assert set(np.unique(imputed)) <= {0.0, 1.0, 2.0, 3.0}


def test_polr_imputation_recovers_class_proportion_under_mar():
    """MAR: the ordered outcome is missing more often for large x (which predicts high classes),
    so complete cases under-count the top class. With m = 5 polr imputations, the pooled top-class
    proportion lies within 3.5 Rubin standard errors of the truth (mean over the sample of the
    true P(top | x)), while the complete-case proportion misses it by more than 3.5 of its own SEs."""
    rng = np.random.default_rng(2024)
    n = 3000
    x = rng.normal(size=n)
    z = 0.5 * x + rng.normal(size=n)
    beta, zeta = np.array([1.2, 0.4]), np.array([-1.0, 0.3, 1.4])
    design = np.column_stack([x, z])
    y = (rng.random(n)[:, None] > stats.logistic.cdf(zeta[None, :] - (design @ beta)[:, None])).sum(axis=1)
    truth = polr.predict_probabilities(design, beta, zeta)[:, 3].mean()
    frame = pd.DataFrame({"x": x, "z": z, "y": pd.Categorical.from_codes(y, categories=LEVELS, ordered=True)})
    missing = rng.random(n) < stats.logistic.cdf(-0.5 + 1.5 * x)
    frame.loc[missing, "y"] = np.nan
    m = 5
    imp = mice(frame, m=m, maxit=1, seed=5)
    assert imp.method["y"] == "polr"
    estimates = np.array([(imp.complete(k)["y"] == "top").mean() for k in range(1, m + 1)])
    within = np.mean(estimates * (1 - estimates) / n)
    total = within + (1 + 1 / m) * estimates.var(ddof=1)
    assert abs(estimates.mean() - truth) < 3.5 * np.sqrt(total)
    observed = frame["y"].dropna()
    cc = (observed == "top").mean()
    assert abs(cc - truth) > 3.5 * np.sqrt(cc * (1 - cc) / observed.size)


def test_engine_top_level_mice_accepts_method_polr():
    data = ordered_frame(13).assign(y=lambda d: d["y"].cat.as_unordered())
    imp = engine.mice(data, m=1, maxit=1, seed=1, method={"y": "polr"})
    assert imp.method["y"] == "polr" and set(np.unique(imp.imp["y"].to_numpy())) <= set(LEVELS)
